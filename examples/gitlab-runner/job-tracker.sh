# job-tracker.sh - counts a GitLab CI job in its build pod's `active-jobs` label while the job's
# script runs, through the pod's injected tracker. Sourced by the runner's pre_build_script
# (config.toml), in the build container:
#
#   pre_build_script:  . /etc/pod-webhook-tracker/gitlab/job-tracker.sh; pod_webhook_tracker_start
#   post_build_script: pod_webhook_tracker_end
#
# The runner runs pre_build_script, the job's before_script and script, and post_build_script
# in one shell, with errexit. pod_webhook_tracker_start counts the job and sets an EXIT trap in
# that shell, so the job is ended however the script ends: it succeeds (post_build_script
# ends it, and the trap finds nothing left to do), a command fails (errexit: post_build_script
# is skipped, the trap ends it), or the job is cancelled or times out (the runner sends the
# shell SIGTERM, which it answers with `exit 1` once the running command returns: the trap
# ends it). A job whose script sets its own EXIT trap replaces this one; post_build_script
# still ends it when the script succeeds.
#
# This file is sourced into the job's own shell, so it changes no shell option (a `set -u`
# here would apply to the job's script too) and names everything pod_webhook_tracker_*.
#
# Environment:
#   CI_JOB_ID              set by GitLab; the job's key is gitlab-CI_JOB_ID (a retried job
#                          is a new job with a new id)
#   TRACKER_URL            the tracker's base URL; the injector sets it in every container
#                          (default http://127.0.0.1:8080)
#   TRACKER_RETRY_TIMEOUT  seconds a call may be retried in all (default 30)
#   TRACKER_TIMEOUT        seconds one attempt may take (default 10)
#
# Needs a POSIX sh and curl in the job's image.

# pod_webhook_tracker_call increment|decrement: POST $TRACKER_URL/OP?job=KEY until the tracker
# gives a final answer; 0 when it answered 2xx. Repeats are harmless thanks to the key (the
# tracker starts a running job once and ends an ended job never), so a call is sent again on
# no connection, a timeout, a dropped connection, 500, 503 and 504, until
# TRACKER_RETRY_TIMEOUT; 2xx, 4xx and 502 are final. Sets pod_webhook_tracker_sent=1 once a
# request may have reached the tracker.
pod_webhook_tracker_call() {
    pod_webhook_tracker_url=${TRACKER_URL:-http://127.0.0.1:8080}
    pod_webhook_tracker_deadline=$(($(date +%s) + ${TRACKER_RETRY_TIMEOUT:-30}))
    pod_webhook_tracker_attempt=0
    if ! command -v curl >/dev/null 2>&1; then
        echo "pod-webhook-tracker: $1 $pod_webhook_tracker_key: curl is not installed in the job's image; cannot reach the tracker at $pod_webhook_tracker_url" >&2
        return 1
    fi
    while :; do
        pod_webhook_tracker_attempt=$((pod_webhook_tracker_attempt + 1))
        pod_webhook_tracker_rc=0
        pod_webhook_tracker_out=$(curl --silent --show-error --request POST --noproxy 127.0.0.1,localhost \
            --connect-timeout 3 --max-time "${TRACKER_TIMEOUT:-10}" \
            --write-out '\n%{http_code}' \
            "$pod_webhook_tracker_url/$1?job=$pod_webhook_tracker_key" 2>&1) ||
            pod_webhook_tracker_rc=$?
        pod_webhook_tracker_code=$(printf '%s\n' "$pod_webhook_tracker_out" | tail -n 1)
        pod_webhook_tracker_body=$(printf '%s\n' "$pod_webhook_tracker_out" | sed '$d' | tr -s '\n' ' ' | sed 's/ *$//')
        # curl 6 (host not resolved) and 7 (not connected) mean the request was never sent.
        if [ "$pod_webhook_tracker_rc" -ne 6 ] && [ "$pod_webhook_tracker_rc" -ne 7 ]; then
            pod_webhook_tracker_sent=1
        fi
        if [ "$pod_webhook_tracker_rc" -eq 0 ]; then
            case $pod_webhook_tracker_code in
            2??)
                echo "pod-webhook-tracker: $1 $pod_webhook_tracker_key: ok (active jobs in this pod: $pod_webhook_tracker_body)" >&2
                return 0
                ;;
            500 | 503 | 504) ;;
            *)
                echo "pod-webhook-tracker: $1 $pod_webhook_tracker_key: the tracker at $pod_webhook_tracker_url refused (HTTP $pod_webhook_tracker_code): $pod_webhook_tracker_body" >&2
                return 1
                ;;
            esac
        else
            pod_webhook_tracker_code="no answer, curl exit $pod_webhook_tracker_rc"
        fi
        if [ "$(date +%s)" -ge "$pod_webhook_tracker_deadline" ]; then
            echo "pod-webhook-tracker: $1 $pod_webhook_tracker_key: no final answer from the tracker at $pod_webhook_tracker_url after $pod_webhook_tracker_attempt attempts in ${TRACKER_RETRY_TIMEOUT:-30}s (last: $pod_webhook_tracker_code: $pod_webhook_tracker_body)" >&2
            return 1
        fi
        sleep 1
    done
}

# Ends the job if it was counted, or may have been (an increment whose answer was lost, or
# that a signal interrupted); once.
pod_webhook_tracker_end() {
    if [ "${pod_webhook_tracker_counted:-0}" = 1 ] ||
        { [ "${pod_webhook_tracker_starting:-0}" = 1 ] && [ "${pod_webhook_tracker_sent:-0}" = 1 ]; }; then
        pod_webhook_tracker_counted=0
        pod_webhook_tracker_starting=0
        if ! pod_webhook_tracker_call decrement; then
            echo "pod-webhook-tracker: could not end job $pod_webhook_tracker_key; the pod stays protected until it is deleted" >&2
        fi
    fi
    return 0
}

pod_webhook_tracker_on_exit() {
    pod_webhook_tracker_status=$?
    pod_webhook_tracker_end
    exit "$pod_webhook_tracker_status"
}

# Counts the job, or ends the shell with status 75 (EX_TEMPFAIL): the job fails before its
# script instead of running unprotected.
pod_webhook_tracker_start() {
    if [ -z "${CI_JOB_ID:-}" ]; then
        echo "pod-webhook-tracker: CI_JOB_ID is not set: job-tracker.sh runs in a GitLab CI job's pre_build_script" >&2
        exit 75
    fi
    pod_webhook_tracker_key="gitlab-$CI_JOB_ID"
    pod_webhook_tracker_sent=0
    pod_webhook_tracker_counted=0
    pod_webhook_tracker_starting=1
    trap pod_webhook_tracker_on_exit EXIT
    if ! pod_webhook_tracker_call increment; then
        # A request that reached the tracker may have counted the job: the trap ends it.
        echo "pod-webhook-tracker: could not count job $pod_webhook_tracker_key in this pod's active-jobs label (tracker ${TRACKER_URL:-http://127.0.0.1:8080}), so the job does not run: the pod would not be protected from eviction while it runs" >&2
        exit 75
    fi
    pod_webhook_tracker_starting=0
    pod_webhook_tracker_counted=1
}
