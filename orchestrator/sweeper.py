"""The sweeper: keeps every run moving to an end whatever died.

- SCHEDULED longer than `schedule_timeout_s` with no claim: its broker message was lost with a
  dead worker or never consumed; send it again (same attempt: if the first message was only
  slow, the claim makes the second a no-op). At once when the dispatcher's send failed
  (`sendFailedAt`).
- Active (STARTING, RUNNING, AUTO_VALIDATING) whose current claim's lease expired: the pod was
  killed or lost. End the claim (the old worker, if it comes back, fails to renew and stops),
  then requeue keeping `attempt` if attempts remain, else FAILED with code WorkerLost
  (`orchestrator.runs.end_lost_attempt`, which asks the retry policy), or CANCELED when a cancel
  of the attempt was requested (the person still wants it stopped). "Expired" is
  `claims.lease_judgeable`: past the lease plus the clock-skew allowance, and a sweeper that
  has not been connected for a whole lease (`Sweeper`) waits a lease more.
- Active whose claim the worker released but whose outcome never arrived within a lease: the
  same, with code NoOutcome.
- A claim the worker gave back without an outcome (`claims.handed_back`: released as preempted,
  the pod had to stop; or as not startable): requeued at once, and the attempt does not count
  (`runs.hand_back`); CANCELED if a cancel was requested.
- SCHEDULED and claimed is a run whose worker has it but whose first events have not been
  applied yet (the worker writes no run document): judged like an active one.
- A `celeryev.*` queue whose consumer is gone is dropped (see `drop_orphaned_event_queues`).
- Presence records of pods last seen over `pods.SHOW_GONE_S` ago are deleted (`pods.prune`).
- Where the server cannot expire dedup records (FerretDB), those past the dedup window are
  deleted an hour at a time (`seen_retention.prune`).
- The terminal statuses are counted at most once a minute for the overview (`run_counts.refresh`).
Every decision about a run goes into its event history and the log. Several sweepers at once are
safe: each decision is a guarded update that only one caller can win.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from bson import ObjectId
from prometheus_client import Counter
from pymongo.database import Database
from pymongo.errors import PyMongoError

from orchestrator import claims, pods, run_counts, runs, seen_retention, tracing
from orchestrator.dispatcher import Sender
from orchestrator.errors import TransitionError
from orchestrator.settings import DEFAULT_PRIORITY, DEFAULT_QUEUE, Settings
from orchestrator.statuses import ACTIVE, RunStatus
from orchestrator.utc import as_utc, utcnow

log = logging.getLogger(__name__)

HANDED_BACK_TOTAL = Counter("orchestrator_handed_back_total", "Runs requeued because their pod had to stop.")
REDISPATCHED = Counter("orchestrator_redispatched_total", "SCHEDULED runs sent again after their message was lost.")
REQUEUED = Counter("orchestrator_requeued_total", "Runs requeued after their worker's lease expired.")
FAILED_LOST = Counter("orchestrator_failed_lost_total", "Runs failed as WorkerLost with no attempts left.")


def redispatch_stuck(db: Database, settings: Settings, send: Sender, now: datetime) -> int:
    """Send again the SCHEDULED runs whose message never reached a worker; how many were sent."""
    cutoff = now - timedelta(seconds=settings.schedule_timeout_s)
    scheduled = db.runs.find({"status": RunStatus.SCHEDULED.value})  # few: an equality every server serves
    stuck = [run for run in scheduled
             if run.get("sendFailedAt") is not None or _before(run.get("scheduledAt"), cutoff)]
    return sum(_send_again(db, settings, send, run, now) for run in stuck)


def _before(when: datetime | None, cutoff: datetime) -> bool:
    return when is not None and as_utc(when) < cutoff


def _send_again(db: Database, settings: Settings, send: Sender, run: dict[str, Any], now: datetime) -> bool:
    attempt = int(run.get("attempt") or 0)
    if claims.get_claim(db, run["_id"], attempt) is not None:
        return False  # a worker has it; its first events are on the way
    moved = db.runs.update_one(
        {"_id": run["_id"], "status": RunStatus.SCHEDULED.value, "attempt": attempt, "scheduledAt": run["scheduledAt"]},
        {"$set": {"scheduledAt": now, "updatedAt": now, "sendFailedAt": None}},
    )
    if moved.modified_count != 1:
        return False
    task_id = run.get("taskId") or claims.claim_id(run["_id"], attempt)
    try:
        with tracing.run_span("send again", run["_id"], run.get(tracing.FIELD), attempt=attempt):
            send(run["_id"], attempt, queue=run.get("queue") or DEFAULT_QUEUE,
                 priority=int(run.get("priority", DEFAULT_PRIORITY)), task_id=task_id)
    except Exception as exc:  # noqa: BLE001 - flag it again for the next pass
        runs.note_send_failed(db, run["_id"], attempt, task_id, f"{type(exc).__name__}: {exc}")
        log.error("run %s attempt %s: sending again failed (%s); next pass tries again", run["_id"], attempt, exc)
        return False
    REDISPATCHED.inc()
    if run.get("sendFailedAt") is not None:
        why = f"the dispatcher's send failed ({run.get('sendError')})"
    else:
        why = f"unclaimed for {settings.schedule_timeout_s}s"
    log.warning("run %s attempt %s: %s; sent again", run["_id"], attempt, why)
    runs.record_decision(db, run, "sweeper", f"attempt {attempt}: {why}; dispatched again")
    return True


def recover_lost(db: Database, settings: Settings, now: datetime, connected_for_s: float) -> int:
    """End the attempts whose worker is gone; `connected_for_s`: how long this sweeper has
    seen the database answer without a break (see `claims.lease_judgeable`)."""
    recovered = 0
    for run in runs.in_statuses(db, sorted(s.value for s in ACTIVE | {RunStatus.SCHEDULED})):
        claim = claims.get_claim(db, run["_id"], int(run.get("attempt") or 0))
        if claim is None:
            continue  # SCHEDULED and unclaimed: `redispatch_stuck`'s case
        code = _lost(run, claim, settings, now, connected_for_s)
        if code is not None and _end_attempt(db, run, claim, code, now):
            recovered += 1
    return recovered


def _lost(run: dict[str, Any], claim: dict[str, Any], settings: Settings, now: datetime,
          connected_for_s: float) -> str | None:
    """Why this run's attempt is over without its worker (a failure code), or None."""
    released = claim.get("releasedAt")
    if released is None:
        judgeable = claims.lease_judgeable(claim, now, connected_for_s=connected_for_s, lease_s=settings.lease_s,
                                           skew_s=settings.clock_skew_s)
        return runs.WORKER_LOST if judgeable else None
    if claims.handed_back(claim):
        return runs.HANDED_BACK
    if claim.get("releaseReason") == "lease expired":
        return runs.WORKER_LOST  # a sweeper expired it, then lost the race to requeue: finish the job
    waited = timedelta(seconds=settings.lease_s + settings.clock_skew_s)
    return runs.NO_OUTCOME if released + waited < now else None


def _end_attempt(db: Database, run: dict[str, Any], claim: dict[str, Any], code: str, now: datetime) -> bool:
    """End the claim, then requeue (or fail) the run: a worker that comes back fails to renew
    its lease and stops, so it never works on past the decision."""
    attempt = int(run.get("attempt") or 0)
    if claim.get("releasedAt") is None and not claims.expire(db, run["_id"], attempt, now):
        return False  # renewed meanwhile, or another sweeper took the decision
    cancel = claims.cancel_requested(db, run["_id"], attempt)
    if code == runs.HANDED_BACK and cancel is None:
        return _hand_back(db, run, claim)
    moved = runs.end_lost_attempt(db, run, claim, now, code=code, cancel=cancel)
    if moved is None:
        return False
    claims.expire(db, run["_id"], attempt, now)
    why = moved["error"]["message"]  # `runs.LOST_MESSAGES`, as the run's error says it
    if moved["status"] == RunStatus.QUEUED.value:
        REQUEUED.inc()
        message = f"{why} (was {run['status']}): requeued"
    elif moved["status"] == RunStatus.CANCELED.value:
        message = f"{why} (was {run['status']}), and a cancel was requested: CANCELED"
    else:
        FAILED_LOST.inc()
        message = f"{why} (was {run['status']}), no attempts left: FAILED ({code})"
    log.warning("run %s: %s", run["_id"], message)
    runs.record_decision(db, run, "sweeper", message, code=code, podId=claim.get("podId"))
    if moved["status"] == RunStatus.QUEUED.value:
        _cancel_if_asked_meanwhile(db, run["_id"], attempt)
    return True


def _hand_back(db: Database, run: dict[str, Any], claim: dict[str, Any]) -> bool:
    moved = runs.hand_back(db, run, claim)
    if moved is None:
        return False
    HANDED_BACK_TOTAL.inc()
    log.warning("run %s: pod %s stopped; attempt %s handed back to the queue", run["_id"], claim.get("podId"),
                claim.get("attempt"))
    _cancel_if_asked_meanwhile(db, run["_id"], int(claim["attempt"]))
    return True


def _cancel_if_asked_meanwhile(db: Database, run_id: str, attempt: int) -> None:
    """A cancel of the lost attempt that arrived between reading its requests and requeueing the
    run would be asked of an attempt that is over: carry it out on the requeued run."""
    cancel = claims.cancel_requested(db, run_id, attempt)
    if cancel is not None:
        try:
            runs.cancel_run(db, run_id, by=cancel.get("by"), reason=cancel.get("reason"))
        except TransitionError:
            pass  # it ended meanwhile


#: A live event consumer (Flower, `celery events`) drains its queue within a second; one whose
#: oldest message is this old has no consumer left.
ORPHANED_EVENT_QUEUE_S = 300


def drop_orphaned_event_queues(db: Database, now: datetime) -> int:
    """Delete `celeryev.*` queues nobody consumes any more.

    Why here: every Flower or `celery events` process binds its own queue, and kombu's MongoDB
    transport never deletes it after the process exits (no auto-delete; expiry needs kombu's
    `ttl`, which FerretDB refuses), so worker heartbeats pile up in `messages`, ~30 MB per
    worker per day for each stopped Flower (see docs/operations.md)."""
    cutoff = ObjectId.from_datetime(now - timedelta(seconds=ORPHANED_EVENT_QUEUE_S))
    queues = db.messages.distinct("queue", {"queue": {"$regex": r"^celeryev\."}, "_id": {"$lt": cutoff}})
    for queue in queues:
        db["messages.routing"].delete_many({"queue": queue})
        db.messages.delete_many({"queue": queue})
        log.warning("dropped event queue %s: its consumer is gone (oldest message over %ss old)", queue, ORPHANED_EVENT_QUEUE_S)
    return len(queues)


def sweep_once(db: Database, settings: Settings, send: Sender, connected_for_s: float = 0.0) -> dict[str, int]:
    """One pass of every rule (what `manage-runs sweep` calls: a sweeper that just connected,
    so it judges only leases over by a whole lease more; the dispatcher's `Sweeper` keeps time)."""
    now = utcnow()
    return {
        "redispatched": redispatch_stuck(db, settings, send, now),
        "recovered": recover_lost(db, settings, now, connected_for_s),
        "eventQueuesDropped": drop_orphaned_event_queues(db, now),
        "podsPruned": pods.prune(db, now - timedelta(seconds=pods.SHOW_GONE_S)),
        "runCountsRefreshed": int(run_counts.refresh(db, now)),
        "dedupRecordsPruned": seen_retention.prune(db, now),
    }


class Sweeper:
    """The dispatcher's sweeper: `sweep_once` on a timer, knowing how long the database has
    answered without a break. Any database error (its own, or the dispatcher's, reported
    through `disconnected`) starts that count again, so right after an outage no lease is
    judged until every live worker has had a lease's time to renew it."""

    def __init__(self, db: Database, settings: Settings, send: Sender, clock: Callable[[], float] = time.monotonic):
        self.db, self.settings, self.send, self.clock = db, settings, send, clock
        self._since: float | None = None

    def disconnected(self) -> None:
        self._since = None

    def connected_for(self) -> float:
        if self._since is None:
            self._since = self.clock()
        return self.clock() - self._since

    def __call__(self) -> dict[str, int]:
        connected_for = self.connected_for()
        try:
            return sweep_once(self.db, self.settings, self.send, connected_for)
        except PyMongoError:
            self.disconnected()
            raise
