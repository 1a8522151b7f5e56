"""The sweeper: keeps every run moving to an end whatever died.

- SCHEDULED longer than `schedule_timeout_s` with no claim: its broker message was lost with a
  dead worker or never consumed; send it again (same attempt: if the first message was only
  slow, the claim makes the second a no-op).
- Active (STARTING, RUNNING, AUTO_VALIDATING) whose current claim's lease expired: the pod was
  killed or lost. End the claim (the old worker, if it comes back, fails to renew and stops),
  then requeue keeping `attempt` if attempts remain, else FAILED with code WorkerLost
  (`orchestrator.runs.end_lost_attempt`, which asks the retry policy).
- A `celeryev.*` queue whose consumer is gone is dropped (see `drop_orphaned_event_queues`).
Every decision about a run goes into its event history and the log. Several sweepers at once are
safe: each decision is a guarded update that only one caller can win.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from bson import ObjectId
from prometheus_client import Counter
from pymongo.database import Database

from orchestrator import claims, runs
from orchestrator.db import utcnow
from orchestrator.dispatcher import Sender
from orchestrator.settings import DEFAULT_PRIORITY, DEFAULT_QUEUE, Settings
from orchestrator.statuses import ACTIVE, RunStatus

log = logging.getLogger(__name__)

REDISPATCHED = Counter("orchestrator_redispatched_total", "SCHEDULED runs sent again after their message was lost.")
REQUEUED = Counter("orchestrator_requeued_total", "Runs requeued after their worker's lease expired.")
FAILED_LOST = Counter("orchestrator_failed_lost_total", "Runs failed as WorkerLost with no attempts left.")


def redispatch_stuck(db: Database, settings: Settings, send: Sender, now: datetime) -> int:
    cutoff = now - timedelta(seconds=settings.schedule_timeout_s)
    sent = 0
    for run in db.runs.find({"status": RunStatus.SCHEDULED.value, "scheduledAt": {"$lt": cutoff}}):
        attempt = int(run.get("attempt") or 0)
        if claims.get_claim(db, run["_id"], attempt) is not None:
            continue  # a worker has it; its STARTING write is on the way
        moved = db.runs.update_one(
            {"_id": run["_id"], "status": RunStatus.SCHEDULED.value, "attempt": attempt, "scheduledAt": run["scheduledAt"]},
            {"$set": {"scheduledAt": now, "updatedAt": now}},
        )
        if moved.modified_count != 1:
            continue
        send(run["_id"], attempt, queue=run.get("queue") or DEFAULT_QUEUE, priority=int(run.get("priority", DEFAULT_PRIORITY)),
             task_id=run.get("taskId") or f"{run['_id']}:{attempt}")
        REDISPATCHED.inc()
        log.warning("run %s attempt %s was SCHEDULED since %s with no claim; sent again", run["_id"], attempt, run["scheduledAt"])
        runs.record_decision(db, run, "sweeper",
                             f"attempt {attempt} unclaimed for {settings.schedule_timeout_s}s: dispatched again")
        sent += 1
    return sent


def recover_lost(db: Database, now: datetime) -> int:
    recovered = 0
    for run in db.runs.find({"status": {"$in": sorted(s.value for s in ACTIVE)}}):
        attempt = int(run.get("attempt") or 0)
        claim = claims.get_claim(db, run["_id"], attempt)
        if claim is None or claim.get("releasedAt") is not None or claim["leaseExpiresAt"] >= now:
            continue
        if not claims.expire(db, run["_id"], attempt, now):
            continue  # renewed meanwhile, or another sweeper took the decision
        if _requeue_or_fail(db, run, claim, now):
            recovered += 1
    return recovered


def _requeue_or_fail(db: Database, run: dict[str, Any], claim: dict[str, Any], now: datetime) -> bool:
    moved = runs.end_lost_attempt(db, run, claim, now)
    if moved is None:
        return False
    attempt = int(run.get("attempt") or 0)
    if moved["status"] == RunStatus.QUEUED.value:
        REQUEUED.inc()
        message = f"lease of pod {claim.get('podId')} expired on attempt {attempt}: requeued"
    else:
        FAILED_LOST.inc()
        message = f"lease of pod {claim.get('podId')} expired on attempt {attempt}, no attempts left: FAILED (WorkerLost)"
    log.warning("run %s: %s", run["_id"], message)
    runs.record_decision(db, run, "sweeper", message, code="WorkerLost", podId=claim.get("podId"))
    return True


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


def sweep_once(db: Database, settings: Settings, send: Sender) -> dict[str, int]:
    """One pass of every rule (what `manage-runs sweep` and the dispatcher's timer call)."""
    now = utcnow()
    return {
        "redispatched": redispatch_stuck(db, settings, send, now),
        "recovered": recover_lost(db, now),
        "eventQueuesDropped": drop_orphaned_event_queues(db, now),
    }
