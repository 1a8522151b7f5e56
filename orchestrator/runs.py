"""Operations on run documents shared by the API, the CLI, the dispatcher and the sweeper.

Every status write here is a status-guarded update: the filter names the statuses the table
allows to move to the target, so two writers racing on one run cannot both move it.
"""

from __future__ import annotations

import uuid
from typing import Any

from pymongo import ReturnDocument
from pymongo.database import Database

from orchestrator import claims
from orchestrator.db import utcnow
from orchestrator.errors import NotFound, TransitionError
from orchestrator.events import SEQ_BLOCK, make_event
from orchestrator.statuses import ACTIVE, TERMINAL, RunStatus, sources_of

DEFAULT_QUEUE = "gpu"
DEFAULT_PIPELINE = "demo"
DEFAULT_PRIORITY = 5  # 0 (lowest) .. 9 (highest), as Celery's priority


def new_run_document(
    hypothesis_id: str,
    *,
    priority: int = DEFAULT_PRIORITY,
    queue: str = DEFAULT_QUEUE,
    pipeline: str = DEFAULT_PIPELINE,
    max_attempts: int = 3,
    run_id: str | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """A QUEUED run as the frontend would insert it. `attempt` counts dispatches; 0 = none yet.
    `seed` fixes the pipeline's randomness (default: derived from the run id)."""
    if not 0 <= priority <= 9:
        raise ValueError(f"priority must be 0..9, got {priority}")
    now = utcnow()
    return {
        "_id": run_id or str(uuid.uuid4()),
        "hypothesisId": hypothesis_id,
        "status": RunStatus.QUEUED.value,
        "priority": priority,
        "queue": queue,
        "pipeline": pipeline,
        "attempt": 0,
        "maxAttempts": max_attempts,
        "cancelRequested": False,
        "metrics": {},
        "lastEventSeq": 0,
        "createdAt": now,
        "updatedAt": now,
        **({"seed": seed} if seed is not None else {}),
    }


def create_hypothesis_and_run(
    db: Database,
    title: str,
    idea: str,
    *,
    idea_json: dict[str, Any] | None = None,
    priority: int = DEFAULT_PRIORITY,
    queue: str = DEFAULT_QUEUE,
    pipeline: str = DEFAULT_PIPELINE,
    max_attempts: int = 3,
    seed: int | None = None,
) -> tuple[str, str]:
    """Insert a hypothesis and its QUEUED run, as the frontend does. Returns (hypothesis id, run id)."""
    hypothesis_id = str(uuid.uuid4())
    db.hypotheses.insert_one(
        {"_id": hypothesis_id, "title": title, "idea": idea, "ideaJson": idea_json, "createdAt": utcnow()}
    )
    run = new_run_document(
        hypothesis_id, priority=priority, queue=queue, pipeline=pipeline, max_attempts=max_attempts, seed=seed
    )
    db.runs.insert_one(run)
    return hypothesis_id, run["_id"]


def get_run(db: Database, run_id: str) -> dict[str, Any]:
    run = db.runs.find_one({"_id": run_id})
    if run is None:
        raise NotFound(f"no run with id {run_id!r}")
    return run


def transition(
    db: Database,
    run_id: str,
    target: RunStatus,
    *,
    only_from: set[RunStatus] | None = None,
    extra_filter: dict[str, Any] | None = None,
    set_fields: dict[str, Any] | None = None,
    update: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Move a run to `target` if its status allows it; return the new document, or None when the
    guard did not match (another writer moved it first, or the status does not allow it)."""
    allowed = set(sources_of(target))
    if only_from is not None:
        allowed &= {s.value for s in only_from}
    query: dict[str, Any] = {"_id": run_id, "status": {"$in": sorted(allowed)}, **(extra_filter or {})}
    changes: dict[str, Any] = dict(update or {})
    changes["$set"] = {**changes.get("$set", {}), **(set_fields or {}), "status": target.value, "updatedAt": utcnow()}
    return db.runs.find_one_and_update(query, changes, return_document=ReturnDocument.AFTER)


def record_decision(db: Database, run: dict[str, Any], component: str, message: str, **kv: Any) -> None:
    """Put a control-plane decision into the run's event history, so an operator reading the
    history sees why a run was requeued, failed as lost or dispatched again.

    It takes seq `attempt * SEQ_BLOCK` (n = 0 of the attempt, which no worker uses) so it sorts
    before that attempt's own events."""
    seq = int(run.get("attempt") or 0) * SEQ_BLOCK
    event = make_event(
        "ai.run.log", run["_id"], seq, f"orchestrator://{component}",
        {"level": "warning" if kv.get("code") else "info", "message": message, "kv": kv},
    )
    db.events.insert_one(
        {
            "_id": event["id"],
            "source": event["source"],
            "runId": run["_id"],
            "type": event["type"],
            "seq": seq,
            "time": utcnow(),
            "data": event["data"],
            "receivedAt": utcnow(),
        }
    )


def cancel_run(db: Database, run_id: str, *, by: str | None = None, reason: str | None = None) -> dict[str, Any]:
    """QUEUED or SCHEDULED: CANCELED at once (a task already in the broker is a no-op when it
    runs). Active: a cancel request for the current attempt (and `cancelRequested` for readers),
    and the worker stops at its next checkpoint.
    Ended: `TransitionError`, never a silent write."""
    run = get_run(db, run_id)
    status = RunStatus(run["status"])
    if status in TERMINAL or status == RunStatus.AWAITING_HUMAN:
        raise TransitionError(f"run {run_id} is {status.value}: there is nothing to cancel")
    if status in (RunStatus.QUEUED, RunStatus.SCHEDULED):
        done = transition(
            db, run_id, RunStatus.CANCELED, only_from={RunStatus.QUEUED, RunStatus.SCHEDULED},
            set_fields={"finishedAt": utcnow(), "cancel": {"by": by, "reason": reason}},
        )
        if done is not None:
            record_decision(db, done, "api", f"canceled while {status.value}", by=by, reason=reason)
            return done
        return cancel_run(db, run_id, by=by, reason=reason)  # it moved meanwhile: decide again
    claims.request_cancel(db, run_id, int(run.get("attempt") or 0), by=by, reason=reason)
    updated = db.runs.find_one_and_update(
        {"_id": run_id, "status": {"$in": sorted(s.value for s in ACTIVE)}},
        {"$set": {"cancelRequested": True, "cancel": {"by": by, "reason": reason}, "updatedAt": utcnow()}},
        return_document=ReturnDocument.AFTER,
    )
    if updated is None:
        return cancel_run(db, run_id, by=by, reason=reason)
    record_decision(db, updated, "api", "cancel requested; the worker stops at its next checkpoint", by=by, reason=reason)
    return updated


def retry_run(db: Database, run_id: str, *, by: str | None = None, reason: str | None = None) -> dict[str, Any]:
    """FAILED or CANCELED -> QUEUED, keeping `attempt` (the dispatcher adds one) and the
    failure in `attempts`; anything else is a `TransitionError`. Recorded in the history."""
    run = get_run(db, run_id)
    if RunStatus(run["status"]) not in (RunStatus.FAILED, RunStatus.CANCELED):
        raise TransitionError(f"run {run_id} is {run['status']}: only FAILED or CANCELED runs can be retried")
    updated = transition(
        db, run_id, RunStatus.QUEUED,
        only_from={RunStatus.FAILED, RunStatus.CANCELED},
        set_fields={"cancelRequested": False, "notBefore": None, "finishedAt": None,
                    "maxAttempts": max(int(run.get("maxAttempts") or 1), int(run.get("attempt") or 0) + 1)},
        update={"$unset": {"error": ""}},
    )
    if updated is None:
        raise TransitionError(f"run {run_id} changed status while retrying; try again")
    record_decision(db, updated, "api", f"retried after {run['status']}", by=by, reason=reason)
    return updated
