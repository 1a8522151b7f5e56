"""The dispatcher's `Sender` on Celery: `run_experiment(run_id, attempt)` on the run's queue.

Sent by name, so the process that sends (the dispatcher, `manage-runs sweep`) loads neither the
task's code nor the pipeline behind it.
"""

from __future__ import annotations

from tasks.celery import app

#: The name `tasks.experiment.run_experiment` is registered under.
RUN_EXPERIMENT = "tasks.run_experiment"


def celery_sender(run_id: str, attempt: int, *, queue: str, priority: int, task_id: str) -> None:
    app.send_task(RUN_EXPERIMENT, args=(run_id, attempt), queue=queue, priority=priority, task_id=task_id)
