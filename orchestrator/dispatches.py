"""What follows an attempt, decided once: a unique insert into `dispatches`, `_id` =
"{run_id}:{attempt}" for the attempt about to begin.

Two writers want that slot, and whoever inserts first decides:
- a dispatcher, before it schedules attempt n (kind "dispatch"; it carries the Celery task id),
  so two dispatchers never send one attempt, even on a server whose guarded updates are not
  atomic (FerretDB v1 reads, modifies and writes back);
- ingest, when the outcome of attempt n-1 arrives after the sweeper presumed that attempt lost
  and requeued the run (kind "outcome"): holding slot n, it may apply the late outcome, and no
  dispatcher will send attempt n. If a dispatcher got there first, the outcome stays in the
  history and attempt n reuses the steps attempt n-1 completed.

A decision whose writer died between the insert and its status write would hold the slot for
good; `stale` says when one may be withdrawn so the run moves again.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from datetime import datetime, timedelta
from typing import Any

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from orchestrator.claims import claim_id
from orchestrator.statuses import RunStatus
from orchestrator.utc import utcnow

DISPATCH = "dispatch"
OUTCOME = "outcome"

#: A decision older than this whose run still waits at the attempt before it was never carried
#: out: its writer died (or stalled) between the insert and the status write, which takes
#: milliseconds.
ORPHANED_AFTER_S = 60.0

_PROCESS = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def writer_id() -> str:
    """Names the writer of a decision: this process and thread (a dispatcher loop is one
    thread), so a writer can tell its own decision, left by an error, from another's."""
    return f"{_PROCESS}:{threading.get_ident()}"


def decide(db: Database, run_id: str, attempt: int, kind: str, **fields: Any) -> dict[str, Any] | None:
    """Take the slot of `attempt` for `kind`; the decision, or None when the slot is taken."""
    decision = {"_id": claim_id(run_id, attempt), "runId": run_id, "attempt": attempt, "kind": kind,
                "writer": writer_id(), "at": utcnow(), "appliedAt": None, **fields}
    try:
        db.dispatches.insert_one(decision)
    except DuplicateKeyError:
        return None
    return decision


def get(db: Database, run_id: str, attempt: int) -> dict[str, Any] | None:
    return db.dispatches.find_one({"_id": claim_id(run_id, attempt)})


def mark_applied(db: Database, run_id: str, attempt: int) -> None:
    """The decision's status write is done (a late outcome was applied)."""
    db.dispatches.update_one({"_id": claim_id(run_id, attempt), "appliedAt": None}, {"$set": {"appliedAt": utcnow()}})


def stale(decision: dict[str, Any], run: dict[str, Any], now: datetime, connected_for_s: float) -> bool:
    """Whether `decision` (for attempt n) may be withdrawn, `run` being read after it, by a
    reader that has seen the database answer for `connected_for_s` without a break.

    Only while the run still waits QUEUED at attempt n-1, which a carried-out decision never
    leaves it at: then either it was applied and the run came back to the queue since (a retry
    after a late outcome), or its writer never got to the status write. For the latter, the
    decision must be `ORPHANED_AFTER_S` old and the reader connected that long: right after a
    database outage a living writer (ingest answering a worker's resend) is about to finish it."""
    if run.get("status") != RunStatus.QUEUED.value or int(run.get("attempt") or 0) != int(decision["attempt"]) - 1:
        return False
    if decision.get("appliedAt") is not None:
        return True
    old = decision["at"] + timedelta(seconds=ORPHANED_AFTER_S) < now
    return bool(old and connected_for_s >= ORPHANED_AFTER_S)


def withdraw(db: Database, decision: dict[str, Any]) -> bool:
    """Delete a stale decision (this very one: a newer one in its slot stays)."""
    this = {"_id": decision["_id"], "at": decision["at"], "writer": decision["writer"]}
    return db.dispatches.delete_one(this).deleted_count == 1
