"""Counts the tasks a Celery worker runs in its pod's ``active-jobs`` label.

Import this module in the worker (for example from the module that creates the Celery app);
it connects to Celery's task signals. Every task is counted under its task id while it runs,
so a worker running many tasks at once stays protected from eviction while any of them runs,
and becomes evictable when the last one ends:

    task_prerun    (the process that runs the task)    POST /increment?job=celery-TASK_ID
    task_postrun   (the process that runs the task)    POST /decrement?job=celery-TASK_ID
    task_revoked   (the worker's main process)         POST /decrement?job=celery-TASK_ID
    task_failure   (either)                            POST /decrement?job=celery-TASK_ID
    task_retry     (either)                            POST /decrement?job=celery-TASK_ID

task_postrun follows every task that ran to its end: it returned, raised, or asked to be
retried. The other three cover what it does not see: a task revoked with terminate=True (the
main process kills the child running it), a child that died or hit its hard time limit (the
main process reports task_failure), and a task cancelled when the worker lost its broker
connection (task_retry). Several of them often follow one task: the job key makes every end
after the first, and every repeat of a call whose answer was lost, change nothing. A task
revoked before it started was never counted, and ending it changes nothing either.

The tracker is the pod's injected sidecar (TRACKER_URL, which the injector sets), or any
tracker that counts this pod.

Environment:
    TRACKER_URL            the tracker's base URL (default http://127.0.0.1:8080)
    TRACKER_RETRY_TIMEOUT  seconds a call may be retried in all (default 30)
    TRACKER_TIMEOUT        seconds one attempt may take (default 10)

Signal handlers cannot stop a task: if the tracker cannot be reached when a task starts, the
task runs anyway, unprotected, and this module logs an ERROR saying so (logger
``pod_webhook_tracker``).
"""

import http.client
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request

from celery import signals

logger = logging.getLogger("pod_webhook_tracker")

# Calls that are repeated: the outcome is unknown (504), nothing was written (503), or the
# tracker failed while answering (500). Every other answer is final.
_RETRIED = frozenset({500, 503, 504})


class TrackerError(Exception):
    """The tracker refused a call, or gave no final answer in time."""


def _settings():
    url = os.environ.get("TRACKER_URL", "http://127.0.0.1:8080").rstrip("/")
    retry_timeout = float(os.environ.get("TRACKER_RETRY_TIMEOUT", "30"))
    timeout = float(os.environ.get("TRACKER_TIMEOUT", "10"))
    return url, retry_timeout, timeout


def _opener(url):
    # The sidecar listens on the pod's loopback: never through a proxy of the environment.
    host = urllib.parse.urlsplit(url).hostname
    if host in ("127.0.0.1", "localhost", "::1"):
        return urllib.request.build_opener(urllib.request.ProxyHandler({}))
    return urllib.request.build_opener()


def job_key(task_id):
    """The tracker's job key for a task: at most 64 characters of [A-Za-z0-9._:-]."""
    key = "celery-" + "".join(c if c.isascii() and (c.isalnum() or c in "._:-") else "-" for c in str(task_id))
    return key[:64]


def call(operation, task_id):
    """POST /increment or /decrement for the task; returns the pod's count.

    Repeats a call without a final answer (no connection, a timeout, 500, 503, 504) every
    second until TRACKER_RETRY_TIMEOUT: the job key makes a repeat count once.
    """
    url, retry_timeout, timeout = _settings()
    key = job_key(task_id)
    target = f"{url}/{operation}?job={urllib.parse.quote(key)}"
    opener = _opener(url)
    deadline = time.monotonic() + retry_timeout
    attempt = 0
    while True:
        attempt += 1
        request = urllib.request.Request(target, data=b"", method="POST")
        try:
            with opener.open(request, timeout=timeout) as answer:
                return int(answer.read().decode().strip())
        except urllib.error.HTTPError as error:
            body = error.read().decode(errors="replace").strip()
            if error.code not in _RETRIED:
                raise TrackerError(
                    f"{operation} {key}: the tracker at {url} refused (HTTP {error.code}): {body}"
                ) from None
            last = f"HTTP {error.code}: {body}"
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as error:
            last = f"no answer: {getattr(error, 'reason', error)}"
        left = deadline - time.monotonic()
        if left <= 0:
            raise TrackerError(
                f"{operation} {key}: no final answer from the tracker at {url} after {attempt} "
                f"attempts in {retry_timeout:g}s (last: {last})"
            )
        time.sleep(min(1.0, left))


def _end(task_id, why):
    if not task_id:
        return
    try:
        count = call("decrement", task_id)
    except TrackerError as error:
        logger.warning(
            "pod-webhook-tracker: could not end task %s (%s): %s; the pod stays protected "
            "until the tracker's --max-job-duration releases it",
            task_id,
            why,
            error,
        )
        return
    logger.info("pod-webhook-tracker: task %s ended (%s): active jobs in this pod: %d", task_id, why, count)


@signals.task_prerun.connect(weak=False)
def _task_started(task_id=None, **_):
    try:
        count = call("increment", task_id)
    except TrackerError as error:
        logger.error(
            "pod-webhook-tracker: task %s runs UNPROTECTED: it could not be counted in this "
            "pod's active-jobs label, so the pod may be evicted while it runs: %s",
            task_id,
            error,
        )
        return
    logger.info("pod-webhook-tracker: task %s started: active jobs in this pod: %d", task_id, count)


@signals.task_postrun.connect(weak=False)
def _task_ended(task_id=None, state=None, **_):
    _end(task_id, state or "ended")


@signals.task_revoked.connect(weak=False)
def _task_revoked(request=None, terminated=False, **_):
    _end(getattr(request, "id", None), "revoked, terminated" if terminated else "revoked")


@signals.task_failure.connect(weak=False)
def _task_failed(task_id=None, **_):
    _end(task_id, "failed")


@signals.task_retry.connect(weak=False)
def _task_retried(request=None, **_):
    _end(getattr(request, "id", None), "retry")
