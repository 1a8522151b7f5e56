"""`tasks.ping`: proves a worker consumes its queue, by writing where anyone can read it.

`celery inspect ping` rides the fanout exchange (a tailable cursor on a capped collection),
which goes silent while every pool slot is busy; this task rides the same path as real work
and leaves a document in `worker_pings`, so `manage-runs` and the tests can check a queue.
"""

from __future__ import annotations

import os
import socket

from orchestrator.db import get_db
from orchestrator.settings import Settings
from orchestrator.utc import utcnow
from tasks.celery import app


@app.task(name="tasks.ping", ignore_result=True)
def ping(token: str) -> str:
    settings = Settings.from_env()
    get_db(settings).worker_pings.update_one(
        {"_id": token},
        {"$set": {"podId": settings.pod_id, "host": socket.gethostname(), "pid": os.getpid(), "at": utcnow()}},
        upsert=True,
    )
    return token
