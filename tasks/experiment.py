"""`run_experiment(run_id, attempt)`: the Celery task a GPU pod runs; `tasks.pod.attempt` does the work."""

from __future__ import annotations

from tasks.celery import app
from tasks.pod.attempt import Attempt
from tasks.pod.runtime import runtime
from tasks.sender import RUN_EXPERIMENT


@app.task(name=RUN_EXPERIMENT, acks_late=True, ignore_result=True)
def run_experiment(run_id: str, attempt: int) -> str:
    """Celery entry point. Returns a one-word outcome for Flower's task view."""
    return Attempt(runtime(), run_id, int(attempt)).execute()
