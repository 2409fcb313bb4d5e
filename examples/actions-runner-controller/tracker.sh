# tracker.sh - what job-started.sh and job-completed.sh share: the job's key and one call to
# the pod's tracker. Sourced by them (POSIX sh; the runner runs the hooks with `bash -e`).
#
# Environment:
#   TRACKER_URL            the tracker's base URL; the injector sets it in every container
#                          (default http://127.0.0.1:8080)
#   TRACKER_RETRY_TIMEOUT  seconds a call may be retried in all (default 30)
#   TRACKER_TIMEOUT        seconds one attempt may take (default 10)
#   GITHUB_RUN_ID, GITHUB_RUN_ATTEMPT, GITHUB_JOB
#                          set by the runner for its hooks, as for every step

# The job's key: the same in both hooks of one job, another for every other job and for every
# re-run (the attempt). GITHUB_JOB is the job's id in the workflow (matrix legs share it, but
# each leg runs on a runner pod of its own). The tracker takes letters, digits, '.', '_', ':'
# and '-', at most 64.
tracker_job_key() {
    if [ -z "${GITHUB_RUN_ID:-}" ] || [ -z "${GITHUB_JOB:-}" ]; then
        echo "::error::pod-webhook-tracker: GITHUB_RUN_ID or GITHUB_JOB is not set: is this script run as a job hook (ACTIONS_RUNNER_HOOK_JOB_STARTED / ACTIONS_RUNNER_HOOK_JOB_COMPLETED)?" >&2
        return 1
    fi
    printf 'gha-%s-%s-%s' "$GITHUB_RUN_ID" "${GITHUB_RUN_ATTEMPT:-1}" "$GITHUB_JOB" |
        tr -c 'A-Za-z0-9._:-' '-' | cut -c1-64
}

# tracker_call increment|decrement KEY: POST $TRACKER_URL/increment?job=KEY (or decrement)
# until the tracker gives a final answer; 0 when it answered 2xx. Prints what happened on
# stderr.
#
# The key makes every repeat harmless: the tracker starts a running job only once and ends an
# ended job never, so a call whose answer was lost is simply sent again. Repeated are: no
# connection (the tracker is not listening yet, or is restarting), a timeout or a dropped
# connection, 503 (nothing written), 504 (outcome unknown) and 500; final are 2xx, the
# refusals (4xx) and 502 (the API server refused the tracker). Every attempt is bounded by
# TRACKER_TIMEOUT and all of them by TRACKER_RETRY_TIMEOUT.
tracker_call() {
    tracker_op=$1
    tracker_key=$2
    tracker_url=${TRACKER_URL:-http://127.0.0.1:8080}
    tracker_deadline=$(($(date +%s) + ${TRACKER_RETRY_TIMEOUT:-30}))
    tracker_attempt=0
    if ! command -v curl >/dev/null 2>&1; then
        echo "pod-webhook-tracker: $tracker_op $tracker_key: curl is not installed in this container; cannot reach the tracker at $tracker_url" >&2
        return 1
    fi
    while :; do
        tracker_attempt=$((tracker_attempt + 1))
        tracker_rc=0
        tracker_out=$(curl --silent --show-error --request POST --noproxy 127.0.0.1,localhost \
            --connect-timeout 3 --max-time "${TRACKER_TIMEOUT:-10}" \
            --write-out '\n%{http_code}' \
            "$tracker_url/$tracker_op?job=$tracker_key" 2>&1) || tracker_rc=$?
        tracker_code=$(printf '%s\n' "$tracker_out" | tail -n 1)
        tracker_body=$(printf '%s\n' "$tracker_out" | sed '$d' | tr -s '\n' ' ' | sed 's/ *$//')
        if [ "$tracker_rc" -eq 0 ]; then
            case $tracker_code in
            2??)
                echo "pod-webhook-tracker: $tracker_op $tracker_key: ok (active jobs in this pod: $tracker_body)" >&2
                return 0
                ;;
            500 | 503 | 504) ;;
            *)
                echo "pod-webhook-tracker: $tracker_op $tracker_key: the tracker at $tracker_url refused (HTTP $tracker_code): $tracker_body" >&2
                return 1
                ;;
            esac
        else
            # The body is then curl's own message (connection refused, timeout...).
            tracker_code="no answer, curl exit $tracker_rc"
        fi
        if [ "$(date +%s)" -ge "$tracker_deadline" ]; then
            echo "pod-webhook-tracker: $tracker_op $tracker_key: no final answer from the tracker at $tracker_url after $tracker_attempt attempts in ${TRACKER_RETRY_TIMEOUT:-30}s (last: $tracker_code: $tracker_body)" >&2
            return 1
        fi
        sleep 1
    done
}
