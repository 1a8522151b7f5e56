"""A genuine outcome that arrives after the sweeper presumed its attempt lost: applied when the
run was not dispatched again since (ingest took the next attempt's dispatch slot first), kept in
the history for the next attempt to reuse otherwise; decided by a unique insert either way."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from orchestrator import claims, dispatches, runs, status_history
from orchestrator import ingest as engine
from orchestrator.dispatcher import dispatch_once
from orchestrator.sweeper import sweep_once
from orchestrator.utc import utcnow
from tasks.pod.attempt import earlier_verdict
from tests.fakes import FakeSender
from tests.helpers import make_settings, queued_run, start_attempt
from tests.ingest_helpers import Worker, apply, full_run


def _presumed_lost(db: Any, max_attempts: int = 3) -> str:
    """A run whose attempt 1 the sweeper requeued (or failed, with no attempts left) as WorkerLost
    while its worker was finishing."""
    run_id = queued_run(db, max_attempts=max_attempts)
    dispatch_once(db, FakeSender())
    claims.claim_attempt(db, run_id, 1, "pod-a", 1)
    start_attempt(db, run_id, 1, "pod-a")
    db.claims.update_one({"_id": f"{run_id}:1"}, {"$set": {"leaseExpiresAt": utcnow() - timedelta(hours=1)}})
    assert sweep_once(db, make_settings(), FakeSender())["recovered"] == 1
    assert db.runs.find_one({"_id": run_id})["status"] == ("QUEUED" if max_attempts > 1 else "FAILED")
    return run_id


def _decisions(db: Any, run_id: str) -> list[str]:
    return [e["data"]["message"] for e in db.events.find({"runId": run_id, "source": "orchestrator://ingest"})]


def test_a_late_outcome_is_applied_when_the_run_was_not_dispatched_again(mock_db: Any) -> None:
    run_id = _presumed_lost(mock_db)
    apply(mock_db, full_run(Worker(run_id, attempt=1)))
    run = mock_db.runs.find_one({"_id": run_id})
    assert (run["status"], run["attempt"], run["verdict"], run["error"]) == ("AWAITING_HUMAN", 1, "pass", None)
    assert [a["code"] for a in run["attempts"]] == ["WorkerLost"], "the sweeper's decision stays on record"
    last = status_history.of_run(mock_db, run_id)[-1]
    assert (last["from"], last["to"], last["by"], last["attempt"]) == ("QUEUED", "AWAITING_HUMAN", "ingest", 1)
    assert _decisions(mock_db, run_id) == [
        "the outcome of attempt 1 arrived after the sweeper presumed it lost; no attempt 2 had been dispatched, so it "
        "is applied"]
    decision = dispatches.get(mock_db, run_id, 2)
    assert decision["kind"] == dispatches.OUTCOME and decision["appliedAt"] is not None
    sender = FakeSender()
    assert dispatch_once(mock_db, sender) == 0 and sender.sent == []


def test_a_late_outcome_after_the_next_dispatch_stays_in_the_history_for_that_attempt_to_reuse(mock_db: Any) -> None:
    run_id = _presumed_lost(mock_db)
    sender = FakeSender()
    assert dispatch_once(mock_db, sender) == 1
    apply(mock_db, full_run(Worker(run_id, attempt=1)))
    run = mock_db.runs.find_one({"_id": run_id})
    assert (run["status"], run["attempt"]) == ("SCHEDULED", 2)
    assert _decisions(mock_db, run_id) == [
        "the outcome of attempt 1 arrived after the sweeper presumed it lost and attempt 2 was dispatched: it stays "
        "in the history, and attempt 2 reuses the steps attempt 1 completed"]
    assert earlier_verdict(mock_db, run_id)["verdict"] == "pass", "attempt 2 reports this verdict, not a new one"
    assert mock_db.stages.find_one({"_id": f"{run_id}:paper"})["status"] == "COMPLETED"
    assert sender.sent == [(run_id, 2, "gpu", 5)]


def test_the_resend_of_a_batch_that_took_the_slot_but_failed_applies_it(mock_db: Any) -> None:
    run_id = _presumed_lost(mock_db)
    events = full_run(Worker(run_id, attempt=1))
    outcome = next(e for e in events if e["type"] == "ai.validation.auto_completed")
    dispatches.decide(mock_db, run_id, 2, dispatches.OUTCOME, eventId=outcome["id"])  # then the database went away
    assert dispatch_once(mock_db, FakeSender()) == 0, "the slot is taken: no dispatcher sends attempt 2"
    apply(mock_db, events)
    assert mock_db.runs.find_one({"_id": run_id})["status"] == "AWAITING_HUMAN"
    assert dispatches.get(mock_db, run_id, 2)["appliedAt"] is not None


def test_a_run_retried_after_a_late_outcome_is_dispatched_again(mock_db: Any) -> None:
    run_id = _presumed_lost(mock_db)
    apply(mock_db, full_run(Worker(run_id, attempt=1)))
    w = Worker(run_id, attempt=1, n=100)
    apply(mock_db, [w.event("ai.run.failed", code="UploadFailed", message="paper lost", retryable=False)])
    assert mock_db.runs.find_one({"_id": run_id})["status"] == "FAILED"
    runs.retry_run(mock_db, run_id, by="ann")
    sender = FakeSender()
    assert dispatch_once(mock_db, sender) == 1, "the carried-out outcome decision gives its slot back"
    assert sender.sent[0][:2] == (run_id, 2) and dispatches.get(mock_db, run_id, 2)["kind"] == dispatches.DISPATCH


def test_only_an_outcome_of_the_lost_attempt_revives_the_run(mock_db: Any) -> None:
    run_id = _presumed_lost(mock_db)
    w = Worker(run_id, attempt=1)
    apply(mock_db, [w.event("ai.run.stage_progress", stage="Stage_1", progress=0.9)])
    assert mock_db.runs.find_one({"_id": run_id})["status"] == "QUEUED"
    retried = queued_run(mock_db)
    mock_db.runs.update_one({"_id": retried}, {"$set": {"attempt": 1, "error": {"code": "CudaOutOfMemory"}}})
    apply(mock_db, full_run(Worker(retried, attempt=1)))
    assert mock_db.runs.find_one({"_id": retried})["status"] == "QUEUED", "requeued by a failure, not presumed lost"
    assert dispatches.get(mock_db, retried, 2) is None


def test_a_late_outcome_of_a_run_failed_as_lost_is_kept_and_a_retry_uses_it(mock_db: Any) -> None:
    run_id = _presumed_lost(mock_db, max_attempts=1)
    apply(mock_db, full_run(Worker(run_id, attempt=1)))
    assert mock_db.runs.find_one({"_id": run_id})["status"] == "FAILED", "an ended run moves only by a retry"
    assert _decisions(mock_db, run_id) == [
        "the outcome of attempt 1 arrived after the sweeper presumed it lost and the run ended FAILED: it stays in the "
        "history; retry the run to use it, the next attempt reuses the steps attempt 1 completed"]
    runs.retry_run(mock_db, run_id, by="ann")
    assert dispatch_once(mock_db, FakeSender()) == 1
    assert earlier_verdict(mock_db, run_id)["verdict"] == "pass"


def test_a_late_outcome_whose_run_is_canceled_before_it_is_applied_says_so(mock_db: Any, monkeypatch: Any) -> None:
    run_id = _presumed_lost(mock_db)
    real = engine.take_late_outcome

    def then_a_cancel(db: Any, run: Any, event: Any) -> bool:
        taken = real(db, run, event)
        if taken:
            runs.cancel_run(db, run_id, by="ann")
        return taken
    monkeypatch.setattr(engine, "take_late_outcome", then_a_cancel)
    apply(mock_db, full_run(Worker(run_id, attempt=1)))
    assert mock_db.runs.find_one({"_id": run_id})["status"] == "CANCELED"
    assert _decisions(mock_db, run_id) == [
        "the outcome of attempt 1 arrived after the sweeper presumed it lost, and the run moved to CANCELED before it "
        "could be applied: it stays in the history"]


def test_an_outcome_of_an_earlier_attempt_that_was_not_lost_records_no_decision(mock_db: Any) -> None:
    run_id = queued_run(mock_db)
    mock_db.runs.update_one({"_id": run_id}, {"$set": {"status": "RUNNING", "attempt": 2, "attempts": [
        {"attempt": 1, "code": "CudaOutOfMemory", "retryable": True}]}})
    apply(mock_db, [Worker(run_id, attempt=1).event("ai.validation.auto_completed", verdict="pass")])
    assert _decisions(mock_db, run_id) == [] and mock_db.runs.find_one({"_id": run_id})["status"] == "RUNNING"
