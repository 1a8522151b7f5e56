"""The status history: one keyed document per change, by whom and why, from every writer
(dispatcher, worker, ingest, sweeper, a person through the API or CLI), consistent as a chain."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pymongo.errors import AutoReconnect

import pipeline
from orchestrator import claims, queries, runs, status_history
from orchestrator import ingest as engine
from orchestrator.dispatcher import dispatch_once
from orchestrator.storage import LocalStorage
from orchestrator.sweeper import sweep_once
from orchestrator.utc import utcnow
from pipeline.base import Pipeline, Step
from tasks.pod.attempt import Attempt
from tasks.pod.runtime import Runtime
from tests.fakes import FakeSender, InProcessEmitter
from tests.helpers import make_settings, queued_run, start_attempt, status_chain
from tests.ingest_helpers import Worker, apply, full_run, insert_run


def _step(ctx: Any) -> dict[str, Any]:
    ctx.validation_started("m", "1")
    ctx.report_verdict("pass", {"overall": 7.0}, "ok")
    return {"verdict": "pass"}


def test_a_run_end_to_end_records_each_writer_s_change_in_order(mock_db: Any, tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.setitem(pipeline.PIPELINES, "h", lambda: Pipeline("h", (Step("auto_validation", _step),)))
    run_id = runs.create_hypothesis_and_run(mock_db, "t", "i", pipeline="h")[1]
    dispatch_once(mock_db, FakeSender())
    rt = Runtime(settings=make_settings(WORK_DIR=str(tmp_path)), db=mock_db, emitter=InProcessEmitter(mock_db),
                 storage=LocalStorage(tmp_path / "art"), on_fence_deadline=lambda: None)
    assert Attempt(rt, run_id, 1).execute() == "completed"
    changes = status_chain(mock_db)(run_id)
    assert [(c["from"], c["to"], c["by"]) for c in changes][:2] == [("QUEUED", "SCHEDULED", "dispatcher"),
                                                                      ("SCHEDULED", "STARTING", "ingest")]
    assert changes[-1]["to"] == "AWAITING_HUMAN" and changes[-1]["by"] == "ingest"
    assert "ai.validation.auto_completed" in changes[-1]["reason"] and "ai.run.started" in changes[1]["reason"]
    assert queries.run_detail(mock_db, run_id)["statusHistory"] == changes


def test_the_sweeper_and_a_person_are_named(mock_db: Any) -> None:
    run_id = queued_run(mock_db, max_attempts=1)
    dispatch_once(mock_db, FakeSender())
    claims.claim_attempt(mock_db, run_id, 1, "pod-dead", 1)
    start_attempt(mock_db, run_id, 1, "pod-dead")
    mock_db.claims.update_one({"_id": f"{run_id}:1"}, {"$set": {"leaseExpiresAt": utcnow() - timedelta(hours=1)}})
    sweep_once(mock_db, make_settings(), FakeSender())
    runs.retry_run(mock_db, run_id, by="alice@example.org", reason="the pod was fixed")
    runs.cancel_run(mock_db, run_id, by="bob@example.org", reason="not needed")
    changes = status_chain(mock_db)(run_id)
    lost, retried, canceled = changes[2:]
    assert (lost["to"], lost["by"]) == ("FAILED", "sweeper") and "WorkerLost" in lost["reason"]
    assert (retried["by"], retried["reason"]) == ("alice@example.org", "the pod was fixed")
    assert (canceled["from"], canceled["to"], canceled["by"]) == ("QUEUED", "CANCELED", "bob@example.org")


def test_ingest_records_a_change_once_however_often_the_batch_comes(mock_db: Any) -> None:
    run_id = insert_run(mock_db, status="STARTING")
    events = full_run(Worker(run_id))
    apply(mock_db, events)
    mock_db.events_seen.delete_many({})
    apply(mock_db, events)  # a resend after the dedup records were lost
    changes = status_history.of_run(mock_db, run_id)
    assert [(c["from"], c["to"], c["by"], c["attempt"]) for c in changes] == [
        ("STARTING", "RUNNING", "ingest", 1), ("RUNNING", "AUTO_VALIDATING", "ingest", 1),
        ("AUTO_VALIDATING", "AWAITING_HUMAN", "ingest", 1)], "each step of one batch, once"
    assert [c["reason"].split()[0] for c in changes] == [
        "ai.run.stage_completed", "ai.validation.auto_started", "ai.validation.auto_completed"]


def test_a_change_another_writer_made_is_not_ingest_s(mock_db: Any) -> None:
    run_id = insert_run(mock_db, status="RUNNING")
    w = Worker(run_id)
    apply(mock_db, [w.event("ai.run.stage_started", stage="Stage_1")])  # RUNNING stays RUNNING: no change
    mock_db.runs.update_one({"_id": run_id}, {"$set": {"status": "QUEUED"}})  # a sweeper, say, behind ingest's back
    apply(mock_db, [w.event("ai.run.stage_progress", stage="Stage_1", progress=0.5)])
    assert status_history.of_run(mock_db, run_id) == []


def _first_try_dies(db: Any, monkeypatch: Any, owner: Any, name: str, broken: Any, events: list[Any]) -> Any:
    """Ingest `events` with `owner.name` replaced by `broken` (which raises, as a database dying
    mid-batch would), then put it back; the run as the failed try left it."""
    real = getattr(owner, name)
    monkeypatch.setattr(owner, name, broken)
    with pytest.raises(AutoReconnect):
        apply(db, events)
    monkeypatch.setattr(owner, name, real)
    return db.runs.find_one({"_id": events[0]["data"]["run_id"]})


def test_a_change_applied_but_not_recorded_is_recorded_by_the_resend(mock_db: Any, monkeypatch: Any) -> None:
    """The database fails between a batch's status update and its history entry: the resend
    finds the change made, and its entry starts where the history ends."""
    run_id = insert_run(mock_db, status="STARTING")
    status_history.record(mock_db, run_id, "c1", before="SCHEDULED", after="STARTING", by="worker", attempt=1,
                          reason="claimed", at=utcnow())
    events = full_run(Worker(run_id))

    def down(*_: Any, **__: Any) -> None:
        raise AutoReconnect("connection refused")

    assert _first_try_dies(mock_db, monkeypatch, status_history, "record", down, events)["status"] == "AWAITING_HUMAN"
    apply(mock_db, events)
    changes = status_history.of_run(mock_db, run_id)
    assert [(c["from"], c["to"], c["by"]) for c in changes] == [
        ("SCHEDULED", "STARTING", "worker"), ("STARTING", "RUNNING", "ingest"), ("RUNNING", "AUTO_VALIDATING", "ingest"),
        ("AUTO_VALIDATING", "AWAITING_HUMAN", "ingest")], "every step the first try made"
    apply(mock_db, events)
    assert len(status_history.of_run(mock_db, run_id)) == 4, "a third send records nothing more"


def test_a_batch_half_applied_when_the_database_died_is_recorded_whole_by_the_resend(mock_db: Any, monkeypatch: Any) -> None:
    """The first try's updates stopped half-way (the run reached AUTO_VALIDATING, not yet
    AWAITING_HUMAN) and nothing was recorded: the resend records the first try's change, then
    its own (seen on FerretDB when the server was killed between two update commands)."""
    run_id = insert_run(mock_db, status="RUNNING")
    w = Worker(run_id, n=10)
    status_history.record(mock_db, run_id, "c1", before="STARTING", after="RUNNING", by="ingest", attempt=1,
                          reason="started", at=utcnow())
    batch = [w.event("ai.run.stage_started", stage="auto_validation"),
             w.event("ai.validation.auto_started", model="m", rubric_version="1"),
             w.event("ai.validation.auto_completed", verdict="pass", scores={}, notes=""),
             w.event("ai.run.stage_completed", stage="auto_validation", duration_s=1.0, summary={})]
    real = engine._update_all

    def dies_after_the_second_status_update(db: Any, collection: str, updates: Any, per_command: int) -> None:
        if collection != "runs":
            return real(db, collection, updates, per_command)
        cut = next(i for i, u in enumerate(updates) if u.supersedes and u.supersedes[2:4] == ("status", "AWAITING_HUMAN"))
        real(db, collection, updates[:cut], per_command)
        raise AutoReconnect("connection closed")

    first_try = _first_try_dies(mock_db, monkeypatch, engine, "_update_all", dies_after_the_second_status_update, batch)
    assert first_try["status"] == "AUTO_VALIDATING"
    apply(mock_db, batch)
    assert [(c["from"], c["to"]) for c in status_history.of_run(mock_db, run_id)] == [
        ("STARTING", "RUNNING"), ("RUNNING", "AUTO_VALIDATING"), ("AUTO_VALIDATING", "AWAITING_HUMAN")]


def test_recent_changes_are_asked_for_a_day_at_a_time() -> None:
    from datetime import UTC, datetime, timedelta

    from orchestrator.status_history import days_between

    now = datetime(2026, 12, 3, 0, 30, tzinfo=UTC)
    assert days_between(now - timedelta(hours=1), now) == ["2026-12-03", "2026-12-02"]
    assert days_between(now - timedelta(minutes=10), now) == ["2026-12-03"]
    assert len(days_between(now - timedelta(days=6), now)) == 7
