"""The Celery application. Configuration lives in `celeryconfig.py`, as Celery expects."""

from celery import Celery

app = Celery("tasks")
app.config_from_object("celeryconfig")
