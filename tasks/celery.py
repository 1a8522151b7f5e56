"""The Celery application. Configuration lives in `celeryconfig.py`, as Celery expects.

The task modules are listed in `include`, which a worker imports at start and a client (the
dispatcher, `manage-runs sweep`) never does: sending a task by name needs no task code.
"""

from celery import Celery

from tasks import embedded_broker
from tasks.flower_logs import json_logs_for_flower

#: Task modules a worker loads: the run, the probe, and the hooks that start the pod runtime.
TASK_MODULES = ["tasks.experiment", "tasks.probe", "tasks.hooks"]

embedded_broker.register()
app = Celery("tasks", include=TASK_MODULES)
app.config_from_object("celeryconfig")
json_logs_for_flower()
