"""The Celery app of tests/recipes/celery.rs: a worker that imports the recipe
(examples/celery/pod_webhook_tracker_celery.py) and tasks that succeed, fail, and wait for the
test, on Kombu's filesystem transport (no broker server; every process of the test shares the
folder RECIPE_BROKER_DIR)."""

import os
import pathlib
import time

from celery import Celery

import pod_webhook_tracker_celery  # noqa: F401  (the recipe: connects the task signals)

BROKER = pathlib.Path(os.environ["RECIPE_BROKER_DIR"])
MARKERS = pathlib.Path(os.environ["RECIPE_MARKER_DIR"])

app = Celery("recipe_app")
app.conf.update(
    broker_url="filesystem://",
    broker_transport_options={
        "data_folder_in": str(BROKER / "data"),
        "data_folder_out": str(BROKER / "data"),
        "control_folder": str(BROKER / "control"),
        # The folder is polled: every 0.1 s keeps the test quick.
        "polling_interval": 0.1,
    },
    broker_connection_retry_on_startup=True,
    # One task per process at a time: a task waits in the queue rather than behind another.
    worker_prefetch_multiplier=1,
    task_serializer="json",
    accept_content=["json"],
)


@app.task
def succeed(name):
    (MARKERS / f"{name}.started").touch()
    return name


@app.task
def fail(name):
    (MARKERS / f"{name}.started").touch()
    raise RuntimeError(f"task {name} fails, as the test asked")


@app.task
def wait(name):
    """Runs until the test creates MARKERS/NAME.go (at most 120 s)."""
    (MARKERS / f"{name}.started").touch()
    deadline = time.monotonic() + 120
    while not (MARKERS / f"{name}.go").exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name}.go never appeared")
        time.sleep(0.05)
    return name
