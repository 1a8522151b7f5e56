"""`run_experiment(run_id, attempt)`: the Celery task a GPU pod runs; `tasks.pod.attempt` does the work."""

from __future__ import annotations

from celery.exceptions import Reject

from tasks.celery import app
from tasks.hooks import listen_for_stop
from tasks.pod.attempt import Attempt
from tasks.pod.runtime import runtime, stop_reason
from tasks.sender import RUN_EXPERIMENT


@app.task(name=RUN_EXPERIMENT, acks_late=True, ignore_result=True)
def run_experiment(run_id: str, attempt: int) -> str:
    """Celery entry point. Returns a one-word outcome for Flower's task view. A worker that is
    shutting down gives the message back to the queue unclaimed, for another pod."""
    listen_for_stop()
    if stop_reason() is not None:
        raise Reject(f"this worker is stopping ({stop_reason()}); run {run_id} goes to another pod", requeue=True)
    return Attempt(runtime(), run_id, int(attempt)).execute()
