#!/bin/sh
# job.sh - count a job in its pod's `active-jobs` label for as long as it runs.
#
# Usage: job.sh COMMAND [ARG...]
#
#   job.sh ffmpeg -i in.mkv out.mp4
#   TRACKER_URL=http://127.0.0.1:8080 job.sh /app/run-batch --all
#
# For pods with pod-webhook-tracker as a (native) sidecar, which counts its own pod on
# 127.0.0.1:8080 (see manifests/sidecar). While COMMAND runs, the pod carries the label and
# the PodDisruptionBudget makes the eviction API refuse to evict it.
#
#   1. POST /increment?job=ID. Retried while the tracker is not listening yet (it may still
#      be starting). If the job cannot be counted, COMMAND is NOT run: job.sh exits 75. The
#      key makes the call idempotent: a start the tracker has seen already counts once.
#      With TRACKER_TTL, the job is released if nobody renews or ends it within that time
#      (a crash of the whole container), and job.sh renews it every TRACKER_TTL/3 meanwhile.
#   2. Run COMMAND. SIGTERM, SIGINT and SIGHUP sent to job.sh are passed on to COMMAND as
#      SIGTERM (a shell starts background commands with SIGINT ignored).
#   3. POST /decrement?job=ID on every way out once the increment was made: success,
#      failure, signals. A failed decrement is reported but does not change the exit status.
#   4. Exit with COMMAND's exit status (128+N if a signal N ended it).
#
# Environment:
#   TRACKER_URL       the tracker's base URL (default http://127.0.0.1:8080)
#   TRACKER_ATTEMPTS  connection attempts per call, one second apart (default 30)
#   TRACKER_TIMEOUT   seconds one call may take in all (default 60)
#   JOB_ID            the job's key (default: $POD_NAME or the host name, the shell's PID and
#                     a random suffix); letters, digits, '.', '_', ':' and '-', at most 64
#   TRACKER_TTL       the job's lifetime in seconds, renewed while it runs (default: none;
#                     the tracker's --max-job-duration still applies)
#   TRACKER_TOKEN_FILE  a service-account token sent as "Authorization: Bearer", read again
#                     for every call (the kubelet rotates it), for a standalone tracker with
#                     --authenticate=serviceaccount (default
#                     /var/run/secrets/pod-webhook-tracker/token, sent only if it exists)
#   TRACKER_CA_FILE   for an https:// TRACKER_URL: the CA that signs the tracker's certificate
#                     (default /var/run/secrets/pod-webhook-tracker/ca.crt, if it exists)
#
# Needs a POSIX sh and curl.

set -u

TRACKER_URL=${TRACKER_URL:-http://127.0.0.1:8080}
TRACKER_ATTEMPTS=${TRACKER_ATTEMPTS:-30}
TRACKER_TIMEOUT=${TRACKER_TIMEOUT:-60}
TRACKER_TTL=${TRACKER_TTL:-}
TRACKER_TOKEN_FILE=${TRACKER_TOKEN_FILE:-/var/run/secrets/pod-webhook-tracker/token}
TRACKER_CA_FILE=${TRACKER_CA_FILE:-/var/run/secrets/pod-webhook-tracker/ca.crt}

# A key unique to this run: the pod, this shell and 8 random hex digits.
random_suffix() {
    od -An -N4 -tx1 /dev/urandom 2>/dev/null | tr -d ' \n' || printf '%s' "$$"
}
JOB_ID=${JOB_ID:-$(printf '%s-%s-%s' "${POD_NAME:-$(hostname)}" "$$" "$(random_suffix)" |
    tr -c 'A-Za-z0-9._:-' '-' | cut -c1-64)}

EX_USAGE=64
EX_TEMPFAIL=75

log() {
    printf 'job.sh: %s\n' "$*" >&2
}

if [ "$#" -eq 0 ]; then
    log "usage: job.sh COMMAND [ARG...]"
    exit "$EX_USAGE"
fi
case $TRACKER_TTL in
'' | *[!0-9]* | 0)
    if [ -n "$TRACKER_TTL" ]; then
        log "TRACKER_TTL must be a number of seconds above 0, not $TRACKER_TTL"
        exit "$EX_USAGE"
    fi
    ;;
esac
query="job=$JOB_ID"
if [ -n "$TRACKER_TTL" ]; then
    query="$query&ttl=${TRACKER_TTL}s"
fi
if ! command -v curl >/dev/null 2>&1; then
    log "curl is not installed; cannot reach the tracker at $TRACKER_URL"
    exit "$EX_TEMPFAIL"
fi

# call increment|decrement|renew: POST to the tracker for this job; 0 when it answered 2xx.
#
# Retries happen ONLY when curl never reached the tracker: exit 7 (could not connect) or 6
# (could not resolve the host). Then the request was never sent, and sending it again cannot
# count twice. Every other outcome is final: an HTTP answer of any status, and also a timeout
# or a connection dropped after the request went out, since the tracker may have received the
# call. A call the tracker has received is applied exactly once: the tracker itself retries
# its write to the Kubernetes API (on conflicts, and after a lost answer it checks the write
# ids it records in the `active-jobs-writes` annotation before writing again), and if it still
# cannot tell whether the write landed it says so (504) instead of guessing. Repeating the call
# here would undo that guarantee.
call() {
    attempt=1
    target="$TRACKER_URL/$1?$query"
    [ "$1" = decrement ] && target="$TRACKER_URL/$1?job=$JOB_ID"
    while :; do
        # The token goes in a header read from a file: it never shows in `ps`.
        auth=/dev/null
        if [ -r "$TRACKER_TOKEN_FILE" ]; then
            auth=$(mktemp) && printf 'Authorization: Bearer %s\n' "$(cat "$TRACKER_TOKEN_FILE")" >"$auth"
        fi
        # The CA for https:// (curl's own default store otherwise); /dev/null is no header.
        ca=$TRACKER_CA_FILE
        [ -r "$ca" ] || ca=
        out=$(curl --silent --show-error --request POST --max-time "$TRACKER_TIMEOUT" \
            --header "@$auth" ${ca:+--cacert "$ca"} --write-out '\n%{http_code}' "$target" 2>&1)
        rc=$?
        [ "$auth" != /dev/null ] && rm -f "$auth"
        code=$(printf '%s\n' "$out" | tail -n 1)
        body=$(printf '%s\n' "$out" | sed '$d' | tr -s '\n' ' ' | sed 's/ *$//')
        if [ "$rc" -eq 0 ]; then
            case $code in
            2??)
                log "$1: ok (active jobs in this pod: $body)"
                return 0
                ;;
            *)
                log "$1: the tracker refused (HTTP $code): $body"
                return 1
                ;;
            esac
        fi
        if [ "$rc" -ne 6 ] && [ "$rc" -ne 7 ]; then
            # The request may have arrived: never repeat it.
            log "$1: failed after the request was sent (curl exit $rc): $body"
            log "$1: not retried, the tracker may have applied it; check the pod's label"
            return 1
        fi
        if [ "$attempt" -ge "$TRACKER_ATTEMPTS" ]; then
            log "$1: cannot connect to the tracker at $TRACKER_URL after $attempt attempts: $body"
            return 1
        fi
        if [ -n "$signal_status" ] && [ "$1" = increment ]; then
            log "$1: stopped by a signal before the tracker could be reached"
            return 1
        fi
        attempt=$((attempt + 1))
        sleep 1
    done
}

child=""
counted=0
signal_status=""
renewer=""

# Every exit after a successful increment decrements exactly once.
on_exit() {
    status=$?
    if [ -n "$renewer" ]; then
        kill "$renewer" 2>/dev/null || true
        renewer=""
    fi
    if [ "$counted" -eq 1 ]; then
        counted=0
        call decrement || log "the label may now count one job too many"
    fi
    exit "$status"
}

# Remember the signal; pass it on to the running command. Before the command runs, the
# signal is acted on once the increment call has finished, so that no count is left behind.
on_signal() {
    signal_status=$1
    if [ -n "$child" ]; then
        kill -TERM "$child" 2>/dev/null || true
    fi
}

trap on_exit EXIT
trap 'on_signal 129' HUP
trap 'on_signal 130' INT
trap 'on_signal 143' TERM

if ! call increment; then
    if [ -n "$signal_status" ]; then
        log "stopped by a signal before the job started"
        exit "$signal_status"
    fi
    log "could not count this job in the pod's active-jobs label, so it is not started" \
        "(the pod would not be protected from eviction while it runs)"
    exit "$EX_TEMPFAIL"
fi
counted=1
if [ -n "$signal_status" ]; then
    log "stopped by a signal before the job started"
    exit "$signal_status"
fi

# The heartbeat: renew the job's deadline three times per lifetime while it runs. A renewal
# repeated by mistake only sets the same deadline again, so it is safe to call on a timer.
if [ -n "$TRACKER_TTL" ]; then
    interval=$((TRACKER_TTL / 3))
    [ "$interval" -ge 1 ] || interval=1
    (
        trap - EXIT HUP INT TERM
        while sleep "$interval"; do
            call renew >/dev/null 2>&1 || log "renew failed; the job may be released at its deadline"
        done
    ) </dev/null &
    renewer=$!
fi

# In the background so that signals reach job.sh at once (the shell runs traps only between
# commands). A background command's standard input would be /dev/null: hand it job.sh's own
# through fd 3.
exec 3<&0
"$@" <&3 3<&- &
exec 3<&-
child=$!
wait "$child"
status=$?
# A signal interrupts `wait` (status > 128) while the command may still be running: wait for
# its own exit status.
while kill -0 "$child" 2>/dev/null; do
    wait "$child"
    status=$?
done
child=""
exit "$status"
