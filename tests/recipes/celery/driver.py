"""Sends the test's tasks and revocations to the worker of tests/recipes/celery.rs, the way an
application does: `send TASK NAME TASK_ID` queues recipe_app.TASK(NAME) under TASK_ID, and
`revoke TASK_ID [terminate]` broadcasts a revocation (terminate: the worker kills the process
running the task)."""

import sys

from recipe_app import app


def main(argv):
    if argv[0] == "send" and len(argv) == 4:
        app.send_task(f"recipe_app.{argv[1]}", args=[argv[2]], task_id=argv[3])
    elif argv[0] == "revoke" and len(argv) in (2, 3):
        app.control.revoke(argv[1], terminate=argv[2:] == ["terminate"], signal="SIGTERM")
    else:
        sys.exit(f"usage: {sys.argv[0]} send TASK NAME TASK_ID | revoke TASK_ID [terminate]")


if __name__ == "__main__":
    main(sys.argv[1:])
