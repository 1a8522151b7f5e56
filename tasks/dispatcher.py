"""The dispatcher: QUEUED runs -> SCHEDULED + a `run_experiment` message on the run's queue.

Each run is moved by a status-guarded update that also names the attempt it saw, so on MongoDB
two dispatchers never send one run twice; on a server whose updates are not atomic (FerretDB)
they might, and the worker's unique claim on "{run_id}:{attempt}" makes the second a no-op.
A send that fails puts the run back to QUEUED.

Wake-ups: a change stream on `runs` where the server has one (replica set), resumed from a
stored token after a restart; otherwise a sweep every `DISPATCH_INTERVAL` seconds.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import uuid
from typing import Any, Callable, Protocol

from prometheus_client import Counter, start_http_server
from pymongo import ASCENDING, DESCENDING
from pymongo.database import Database
from pymongo.errors import PyMongoError

from orchestrator.db import ensure_indexes, get_db, probe_features, utcnow
from orchestrator.runs import DEFAULT_QUEUE, record_decision, transition
from orchestrator.settings import Settings
from orchestrator.statuses import RunStatus

log = logging.getLogger(__name__)

DISPATCHED = Counter("orchestrator_dispatched_total", "Runs sent to a queue by the dispatcher.")
DISPATCH_FAILED = Counter("orchestrator_dispatch_send_failed_total", "Sends that failed; the run went back to QUEUED.")

#: Runs examined per pass; the next pass takes the rest.
BATCH = 100


class Sender(Protocol):
    def __call__(self, run_id: str, attempt: int, *, queue: str, priority: int, task_id: str) -> None: ...


def celery_sender(run_id: str, attempt: int, *, queue: str, priority: int, task_id: str) -> None:
    """Send the task through Celery (imported here so the rules above stay testable without it)."""
    from tasks.experiment import run_experiment

    run_experiment.apply_async(args=(run_id, attempt), queue=queue, priority=priority, task_id=task_id)


def due_runs(db: Database, now: Any, limit: int = BATCH) -> list[dict[str, Any]]:
    """QUEUED runs whose `notBefore` has passed, highest priority first, then oldest."""
    query = {"status": RunStatus.QUEUED.value, "$or": [{"notBefore": None}, {"notBefore": {"$lte": now}}]}
    cursor = db.runs.find(query, {"attempt": 1, "priority": 1, "queue": 1, "createdAt": 1})
    return list(cursor.sort([("priority", DESCENDING), ("createdAt", ASCENDING), ("_id", ASCENDING)]).limit(limit))


def dispatch_run(db: Database, run: dict[str, Any], send: Sender) -> bool:
    """Schedule one run and send its task; False if another dispatcher took it first."""
    attempt = int(run.get("attempt") or 0) + 1
    task_id = str(uuid.uuid4())
    scheduled = transition(
        db, run["_id"], RunStatus.SCHEDULED, only_from={RunStatus.QUEUED},
        extra_filter={"attempt": run.get("attempt", 0)},
        set_fields={"attempt": attempt, "taskId": task_id, "scheduledAt": utcnow(), "cancelRequested": False},
    )
    if scheduled is None:
        return False
    queue = scheduled.get("queue") or DEFAULT_QUEUE
    try:
        send(run["_id"], attempt, queue=queue, priority=int(scheduled.get("priority", 5)), task_id=task_id)
    except Exception as exc:  # noqa: BLE001 - any send failure must put the run back
        DISPATCH_FAILED.inc()
        log.error("sending run %s attempt %s to %s failed (%s); putting it back", run["_id"], attempt, queue, exc)
        transition(
            db, run["_id"], RunStatus.QUEUED, only_from={RunStatus.SCHEDULED},
            extra_filter={"taskId": task_id}, set_fields={"attempt": attempt - 1, "taskId": None},
        )
        return False
    DISPATCHED.inc()
    log.info("dispatched run %s attempt %s to queue %s (task %s)", run["_id"], attempt, queue, task_id)
    record_decision(db, scheduled, "dispatcher", f"dispatched attempt {attempt} to queue {queue}", taskId=task_id)
    return True


def dispatch_once(db: Database, send: Sender) -> int:
    """One pass over due runs; returns how many were sent."""
    sent = 0
    for run in due_runs(db, utcnow()):
        if dispatch_run(db, run, send):
            sent += 1
    return sent


class Dispatcher:
    """The long-running process: wait for a wake-up, dispatch, repeat until stopped."""

    def __init__(self, db: Database, send: Sender, *, interval_s: float, use_change_stream: bool,
                 sweep: Callable[[], object] | None = None, sweep_every_s: float = 5.0):
        self.db = db
        self.send = send
        self.interval_s = interval_s
        self.use_change_stream = use_change_stream
        self.sweep = sweep
        self.sweep_every_s = sweep_every_s
        self._last_sweep = 0.0
        self.stopping = threading.Event()

    def _maybe_sweep(self) -> None:
        """Run the sweeper on its own timer inside this process, so one Procfile line covers both."""
        if self.sweep is None or time.monotonic() - self._last_sweep < self.sweep_every_s:
            return
        self._last_sweep = time.monotonic()
        self.sweep()

    def run_forever(self) -> None:
        mode = "change stream" if self.use_change_stream else f"sweep every {self.interval_s}s"
        log.info("dispatcher started (%s)", mode)
        while not self.stopping.is_set():
            try:
                if self.use_change_stream:
                    self._follow_changes()
                else:
                    dispatch_once(self.db, self.send)
                    self._maybe_sweep()
                    self.stopping.wait(self.interval_s)
            except PyMongoError as exc:
                log.warning("dispatcher cannot reach MongoDB (%s); retrying in %.1fs", exc, self.interval_s)
                self.stopping.wait(self.interval_s)

    def _follow_changes(self) -> None:
        """Dispatch on every insert/update of a run, and at least every interval (for notBefore)."""
        state = self.db.dispatcher_state.find_one({"_id": "runs"}) or {}
        pipeline = [{"$match": {"operationType": {"$in": ["insert", "update", "replace"]}}}]
        with self.db.runs.watch(pipeline, resume_after=state.get("token"), max_await_time_ms=int(self.interval_s * 1000)) as stream:
            dispatch_once(self.db, self.send)
            while not self.stopping.is_set():
                change = stream.try_next()
                dispatch_once(self.db, self.send)
                self._maybe_sweep()
                token = stream.resume_token
                if change is not None and token is not None:
                    self.db.dispatcher_state.update_one({"_id": "runs"}, {"$set": {"token": token}}, upsert=True)

    def stop(self, *_: Any) -> None:
        self.stopping.set()


def main(argv: list[str] | None = None) -> None:
    """Procfile `dispatcher`: run until SIGTERM/SIGINT."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings.from_env()
    db = get_db(settings)
    ensure_indexes(db)
    features = probe_features(db)
    if settings.metrics_port:
        start_http_server(settings.metrics_port)
        log.info("Prometheus metrics on :%d/metrics", settings.metrics_port)
    from tasks.sweeper import sweep_once

    dispatcher = Dispatcher(db, celery_sender, interval_s=settings.dispatch_interval_s,
                            use_change_stream=features.change_streams,
                            sweep=lambda: sweep_once(db, settings, celery_sender),
                            sweep_every_s=settings.sweep_interval_s)
    signal.signal(signal.SIGTERM, dispatcher.stop)
    signal.signal(signal.SIGINT, dispatcher.stop)
    dispatcher.run_forever()

