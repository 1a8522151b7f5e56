"""The dispatcher: QUEUED runs -> SCHEDULED + a `run_experiment` message on the run's queue.

Sending attempt n is decided by a unique insert (`orchestrator.dispatches`, "{run_id}:{n}")
before the run is scheduled, so two dispatchers never send one attempt, on any server (a
status-guarded update alone is not atomic on FerretDB v1). A send that fails leaves the run
SCHEDULED with `sendFailedAt` set, and the sweeper sends it again on its next pass: the decision
stands, only its delivery is retried.

Wake-ups: a change stream on `runs` where the server has one (replica set), resumed from a
stored token after a restart; otherwise a sweep every `DISPATCH_INTERVAL` seconds.

The loop knows no broker: it is given a `Sender` (the process entry point `ops.dispatcher` passes
the Celery one), so its rules are tested with a list for a broker.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from prometheus_client import Counter
from pymongo import ASCENDING, DESCENDING
from pymongo.database import Database
from pymongo.errors import PyMongoError

from orchestrator import dispatches, run_days, runs, tracing
from orchestrator.settings import DEFAULT_PRIORITY, DEFAULT_QUEUE
from orchestrator.statuses import RunStatus
from orchestrator.utc import utcnow

log = logging.getLogger(__name__)

DISPATCHED = Counter("orchestrator_dispatched_total", "Runs sent to a queue by the dispatcher.")
DISPATCH_FAILED = Counter("orchestrator_dispatch_send_failed_total", "Sends that failed; the sweeper sends the run again.")

#: Runs examined per pass; the next pass takes the rest.
BATCH = 100


class Sender(Protocol):
    """Puts one attempt of a run on a queue (a Celery message in production)."""

    def __call__(self, run_id: str, attempt: int, *, queue: str, priority: int, task_id: str) -> None: ...


def due_runs(db: Database, now: Any, limit: int = BATCH, queue: str | None = None) -> list[dict[str, Any]]:
    """QUEUED runs whose `notBefore` has passed, highest priority first, then oldest; only those
    bound for `queue` when it is given (a dispatcher that serves one queue, as the demo's does
    on a shared database, must not schedule anyone else's runs)."""
    query: dict[str, Any] = {"status": RunStatus.QUEUED.value, "$or": [{"notBefore": None}, {"notBefore": {"$lte": now}}]}
    if queue is not None:
        query["queue"] = queue
    cursor = db.runs.find(query, {"attempt": 1, "priority": 1, "queue": 1, "createdAt": 1, run_days.FIELD: 1,
                                  tracing.FIELD: 1})
    return list(cursor.sort([("priority", DESCENDING), ("createdAt", ASCENDING), ("_id", ASCENDING)]).limit(limit))


def dispatch_run(db: Database, run: dict[str, Any], send: Sender, connected_for_s: float = 0.0) -> bool:
    """Schedule one run and send its task; False if another dispatcher (or a late outcome of
    the run's last attempt) took the decision first. `connected_for_s`: how long this
    dispatcher has seen the database answer (see `dispatches.stale`). A span of the run's trace,
    which a run inserted without one starts here."""
    with tracing.run_span("dispatch", run["_id"], run.get(tracing.FIELD), attempt=int(run.get("attempt") or 0) + 1):
        return _dispatch_run(db, run, send, connected_for_s)


def _dispatch_run(db: Database, run: dict[str, Any], send: Sender, connected_for_s: float) -> bool:
    if not run.get(run_days.FIELD):
        run_days.stamp(db, run)  # a frontend's insert, if no reader has stamped it yet
    decision = _decide(db, run, connected_for_s)
    if decision is None:
        return False
    task_id = decision["taskId"]
    scheduled = runs.schedule(db, run, task_id, tracing.current_traceparent())
    if scheduled is None:
        dispatches.withdraw(db, decision)  # the run moved meanwhile (canceled): nothing was decided
        return False
    attempt = int(scheduled["attempt"])
    queue = scheduled.get("queue") or DEFAULT_QUEUE
    try:
        send(run["_id"], attempt, queue=queue, priority=int(scheduled.get("priority", DEFAULT_PRIORITY)), task_id=task_id)
    except Exception as exc:  # noqa: BLE001 - any send failure is retried by the sweeper
        DISPATCH_FAILED.inc()
        log.error("sending run %s attempt %s to %s failed (%s); the sweeper sends it again", run["_id"], attempt, queue, exc)
        runs.note_send_failed(db, run["_id"], attempt, task_id, f"{type(exc).__name__}: {exc}")
        return False
    DISPATCHED.inc()
    log.info("dispatched run %s attempt %s to queue %s (task %s)", run["_id"], attempt, queue, task_id)
    runs.record_decision(db, scheduled, "dispatcher", f"dispatched attempt {attempt} to queue {queue}", taskId=task_id)
    return True


def _decide(db: Database, run: dict[str, Any], connected_for_s: float) -> dict[str, Any] | None:
    """Take the decision to send the run's next attempt: ours, or None when it is not ours to
    take. A decision this thread took before an error stopped it is carried out now; a stale
    one (`dispatches.stale`) is withdrawn and taken afresh."""
    attempt = int(run.get("attempt") or 0) + 1
    decision = _take(db, run["_id"], attempt)
    if decision is not None:
        return decision
    held = dispatches.get(db, run["_id"], attempt)
    if held is None:
        return None
    if held["kind"] == dispatches.DISPATCH and held["writer"] == dispatches.writer_id():
        return held
    current = db.runs.find_one({"_id": run["_id"]}, {"status": 1, "attempt": 1})
    if current is None or not dispatches.stale(held, current, utcnow(), connected_for_s) or not dispatches.withdraw(db, held):
        return None
    log.warning("run %s: withdrew the %s decision for attempt %s written by %s at %s (never carried out, or the run "
                "was retried since)", run["_id"], held["kind"], attempt, held["writer"], held["at"])
    return _take(db, run["_id"], attempt)


def _take(db: Database, run_id: str, attempt: int) -> dict[str, Any] | None:
    """A fresh dispatch decision, with the Celery task id its message will carry."""
    return dispatches.decide(db, run_id, attempt, dispatches.DISPATCH, taskId=str(uuid.uuid4()))


def dispatch_once(db: Database, send: Sender, connected_for_s: float = 0.0, queue: str | None = None) -> int:
    """One pass over due runs (of `queue` only, when given); returns how many were sent."""
    sent = 0
    for run in due_runs(db, utcnow(), queue=queue):
        if dispatch_run(db, run, send, connected_for_s):
            sent += 1
    return sent


class Dispatcher:
    """The long-running process: wait for a wake-up, dispatch, repeat until stopped."""

    def __init__(self, db: Database, send: Sender, *, interval_s: float, use_change_stream: bool,
                 sweep: Callable[[], object] | None = None, sweep_every_s: float = 5.0,
                 on_database_error: Callable[[], None] | None = None,
                 connected_for: Callable[[], float] = lambda: 0.0, queue: str | None = None):
        self.db = db
        self.send = send
        self.interval_s = interval_s
        self.use_change_stream = use_change_stream
        self.sweep = sweep
        self.sweep_every_s = sweep_every_s
        #: Told of every database error (the sweeper restarts its count of connected time).
        self.on_database_error = on_database_error
        #: How long the database has answered without a break (the sweeper keeps that time).
        self.connected_for = connected_for
        #: Serve this queue's runs only (None: every queue).
        self.queue = queue
        self.stopping = threading.Event()

    def _dispatch(self) -> None:
        dispatch_once(self.db, self.send, self.connected_for(), self.queue)

    def _sweep_forever(self, sweep: Callable[[], object]) -> None:
        """The sweeper on its own timer in its own thread, so one Procfile line covers both and a
        long pass (the first count of a year of runs after an upgrade: seconds) never holds up
        dispatching. An error is logged and the next pass tries again."""
        while not self.stopping.is_set():
            try:
                sweep()
            except PyMongoError as exc:
                log.warning("sweeper cannot reach MongoDB (%s); next pass in %.1fs", exc, self.sweep_every_s)
            except Exception:
                log.exception("sweeper pass failed; next pass in %.1fs", self.sweep_every_s)
            self.stopping.wait(self.sweep_every_s)

    def run_forever(self) -> None:
        mode = "change stream" if self.use_change_stream else f"sweep every {self.interval_s}s"
        log.info("dispatcher started (%s)", mode)
        sweeper = None
        if self.sweep is not None:
            sweeper = threading.Thread(target=self._sweep_forever, args=(self.sweep,), name="sweeper", daemon=True)
            sweeper.start()
        try:
            self._loop()
        finally:
            self.stopping.set()
            if sweeper is not None:
                sweeper.join(timeout=30)  # at most the pass under way

    def _loop(self) -> None:
        while not self.stopping.is_set():
            try:
                if self.use_change_stream:
                    self._follow_changes()
                else:
                    self._dispatch()
                    self.stopping.wait(self.interval_s)
            except PyMongoError as exc:
                if self.on_database_error is not None:
                    self.on_database_error()
                log.warning("dispatcher cannot reach MongoDB (%s); retrying in %.1fs", exc, self.interval_s)
                self.stopping.wait(self.interval_s)

    def _follow_changes(self) -> None:
        """Dispatch on every insert/update of a run, and at least every interval (for notBefore)."""
        state = self.db.dispatcher_state.find_one({"_id": "runs"}) or {}
        changes = [{"$match": {"operationType": {"$in": ["insert", "update", "replace"]}}}]
        wait_ms = int(self.interval_s * 1000)
        with self.db.runs.watch(changes, resume_after=state.get("token"), max_await_time_ms=wait_ms) as stream:
            self._dispatch()
            while not self.stopping.is_set():
                change = stream.try_next()
                self._dispatch()
                token = stream.resume_token
                if change is not None and token is not None:
                    self.db.dispatcher_state.update_one({"_id": "runs"}, {"$set": {"token": token}}, upsert=True)

    def stop(self, *_: Any) -> None:
        self.stopping.set()
