"""Run documents, and every write of a run's status: the one module that moves `runs.status`.

Each status write here is a guarded update whose filter names the statuses the transition table
(`orchestrator.statuses`) allows to move to the target, so two writers racing on one run cannot
both move it, and no writer can move it along an edge the table lacks. The writers are:

- the API, the console and the CLI: create, cancel, retry, review (`create_hypothesis_and_run`,
  `cancel_run`, `retry_run`, `review_run`);
- the dispatcher: QUEUED -> SCHEDULED once it holds the attempt's dispatch decision (`schedule`);
- the sweeper: a claimed run whose pod went silent -> QUEUED or FAILED (`end_lost_attempt`), and
  back to QUEUED, not counting the attempt, when its pod had to stop (`hand_back`);
- ingest: the status an event asserts (STARTING on the worker's `ai.run.started`: the worker
  itself writes no run document, only its claim) (`event_status_update` builds the guarded update, which the
  ingest engine runs with the rest of its batch), and the late outcome of an attempt the sweeper
  presumed lost, when that attempt's successor was not dispatched (`take_late_outcome`).

Control-plane decisions go into the run's event history (`record_decision`), so an operator
reading it sees why a run was requeued, failed as lost or dispatched again.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from pymongo import ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from orchestrator import claims, dispatches, event_history, retry, run_days, status_history, tracing
from orchestrator.errors import NotFound, TransitionError
from orchestrator.events import OUTCOME_TYPES, SEQ_BLOCK, attempt_of, history_record, make_event
from orchestrator.limits import parse_limits
from orchestrator.settings import DEFAULT_MAX_ATTEMPTS, DEFAULT_PIPELINE, DEFAULT_PRIORITY, DEFAULT_QUEUE
from orchestrator.statuses import ACTIVE, TERMINAL, RunStatus, check_transition, sources_of
from orchestrator.utc import utcnow

#: A person's review: the decision, and the status it moves an AWAITING_HUMAN run to.
ACCEPT, REJECT = "accept", "reject"
REVIEW_OUTCOME = {ACCEPT: RunStatus.HUMAN_VALIDATED, REJECT: RunStatus.HUMAN_REJECTED}

#: Statuses no event moves a run out of: a requeued run waits for the dispatcher (the late
#: `stage_progress` of an attempt the sweeper gave up on must not revive it), and an ended run
#: moves only by an explicit retry.
FROZEN_FOR_EVENTS: frozenset[RunStatus] = frozenset({RunStatus.QUEUED}) | TERMINAL


def new_run_document(
    hypothesis_id: str,
    *,
    priority: int = DEFAULT_PRIORITY,
    queue: str = DEFAULT_QUEUE,
    pipeline: str = DEFAULT_PIPELINE,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
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
        run_days.FIELD: run_days.day_of(now),
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
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    seed: int | None = None,
    limits: dict[str, Any] | None = None,
) -> tuple[str, str]:
    """Insert a hypothesis and its QUEUED run, as the frontend does. Returns (hypothesis id, run id).
    `limits`: the run's wall-clock limits (`orchestrator.limits`; ValueError when malformed)."""
    checked = parse_limits(limits)
    hypothesis_id = str(uuid.uuid4())
    db.hypotheses.insert_one(
        {"_id": hypothesis_id, "title": title, "idea": idea, "ideaJson": idea_json, "createdAt": utcnow()}
    )
    run = new_run_document(
        hypothesis_id, priority=priority, queue=queue, pipeline=pipeline, max_attempts=max_attempts, seed=seed
    )
    if checked:
        run["limits"] = checked
    with tracing.new_run_trace("enqueue", run["_id"], {"run.pipeline": pipeline, "run.queue": queue}) as traceparent:
        run[tracing.FIELD] = traceparent
        run_days.register(db, run[run_days.FIELD])
        db.runs.insert_one(run)
    return hypothesis_id, run["_id"]


def get_run(db: Database, run_id: str) -> dict[str, Any]:
    run = db.runs.find_one({"_id": run_id})
    if run is None:
        raise NotFound(f"no run with id {run_id!r}")
    return run


def in_statuses(db: Database, statuses: Iterable[str], query: dict[str, Any] | None = None,
                projection: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    """The runs in these statuses (and `query`): one equality query per status, which every
    server answers from an index, where FerretDB evaluates a `$in` in its Go code over every run."""
    for status in statuses:
        yield from db.runs.find({**(query or {}), "status": status}, projection)


def _transition(
    db: Database,
    run_id: str,
    target: RunStatus,
    *,
    only_from: set[RunStatus],
    by: str,
    reason: str,
    extra_filter: dict[str, Any] | None = None,
    set_fields: dict[str, Any] | None = None,
    update: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Move a run from one of `only_from` to `target`, where the table allows it, and record
    the change (`by` whom, why) in the status history; return the new document, or None when
    the guard did not match (another writer moved it first)."""
    for source in only_from:
        check_transition(source, target)  # a writer asking for an edge the table lacks is a bug
    query: dict[str, Any] = {"_id": run_id, "status": {"$in": sorted(s.value for s in only_from)}, **(extra_filter or {})}
    changes: dict[str, Any] = dict(update or {})
    now = utcnow()
    changes["$set"] = {**changes.get("$set", {}), **(set_fields or {}), "status": target.value, "updatedAt": now}
    changes["$inc"] = {**changes.get("$inc", {}), "statusChanges": 1}
    before = db.runs.find_one_and_update(query, changes, return_document=ReturnDocument.BEFORE)
    if before is None:
        return None
    after = db.runs.find_one({"_id": run_id}) or {**before, **changes["$set"]}
    if run_days.FIELD not in after:  # a frontend's run no reader or dispatcher stamped yet (canceled first)
        after[run_days.FIELD] = run_days.stamp(db, after)
    status_history.record(db, run_id, f"c{int(before.get('statusChanges') or 0) + 1}", before=before["status"],
                          after=target.value, by=by, attempt=int(after.get("attempt") or 0), reason=reason, at=now)
    return after


# --- the dispatcher, the worker and the sweeper --------------------------------------------------


def schedule(db: Database, run: dict[str, Any], task_id: str, traceparent: str | None = None) -> dict[str, Any] | None:
    """QUEUED -> SCHEDULED with the next attempt, guarded on the attempt the dispatcher saw, so
    two dispatchers never both schedule one attempt (on a server with atomic updates). A run
    inserted without a trace gets `traceparent`."""
    trace = {tracing.FIELD: traceparent} if traceparent and not tracing.parse(run.get(tracing.FIELD)) else {}
    return _transition(
        db, run["_id"], RunStatus.SCHEDULED, only_from={RunStatus.QUEUED},
        by="dispatcher", reason=f"attempt {int(run.get('attempt') or 0) + 1} sent to queue {run.get('queue') or DEFAULT_QUEUE}",
        extra_filter={"attempt": run.get("attempt", 0)},
        set_fields={"attempt": int(run.get("attempt") or 0) + 1, "taskId": task_id, "scheduledAt": utcnow(),
                    "cancelRequested": False, **_SENT, **trace},
    )


#: A new attempt scheduled: whatever send failed before is past.
_SENT = {"sendFailedAt": None, "sendError": None}


def note_send_failed(db: Database, run_id: str, attempt: int, task_id: str, error: str) -> None:
    """The send of a SCHEDULED attempt failed: flag it for the sweeper's next pass to send again
    (`sendFailedAt`). The decision stands: undoing it would mean freeing its unique slot, which
    no writer can do safely while another may be reading it."""
    db.runs.update_one(
        {"_id": run_id, "status": RunStatus.SCHEDULED.value, "attempt": attempt, "taskId": task_id},
        {"$set": {"sendFailedAt": utcnow(), "sendError": error}},
    )


#: The codes of an attempt the sweeper ended, and the run's error message for each.
WORKER_LOST, NO_OUTCOME, HANDED_BACK = "WorkerLost", "NoOutcome", "HandedBack"
LOST_MESSAGES = {
    WORKER_LOST: "pod {pod} stopped renewing its lease on attempt {attempt} (expired {expires}); the worker was "
                 "killed, OOM-killed or cut off",
    NO_OUTCOME: "pod {pod} released its claim on attempt {attempt} ({reason}) but the attempt's outcome never "
                "arrived",
    # Only as a canceled run's error: a handed-back attempt with no cancel is requeued with none.
    HANDED_BACK: "pod {pod} gave attempt {attempt} back before it was done ({reason})",
}


def hand_back(db: Database, run: dict[str, Any], claim: dict[str, Any]) -> dict[str, Any] | None:
    """SCHEDULED or active -> QUEUED by the sweeper, for an attempt its worker gave back without
    an outcome (`claims.handed_back`: its pod had to stop, or the run could not be started): the
    run is queued again at once, and the attempt does not count against `maxAttempts` (it grows by
    one). Guarded on the attempt (claims are per attempt). None if the run moved meanwhile."""
    attempt, pod_id = int(claim["attempt"]), claim.get("podId")
    done = _transition(
        db, run["_id"], RunStatus.QUEUED, only_from=set(ACTIVE) | {RunStatus.SCHEDULED}, extra_filter={"attempt": attempt},
        by="sweeper", reason=f"pod {pod_id} gave attempt {attempt} back ({claim.get('releaseReason')}); it does not count",
        set_fields={"cancelRequested": False, "notBefore": None}, update={"$inc": {"maxAttempts": 1}},
    )
    if done is not None:
        record_decision(db, done, "sweeper", f"pod {pod_id} gave attempt {attempt} back ({claim.get('releaseReason')}): "
                        "handed back to the queue; it does not count against maxAttempts", podId=pod_id)
    return done


def end_lost_attempt(
    db: Database, run: dict[str, Any], claim: dict[str, Any], now: datetime, code: str = WORKER_LOST,
    cancel: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """A claimed run (SCHEDULED or active) whose pod is gone: requeued while attempts are left
    (the retry policy decides), else FAILED with `code` (`LOST_MESSAGES`); CANCELED instead when
    `cancel` (the attempt's cancel request) says a person wanted it stopped anyway. None if
    another writer moved it."""
    attempt = int(run.get("attempt") or 0)
    decision = retry.after_failure(attempt, int(run.get("maxAttempts") or 1), retryable=True, at=now, wait=False)
    error = {
        "code": code,
        "message": LOST_MESSAGES[code].format(pod=claim.get("podId"), attempt=attempt,
                                              expires=claim.get("leaseExpiresAt"), reason=claim.get("releaseReason")),
        "retryable": decision.requeue and cancel is None,
        "stage": None,
        "attempt": attempt,
        "at": now,
    }
    fields: dict[str, Any] = {"error": error, "cancelRequested": False}
    if cancel is not None:
        target = RunStatus.CANCELED
        fields["cancel"] = {"by": cancel.get("by"), "reason": cancel.get("reason"), "at": now}
    else:
        target = RunStatus.QUEUED if decision.requeue else RunStatus.FAILED
    if target != RunStatus.QUEUED:
        fields["finishedAt"] = now
    return _transition(
        db, run["_id"], target, only_from=set(ACTIVE) | {RunStatus.SCHEDULED}, by="sweeper",
        reason=f"{code}: {error['message']}" + (" (a cancel was requested)" if cancel is not None else ""),
        extra_filter={"attempt": attempt}, set_fields=fields, update={"$push": {"attempts": error}},
    )


def take_late_outcome(db: Database, run: dict[str, Any], event: dict[str, Any]) -> bool:
    """Whether `event`, the outcome of attempt n of a run the sweeper requeued as lost at attempt
    n, may move the run out of QUEUED. Yes when ingest takes the dispatch slot of attempt n+1
    first (`orchestrator.dispatches`; or took it before, for a resend): ingest then applies it
    and calls `late_outcome_applied`. No when a dispatcher did: the outcome stays in the history,
    and attempt n+1 reuses the steps attempt n completed. The run's history says which, once."""
    if event["type"] not in OUTCOME_TYPES:
        return False
    attempt, current = attempt_of(event["seq"]), int(run.get("attempt") or 0)
    if not _presumed_lost(run, attempt):
        return False
    if current > attempt:
        _record_late_outcome(db, run, attempt, event, "dispatched")
        return False
    if run.get("status") in (RunStatus.FAILED.value, RunStatus.CANCELED.value):
        _record_late_outcome(db, run, attempt, event, "ended")
        return False
    if run.get("status") != RunStatus.QUEUED.value or current != attempt:
        return False
    if dispatches.decide(db, run["_id"], attempt + 1, dispatches.OUTCOME, eventId=event["id"]) is not None:
        return True
    held = dispatches.get(db, run["_id"], attempt + 1)
    if held is not None and held["kind"] == dispatches.OUTCOME:
        return True  # ours: a resend of the batch that took it
    _record_late_outcome(db, run, attempt, event, "dispatched")
    return False


def _presumed_lost(run: dict[str, Any], attempt: int) -> bool:
    """Whether the sweeper ended `attempt` as lost (its record in `attempts`)."""
    records = run.get("attempts")
    lost = [r for r in records if isinstance(r, dict) and r.get("code") in LOST_MESSAGES] if isinstance(records, list) else []
    return any(r.get("attempt") == attempt for r in lost)


def late_outcome_applied(db: Database, run_id: str, event: dict[str, Any]) -> None:
    """After ingest ran the late outcome's guarded update: the decision is carried out, and the
    history says what it did (the run may have moved meanwhile, canceled say)."""
    attempt = attempt_of(event["seq"])
    dispatches.mark_applied(db, run_id, attempt + 1)
    run = db.runs.find_one({"_id": run_id}, {"status": 1, "attempt": 1, "attempts": 1})
    if run is not None:
        moved = run["status"] == RunStatus.AWAITING_HUMAN.value and int(run.get("attempt") or 0) == attempt
        _record_late_outcome(db, run, attempt, event, "applied" if moved else "moved")


def _record_late_outcome(db: Database, run: dict[str, Any], attempt: int, event: dict[str, Any], what: str) -> None:
    """Say in the run's history what became of a late outcome: applied; left to the attempt
    dispatched first; or not applied because the run had ended, or moved, meanwhile."""
    later = attempt + 1
    message = {
        "applied": f"the outcome of attempt {attempt} arrived after the sweeper presumed it lost; no attempt "
                   f"{later} had been dispatched, so it is applied",
        "dispatched": f"the outcome of attempt {attempt} arrived after the sweeper presumed it lost and attempt "
                      f"{later} was dispatched: it stays in the history, and attempt {later} reuses the steps "
                      f"attempt {attempt} completed",
        "ended": f"the outcome of attempt {attempt} arrived after the sweeper presumed it lost and the run ended "
                 f"{run.get('status')}: it stays in the history; retry the run to use it, the next attempt reuses "
                 f"the steps attempt {attempt} completed",
        "moved": f"the outcome of attempt {attempt} arrived after the sweeper presumed it lost, and the run moved "
                 f"to {run.get('status')} before it could be applied: it stays in the history",
    }[what]
    record_decision(db, run, "ingest", message, key=f"late-outcome-{attempt}-{what}", eventId=event["id"])


# --- ingest --------------------------------------------------------------------------------------


def event_status_update(
    run_id: str, attempt: int, seq: int, target: RunStatus, also: dict[str, Any] | None = None, *,
    late_outcome: bool = False,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The guarded update (filter, update) that moves a run to the status an event asserts.

    Only along the table, only for the run's current attempt (a dead worker's late events never
    touch a newer attempt), never out of `FROZEN_FOR_EVENTS`; when the run is already at
    `target`, the update records the higher seq in `statusSeq`. So an attempt's status climbs the
    main path to the furthest point any of its events reached, whatever the arrival order.
    `late_outcome`: the event is a late outcome ingest may apply (`take_late_outcome`), which
    moves the run out of QUEUED and clears the sweeper's error."""
    sources = event_sources(target, late_outcome)
    if late_outcome:
        also = {**(also or {}), "error": None}
    same = {"status": target.value}
    query = {
        "_id": run_id,
        "attempt": attempt,
        "$or": [
            {"status": {"$in": sources}},
            {**same, "statusSeq": {"$lt": seq}},
            {**same, "statusSeq": {"$exists": False}},
        ],
    }
    return query, {"$set": {"status": target.value, "statusSeq": seq, **(also or {})}}


def event_sources(target: RunStatus, late_outcome: bool) -> list[str]:
    """The statuses an event may move a run out of, to `target`."""
    sources = [s for s in sources_of(target) if RunStatus(s) not in FROZEN_FOR_EVENTS]
    return sources + [RunStatus.QUEUED.value] if late_outcome else sources


# --- operators -----------------------------------------------------------------------------------


def record_decision(db: Database, run: dict[str, Any], component: str, message: str, *, key: str | None = None,
                    **kv: Any) -> None:
    """Put a control-plane decision into the run's event history.

    It takes seq `attempt * SEQ_BLOCK` (n = 0 of the attempt, which no worker uses) so it sorts
    before that attempt's own events. A decision that may be taken again (a resent batch) names
    a `key`, so it is recorded once."""
    seq = int(run.get("attempt") or 0) * SEQ_BLOCK
    event = make_event(
        "ai.run.log", run["_id"], seq, f"orchestrator://{component}",
        {"level": "warning" if kv.get("code") else "info", "message": message, "kv": kv},
        event_id=f"{component}:{run['_id']}:{key}" if key else None,
    )
    if traceparent := tracing.for_run(run.get(tracing.FIELD)):
        event[tracing.FIELD] = traceparent
    try:
        db.events.insert_one(history_record(event, received_at=utcnow()))
    except DuplicateKeyError:
        pass  # recorded before


def cancel_run(db: Database, run_id: str, *, by: str | None = None, reason: str | None = None) -> dict[str, Any]:
    """QUEUED, or SCHEDULED with no worker holding it: CANCELED at once (a task already in the
    broker is a no-op when it runs). Active, or SCHEDULED and claimed: a cancel request for the
    current attempt (and `cancelRequested` for readers), and the worker stops at its next checkpoint.
    Ended: `TransitionError`, never a silent write."""
    run = get_run(db, run_id)
    status = RunStatus(run["status"])
    if status in TERMINAL or status == RunStatus.AWAITING_HUMAN:
        raise TransitionError(f"run {run_id} is {status.value}: there is nothing to cancel")
    attempt = int(run.get("attempt") or 0)
    if status == RunStatus.SCHEDULED:
        # A worker may hold the attempt before its first event moved the run on. The request goes
        # first: a worker that claims after this reads it and does not start; one that claimed
        # before is asked to stop like an active one, and its `ai.run.canceled` ends the run (or
        # the sweeper, if it dies) - ending the run now could let a retry run beside it.
        claims.request_cancel(db, run_id, attempt, by=by, reason=reason)
        if _claimed(db, run_id, attempt):
            return _ask_to_stop(db, run_id, by=by, reason=reason)
    if status in (RunStatus.QUEUED, RunStatus.SCHEDULED):
        done = _transition(
            db, run_id, RunStatus.CANCELED, only_from={RunStatus.QUEUED, RunStatus.SCHEDULED},
            by=by or "api", reason=reason or f"canceled while {status.value}",
            set_fields={"finishedAt": utcnow(), "cancel": {"by": by, "reason": reason}},
        )
        if done is not None:
            record_decision(db, done, "api", f"canceled while {status.value}", by=by, reason=reason)
            return done
        return cancel_run(db, run_id, by=by, reason=reason)  # it moved meanwhile: decide again
    claims.request_cancel(db, run_id, attempt, by=by, reason=reason)
    return _ask_to_stop(db, run_id, by=by, reason=reason)


def _claimed(db: Database, run_id: str, attempt: int) -> bool:
    claim = claims.get_claim(db, run_id, attempt)
    return claim is not None and claim.get("releasedAt") is None


def _ask_to_stop(db: Database, run_id: str, *, by: str | None, reason: str | None) -> dict[str, Any]:
    """`cancelRequested` for readers, on a run a worker holds (its cancel request is filed)."""
    updated = db.runs.find_one_and_update(
        {"_id": run_id, "status": {"$in": sorted(s.value for s in ACTIVE | {RunStatus.SCHEDULED})}},
        {"$set": {"cancelRequested": True, "cancel": {"by": by, "reason": reason}, "updatedAt": utcnow()}},
        return_document=ReturnDocument.AFTER,
    )
    if updated is None:
        return cancel_run(db, run_id, by=by, reason=reason)  # it moved meanwhile: decide again
    record_decision(db, updated, "api", "cancel requested; the worker stops at its next checkpoint", by=by, reason=reason)
    return updated


def retry_run(db: Database, run_id: str, *, by: str | None = None, reason: str | None = None) -> dict[str, Any]:
    """FAILED or CANCELED -> QUEUED, keeping `attempt` (the dispatcher adds one) and the
    failure in `attempts`; anything else is a `TransitionError`. Recorded in the history."""
    run = get_run(db, run_id)
    if RunStatus(run["status"]) not in (RunStatus.FAILED, RunStatus.CANCELED):
        raise TransitionError(f"run {run_id} is {run['status']}: only FAILED or CANCELED runs can be retried")
    updated = _transition(
        db, run_id, RunStatus.QUEUED,
        only_from={RunStatus.FAILED, RunStatus.CANCELED}, by=by or "api", reason=reason or f"retried after {run['status']}",
        set_fields={"cancelRequested": False, "notBefore": None, "finishedAt": None,
                    "maxAttempts": max(int(run.get("maxAttempts") or 1), int(run.get("attempt") or 0) + 1)},
        update={"$unset": {"error": "", event_history.ARCHIVED_AT: ""}},  # its new events are archived later
    )
    if updated is None:
        raise TransitionError(f"run {run_id} changed status while retrying; try again")
    run_days.forget_counts(db, run.get(run_days.FIELD))
    record_decision(db, updated, "api", f"retried after {run['status']}", by=by, reason=reason)
    return updated


def review_run(db: Database, run_id: str, decision: str, *, by: str, notes: str | None = None) -> dict[str, Any]:
    """A person's review of a run in AWAITING_HUMAN: `accept` -> HUMAN_VALIDATED, `reject` ->
    HUMAN_REJECTED, with `review {decision, by, notes, at}` on the run and a `human` validation
    beside the auto one. Any other status is a `TransitionError`.

    The human validation record, keyed by the run, is the decision: its unique insert lets one of
    two reviewers racing through (a guarded update alone would not, on a server without atomic
    find-and-modify), and the status write follows it. The loser gets a `TransitionError` naming
    the decision made; a review whose status write was cut off (the database died between the
    two) is completed by the next attempt to review, which then learns it was already made."""
    if decision not in REVIEW_OUTCOME:
        raise ValueError(f"decision must be {ACCEPT!r} or {REJECT!r}, got {decision!r}")
    run = get_run(db, run_id)
    if run["status"] != RunStatus.AWAITING_HUMAN.value:
        raise TransitionError(f"run {run_id} is {run['status']}: only a run in AWAITING_HUMAN can be reviewed")
    now = utcnow()
    record = {"_id": f"{run_id}~human", "runId": run_id, "kind": "human", "decision": decision, "by": by, "notes": notes,
              "verdict": "pass" if decision == ACCEPT else "fail", "createdAt": now}
    try:
        db.validations.insert_one(record)
    except DuplicateKeyError:
        made = db.validations.find_one({"_id": record["_id"]}) or {}
        _apply_review(db, run_id, made)
        raise TransitionError(f"run {run_id} was already reviewed: {made.get('by')} chose {made.get('decision')}") from None
    updated = _apply_review(db, run_id, record)
    if updated is None:
        raise TransitionError(f"run {run_id} changed status while it was being reviewed; reload it")
    return updated


def _apply_review(db: Database, run_id: str, record: dict[str, Any]) -> dict[str, Any] | None:
    """AWAITING_HUMAN -> the status the review record decides, with `review` on the run and the
    decision in its history; None when the run is no longer in AWAITING_HUMAN."""
    decision, by, notes = record.get("decision"), str(record.get("by")), record.get("notes")
    if decision not in REVIEW_OUTCOME:
        return None
    target = REVIEW_OUTCOME[decision]
    review = {"decision": decision, "by": by, "notes": notes, "at": record.get("createdAt")}
    updated = _transition(db, run_id, target, only_from={RunStatus.AWAITING_HUMAN}, by=by,
                          reason=f"review: {decision}" + (f" ({notes})" if notes else ""),
                          set_fields={"review": review, "finishedAt": record.get("createdAt")})
    if updated is not None:
        record_decision(db, updated, "review", f"{by} {decision}ed the result: run {target.value}", by=by, notes=notes)
    return updated
