"""Celery's worker signals -> the pod runtime: prepare the database before the broker connects,
start the runtime with each process that runs tasks, flush and stop it at exit.

Listed in the app's `include`, so Celery imports it in a worker before `worker_init` fires.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import signals
from pymongo.errors import PyMongoError

from orchestrator.db import prepare_database
from orchestrator.settings import Settings
from tasks.pod.runtime import runtime, shutdown_runtime

log = logging.getLogger(__name__)


@signals.worker_init.connect
def _on_worker_init(**_: Any) -> None:
    """Indexes and kombu's broadcast collection exist before the broker connects."""
    prepare_database(Settings.from_env())


@signals.worker_process_init.connect
def _on_child_start(**_: Any) -> None:
    """Start the emitter as soon as a pool child exists, not at its first task: a backlog an
    earlier child left in the spool (ingest was down when it exited) is sent right away. With
    the database down this is left to the first task, which needs it anyway."""
    try:
        runtime()
    except PyMongoError as exc:
        log.warning("pod runtime not started with this pool child (%s); the first task starts it", exc)


@signals.worker_ready.connect
def _on_worker_ready(sender: Any = None, **_: Any) -> None:
    """The same for pools that run tasks in the main process (solo, threads); a prefork parent
    must not, since the emitter's spool lock belongs to the child that runs tasks."""
    pool = getattr(sender, "pool", None)
    if pool is not None and type(pool).__module__.rsplit(".", 1)[-1] in ("solo", "thread"):
        runtime()


@signals.worker_process_shutdown.connect
def _on_child_exit(**_: Any) -> None:
    shutdown_runtime()


@signals.worker_shutdown.connect
def _on_worker_exit(**_: Any) -> None:
    shutdown_runtime()
