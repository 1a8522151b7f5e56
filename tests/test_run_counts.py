"""Runs per status: live statuses counted at each call, terminal ones from the sweeper's count."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from orchestrator import run_counts, run_days
from orchestrator.statuses import RunStatus

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def _runs(db: Any, status: str, n: int) -> None:
    """Runs past the dispatcher (keyed by their day; these have no creation time: the undated day)."""
    made = [{"_id": f"{status}-{i}-{db.runs.count_documents({})}", "status": status} for i in range(n)]
    db.runs.insert_many(made)
    for run in made:
        run_days.stamp(db, run)


def test_every_status_is_listed_in_the_status_tables_order(mock_db: Any) -> None:
    _runs(mock_db, "QUEUED", 2)
    _runs(mock_db, "FAILED", 3)
    counts, counted_at = run_counts.by_status(mock_db, NOW)
    assert list(counts) == [s.value for s in RunStatus]
    assert (counts["QUEUED"], counts["FAILED"], counts["RUNNING"]) == (2, 3, 0)
    assert counted_at == NOW


def test_live_statuses_are_exact_and_terminal_ones_come_from_the_stored_count(mock_db: Any) -> None:
    _runs(mock_db, "FAILED", 3)
    run_counts.by_status(mock_db, NOW)  # no count stored: counted and stored now
    _runs(mock_db, "FAILED", 2)
    _runs(mock_db, "RUNNING", 4)
    later = NOW + timedelta(seconds=30)
    counts, counted_at = run_counts.by_status(mock_db, later)
    assert (counts["FAILED"], counts["RUNNING"], counted_at) == (3, 4, NOW)


def test_the_sweeper_refreshes_a_count_older_than_a_minute_and_only_then(mock_db: Any) -> None:
    _runs(mock_db, "CANCELED", 1)
    assert run_counts.refresh(mock_db, NOW) is True
    _runs(mock_db, "CANCELED", 1)
    assert run_counts.refresh(mock_db, NOW + timedelta(seconds=30)) is False
    assert run_counts.by_status(mock_db, NOW + timedelta(seconds=30))[0]["CANCELED"] == 1
    assert run_counts.refresh(mock_db, NOW + timedelta(seconds=run_counts.REFRESH_S + 1)) is True
    assert run_counts.by_status(mock_db, NOW + timedelta(seconds=61))[0]["CANCELED"] == 2


def test_a_reader_recounts_when_no_sweeper_has_for_too_long(mock_db: Any) -> None:
    run_counts.refresh(mock_db, NOW)
    _runs(mock_db, "HUMAN_VALIDATED", 2)
    stale = NOW + timedelta(seconds=run_counts.STALE_S + 1)
    counts, counted_at = run_counts.by_status(mock_db, stale)
    assert (counts["HUMAN_VALIDATED"], counted_at) == (2, stale)


def test_a_damaged_stored_count_is_counted_again(mock_db: Any) -> None:
    _runs(mock_db, "FAILED", 1)
    mock_db.meta.insert_one({"_id": run_counts.SNAPSHOT_ID, "counts": {"FAILED": "many"}, "at": NOW})
    assert run_counts.by_status(mock_db, NOW)[0]["FAILED"] == 1
