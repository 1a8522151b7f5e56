"""`manage-runs archive`: the events of finished runs move to `events_archive`, and every reader
still shows them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner

from ops.cli import main
from orchestrator import event_history, queries
from orchestrator.event_history import ARCHIVE, LIVE
from tests.ingest_helpers import T0, insert_run

LATER = T0 + timedelta(days=30)


def _events(db: Any, run_id: str, seqs: range, **extra: Any) -> None:
    db[LIVE].insert_many([{"_id": f"{run_id}-{seq}", "source": "s", "eventId": f"{run_id}-{seq}",
                           "runId": run_id, "seq": seq, "type": "ai.run.log",
                           "time": T0 + timedelta(seconds=seq), "receivedAt": T0 + timedelta(seconds=seq),
                           "data": {"message": f"m{seq}"}, **extra} for seq in seqs])


def test_only_finished_runs_created_before_the_date_are_archived(mock_db: Any) -> None:
    done = insert_run(mock_db, status="FAILED")
    running = insert_run(mock_db, status="RUNNING")
    waiting = insert_run(mock_db, status="AWAITING_HUMAN")
    newer = insert_run(mock_db, status="CANCELED")
    mock_db.runs.update_one({"_id": newer}, {"$set": {"createdAt": LATER}})
    for run_id in (done, running, waiting, newer):
        _events(mock_db, run_id, range(1, 4))
    assert event_history.archive(mock_db, T0 + timedelta(days=1)) == {"runs": 1, "events": 3}
    assert mock_db[ARCHIVE].count_documents({}) == 3 == mock_db[ARCHIVE].count_documents({"runId": done})
    assert mock_db[LIVE].count_documents({"runId": done}) == 0
    assert mock_db.runs.find_one({"_id": done})["eventsArchivedAt"] is not None
    assert event_history.archive(mock_db, T0 + timedelta(days=1)) == {"runs": 0, "events": 0}


def test_the_run_page_reads_an_archived_history_and_events_that_arrived_after(mock_db: Any) -> None:
    run_id = insert_run(mock_db, status="HUMAN_VALIDATED")
    _events(mock_db, run_id, range(1, 6))
    _events(mock_db, run_id, range(6, 7), deadLetter=True)
    event_history.archive(mock_db, LATER)
    _events(mock_db, run_id, range(7, 9))  # a pod's spool replayed after the archive
    detail = queries.run_detail(mock_db, run_id, events=4)
    assert [e["seq"] for e in detail["recentEvents"]] == [5, 6, 7, 8]
    assert detail["deadLetters"] == 1 and queries.dead_letter_summary(mock_db)["total"] == 1
    assert [e["seq"] for e in queries.events_after(mock_db, run_id, 3, limit=3)] == [4, 5, 6]
    assert [e["seq"] for e in queries.event_log(mock_db, run_id, limit=0)] == list(range(1, 9))
    assert [e["seq"] for e in queries.event_log(mock_db, run_id, limit=2, up_to_seq=6)] == [5, 6]


def test_an_interrupted_archive_finishes_without_losing_or_doubling_an_event(mock_db: Any,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    run_id = insert_run(mock_db, status="FAILED")
    _events(mock_db, run_id, range(1, 8))
    monkeypatch.setattr(event_history, "BATCH", 3)
    real_delete = mock_db[LIVE].delete_many
    calls = {"n": 0}

    def dies_on_second_delete(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("pod killed between the copy and the delete")
        return real_delete(*args, **kwargs)

    monkeypatch.setattr(type(mock_db[LIVE]), "delete_many", lambda self, *a, **k: dies_on_second_delete(*a, **k))
    with pytest.raises(RuntimeError):
        event_history.archive(mock_db, LATER)
    monkeypatch.undo()
    # Meanwhile the first batch is in both collections: every reader shows it once.
    assert mock_db[ARCHIVE].count_documents({}) == 6 and mock_db[LIVE].count_documents({}) == 4
    assert [e["seq"] for e in queries.event_log(mock_db, run_id, limit=0)] == list(range(1, 8))
    assert [e["seq"] for e in queries.run_detail(mock_db, run_id, events=3)["recentEvents"]] == [5, 6, 7]
    assert event_history.count(mock_db, {"runId": run_id}) == 7
    assert event_history.archive(mock_db, LATER)["runs"] == 1
    assert mock_db[LIVE].count_documents({}) == 0
    assert sorted(e["seq"] for e in mock_db[ARCHIVE].find()) == list(range(1, 8))


def test_manage_runs_archive(cli_db: Any) -> None:
    run_id = insert_run(cli_db, status="FAILED")
    _events(cli_db, run_id, range(1, 3))
    result = CliRunner().invoke(main, ["--json", "archive", "--before", (T0 + timedelta(days=1)).strftime("%Y-%m-%d")])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"runs": 1, "events": 2, "before": "2026-03-02T00:00:00+00:00"}
    human = CliRunner().invoke(main, ["archive", "--before", "2026-03-02"])
    assert human.exit_code == 0 and "archived 0 events of 0 finished runs" in human.output
    bad = CliRunner().invoke(main, ["archive", "--before", "yesterday"])
    assert bad.exit_code == 2 and "--before" in bad.output


def test_merged_order_puts_a_missing_value_first_ascending() -> None:
    docs = [{"seq": 2, "time": datetime(2026, 1, 1, tzinfo=UTC)}, {"seq": None}, {"seq": 1, "time": datetime(2026, 1, 1)}]
    assert [d["seq"] for d in event_history._sorted(docs, [("seq", 1)])] == [None, 1, 2]
    assert [d["seq"] for d in event_history._sorted(docs, [("seq", -1), ("time", -1)])] == [2, 1, None]


def test_an_event_resent_after_its_run_was_archived_is_shown_once(mock_db: Any) -> None:
    run_id = insert_run(mock_db, status="FAILED")
    _events(mock_db, run_id, range(1, 3), deadLetter=True)
    event_history.archive(mock_db, LATER)
    _events(mock_db, run_id, range(2, 3), deadLetter=True)  # a pod whose last response was lost sends it again
    assert [e["seq"] for e in queries.event_log(mock_db, run_id, limit=0)] == [1, 2]
    assert queries.run_detail(mock_db, run_id, events=5)["deadLetters"] == 2
    assert queries.dead_letter_summary(mock_db)["total"] == 2
    without_ids = event_history.find(mock_db, {"runId": run_id}, [("seq", 1)], 0, {"_id": 0, "seq": 1})
    assert [e["seq"] for e in without_ids] == [1, 2, 2]  # nothing to tell copies apart by: all kept


def test_a_run_retried_after_it_was_listed_keeps_its_events_until_it_ends_again(mock_db: Any) -> None:
    from orchestrator.runs import retry_run

    run_id = insert_run(mock_db, status="FAILED")
    _events(mock_db, run_id, range(1, 3))
    assert [r["_id"] for r in event_history.archivable(mock_db, LATER)] == [run_id]
    retry_run(mock_db, run_id)  # between the listing and its turn
    assert event_history.archive_run(mock_db, run_id) == 0
    assert mock_db[LIVE].count_documents({}) == 3  # its two and the retry's decision
    mock_db.runs.update_one({"_id": run_id}, {"$set": {"status": "FAILED"}})
    assert event_history.archive(mock_db, LATER) == {"runs": 1, "events": 3}
    retry_run(mock_db, run_id)  # an archived run retried: its next events are archived when it ends again
    assert "eventsArchivedAt" not in mock_db.runs.find_one({"_id": run_id})


def test_archive_is_refused_before_the_migration(cli_db: Any) -> None:
    from orchestrator import schema

    run_id = insert_run(cli_db, status="FAILED")
    _events(cli_db, run_id, range(1, 3))
    cli_db[schema.META].update_one({"_id": "schema"}, {"$set": {"version": 2}}, upsert=True)
    result = CliRunner().invoke(main, ["archive", "--before", "2026-03-02"])
    assert result.exit_code == 2 and "schema version is 2; run `manage-runs migrate`" in result.output
    assert cli_db[LIVE].count_documents({}) == 2 and cli_db[ARCHIVE].count_documents({}) == 0
