#!/bin/sh
# job-completed.sh - the runner's job-completed hook (ACTIONS_RUNNER_HOOK_JOB_COMPLETED): ends
# the job that job-started.sh counted.
#
# The runner runs it with `bash -e` after the job's last step however the job ended: it
# succeeded, failed, was cancelled or timed out (the runner registers it as a post-job step
# with the condition always()). It also runs when job-started.sh failed; ending a job that was
# never counted changes nothing, and neither does ending one twice.
#
# A failed decrement is reported as a warning, and the job keeps its own result: the pod then
# stays counted until the runner pod ends (ephemeral runners run one job) or the tracker's
# --max-job-duration releases the job.
set -eu

. "$(dirname "$0")/tracker.sh"

key=$(tracker_job_key) || exit 0
if ! tracker_call decrement "$key"; then
    echo "::warning title=pod-webhook-tracker::could not end job $key in this runner pod's active-jobs label (tracker ${TRACKER_URL:-http://127.0.0.1:8080}); the pod stays protected until it ends" >&2
fi
