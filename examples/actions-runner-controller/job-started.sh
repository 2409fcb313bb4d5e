#!/bin/sh
# job-started.sh - the runner's job-started hook (ACTIONS_RUNNER_HOOK_JOB_STARTED): counts the
# job in its runner pod's `active-jobs` label before the job's first step, so that the pod is
# not evicted while the job runs.
#
# The runner runs it with `bash -e` before the job's steps. If the job cannot be counted, the
# hook fails, and with it the job (the runner runs no step after a failed job-started hook):
# the job fails at once, with the reason in its log, instead of running unprotected.
set -eu

. "$(dirname "$0")/tracker.sh"

key=$(tracker_job_key)
if ! tracker_call increment "$key"; then
    echo "::error title=pod-webhook-tracker::could not count job $key in this runner pod's active-jobs label (tracker ${TRACKER_URL:-http://127.0.0.1:8080}), so the job does not start: the pod would not be protected from eviction while it runs" >&2
    exit 1
fi
