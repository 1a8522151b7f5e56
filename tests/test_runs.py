"""orchestrator/runs.py: the one writer of a run's status. Each writer's move is guarded by the
transition table and by what the writer saw, so a second writer racing it changes nothing."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from orchestrator import claims, runs
from orchestrator.errors import NotFound, TransitionError
from orchestrator.events import SEQ_BLOCK
from orchestrator.statuses import RunStatus
from orchestrator.utc import utcnow
from tests.helpers import queued_run, start_attempt


def _status(db: Any, run_id: str) -> tuple[str, int]:
    run = db.runs.find_one({"_id": run_id})
    return run["status"], run["attempt"]


def _scheduled(db: Any) -> str:
    run_id = queued_run(db)
    assert runs.schedule(db, db.runs.find_one({"_id": run_id}), "task-1") is not None
    return run_id


def test_a_new_run_is_queued_with_the_defaults_and_its_hypothesis() -> None:
    run = runs.new_run_document("h-1")
    assert (run["status"], run["attempt"], run["priority"], run["queue"], run["pipeline"], run["maxAttempts"]) == (
        "QUEUED", 0, 5, "gpu", "demo", 3)
    with pytest.raises(ValueError, match="priority must be 0..9"):
        runs.new_run_document("h-1", priority=10)


def test_an_unknown_run_is_not_found_naming_the_id(mock_db: Any) -> None:
    with pytest.raises(NotFound, match="'nope'"):
        runs.get_run(mock_db, "nope")


def test_schedule_takes_the_next_attempt_once_for_one_view_of_the_run(mock_db: Any) -> None:
    run_id = queued_run(mock_db)
    seen = mock_db.runs.find_one({"_id": run_id})
    first = runs.schedule(mock_db, seen, "task-1")
    assert first is not None and (first["status"], first["attempt"], first["taskId"]) == ("SCHEDULED", 1, "task-1")
    assert runs.schedule(mock_db, seen, "task-2") is None  # a second dispatcher with the same view
    assert _status(mock_db, run_id) == ("SCHEDULED", 1)


def test_a_failed_send_is_flagged_only_on_the_attempt_that_was_sent(mock_db: Any) -> None:
    run_id = _scheduled(mock_db)
    runs.note_send_failed(mock_db, run_id, 1, "another-task", "ConnectionError: down")
    assert mock_db.runs.find_one({"_id": run_id}).get("sendFailedAt") is None
    runs.note_send_failed(mock_db, run_id, 1, "task-1", "ConnectionError: down")
    run = mock_db.runs.find_one({"_id": run_id})
    assert (run["status"], run["attempt"], run["sendError"]) == ("SCHEDULED", 1, "ConnectionError: down")
    assert run["sendFailedAt"] is not None


def _lost(db: Any, run_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    claim = claims.claim_attempt(db, run_id, 1, "pod-dead", lease_s=0.01)
    assert claim is not None
    start_attempt(db, run_id, 1, "pod-dead")
    return db.runs.find_one({"_id": run_id}), claim


def test_a_lost_attempt_with_attempts_left_is_requeued_at_once_keeping_the_failure(mock_db: Any) -> None:
    run, claim = _lost(mock_db, _scheduled(mock_db))
    moved = runs.end_lost_attempt(mock_db, run, claim, utcnow())
    assert moved is not None and (moved["status"], moved["attempt"]) == ("QUEUED", 1)
    assert moved["error"]["code"] == "WorkerLost" and moved["error"]["retryable"] is True
    assert moved.get("notBefore") is None and len(moved["attempts"]) == 1
    assert runs.end_lost_attempt(mock_db, run, claim, utcnow()) is None  # a second sweeper


def test_a_lost_last_attempt_fails_the_run(mock_db: Any) -> None:
    run_id = _scheduled(mock_db)
    mock_db.runs.update_one({"_id": run_id}, {"$set": {"maxAttempts": 1}})
    run, claim = _lost(mock_db, run_id)
    moved = runs.end_lost_attempt(mock_db, run, claim, utcnow())
    assert moved is not None and moved["status"] == "FAILED" and moved["error"]["retryable"] is False
    assert moved["finishedAt"] is not None


def test_an_events_status_update_moves_forward_only_and_only_for_the_current_attempt() -> None:
    query, update = runs.event_status_update("r", 2, 2 * SEQ_BLOCK + 7, RunStatus.RUNNING, {"x": 1})
    assert query["_id"] == "r" and query["attempt"] == 2
    sources = query["$or"][0]["status"]["$in"]
    assert "STARTING" in sources and "SCHEDULED" in sources
    assert "QUEUED" not in sources and "FAILED" not in sources and "AUTO_VALIDATING" not in sources
    assert update == {"$set": {"status": "RUNNING", "statusSeq": 2 * SEQ_BLOCK + 7, "x": 1}}


def test_an_edge_the_table_lacks_is_refused_before_any_write(mock_db: Any) -> None:
    run_id = queued_run(mock_db)
    with pytest.raises(TransitionError, match="cannot move from HUMAN_VALIDATED to RUNNING"):
        runs._transition(mock_db, run_id, RunStatus.RUNNING, only_from={RunStatus.HUMAN_VALIDATED}, by="test", reason="r")
    assert _status(mock_db, run_id) == ("QUEUED", 0)


def test_canceling_a_scheduled_run_also_asks_a_worker_that_claimed_it_to_stop(mock_db: Any) -> None:
    run_id = _scheduled(mock_db)
    assert runs.cancel_run(mock_db, run_id, by="alice")["status"] == "CANCELED"
    assert claims.cancel_requested(mock_db, run_id, 1)["by"] == "alice"


def test_cancel_ends_a_waiting_run_at_once_and_asks_an_active_one_to_stop(mock_db: Any) -> None:
    waiting = queued_run(mock_db)
    assert runs.cancel_run(mock_db, waiting, by="alice", reason="typo")["status"] == "CANCELED"
    active = _scheduled(mock_db)
    start_attempt(mock_db, active, 1, "pod-a")
    asked = runs.cancel_run(mock_db, active, by="bob")
    assert asked["status"] == "STARTING" and asked["cancelRequested"] is True
    assert claims.cancel_requested(mock_db, active, 1)["by"] == "bob"
    with pytest.raises(TransitionError, match="nothing to cancel"):
        runs.cancel_run(mock_db, waiting)


def test_retry_queues_an_ended_run_again_and_raises_its_attempt_budget(mock_db: Any) -> None:
    run_id = _scheduled(mock_db)
    mock_db.runs.update_one({"_id": run_id}, {"$set": {"status": "FAILED", "maxAttempts": 1, "error": {"code": "X"}}})
    retried = runs.retry_run(mock_db, run_id, by="ops")
    assert (retried["status"], retried["attempt"], retried["maxAttempts"]) == ("QUEUED", 1, 2)
    assert "error" not in retried
    with pytest.raises(TransitionError, match="only FAILED or CANCELED"):
        runs.retry_run(mock_db, run_id)


def test_every_decision_goes_into_the_history_before_the_attempts_own_events(mock_db: Any) -> None:
    run_id = queued_run(mock_db)
    runs.cancel_run(mock_db, run_id, by="alice", reason="typo")
    [record] = list(mock_db.events.find({"runId": run_id}))
    assert record["source"] == "orchestrator://api" and record["seq"] == 0 and record["type"] == "ai.run.log"
    assert record["data"]["kv"] == {"by": "alice", "reason": "typo"}
    assert record["time"] <= utcnow() + timedelta(seconds=1)
