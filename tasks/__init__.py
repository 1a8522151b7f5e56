"""Celery adapter: `celery -A tasks worker -Q gpu` finds `tasks.app`.

The task is only a wake-up: the run document is the truth, the claim makes a duplicate
delivery a no-op, and the sweeper recovers a run whose worker died.
"""

from tasks.celery_app import app
from tasks.experiment import run_experiment
from tasks.probe import ping

__all__ = ["app", "ping", "run_experiment"]
