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


def _settled_day(db: Any, status: str = "FAILED") -> str:
    """A day two weeks ago with one run, in `status`."""
    when = NOW - timedelta(days=14)
    day = run_days.day_of(when)
    run_days.register(db, day)
    db.runs.insert_one({"_id": f"old-{status}", "status": status, "createdAt": when, run_days.FIELD: day})
    return day


def test_counts_taken_before_a_retry_forgot_the_day_are_not_kept_after_it(mock_db: Any) -> None:
    day = _settled_day(mock_db)
    doc = mock_db[run_days.COLLECTION].find_one({"_id": day})  # read by a sweeper, which counts FAILED 1 ...
    mock_db.runs.update_one({"_id": "old-FAILED"}, {"$set": {"status": "QUEUED"}})
    run_days.forget_counts(mock_db, day)  # ... while a retry moves the run and forgets the day
    run_days.keep_counts(mock_db, doc, {"FAILED": 1}, NOW + timedelta(days=1))  # the sweeper's keep lands late
    assert "counts" not in mock_db[run_days.COLLECTION].find_one({"_id": day})
    assert run_counts.refresh(mock_db, NOW)
    counts, _ = run_counts.by_status(mock_db, NOW)
    assert (counts["FAILED"], counts["QUEUED"]) == (0, 1)  # counted once, as what it is now


def test_a_day_with_a_run_in_flight_is_counted_each_time_and_kept_once_it_ends(mock_db: Any) -> None:
    day = _settled_day(mock_db, "AWAITING_HUMAN")  # a long review: the day is not settled
    assert run_counts.refresh(mock_db, NOW)
    assert "counts" not in mock_db[run_days.COLLECTION].find_one({"_id": day})
    mock_db.runs.update_one({"_id": "old-AWAITING_HUMAN"}, {"$set": {"status": "HUMAN_VALIDATED"}})
    later = NOW + timedelta(seconds=run_counts.REFRESH_S + 1)
    assert run_counts.refresh(mock_db, later)
    assert run_counts.by_status(mock_db, later)[0]["HUMAN_VALIDATED"] == 1
    kept = mock_db[run_days.COLLECTION].find_one({"_id": day})
    assert kept["counts"]["HUMAN_VALIDATED"] == 1
    # Kept between half and all of DAY_CACHE_S, so a year of days does not expire in one pass.
    left = (kept["countsUntil"].replace(tzinfo=UTC) - later).total_seconds()
    assert run_counts.DAY_CACHE_S / 2 <= left <= run_counts.DAY_CACHE_S


def test_kept_counts_expire_and_are_counted_again(mock_db: Any) -> None:
    day = _settled_day(mock_db)
    assert run_counts.refresh(mock_db, NOW)
    mock_db.runs.insert_one({"_id": "slipped-in", "status": "FAILED", run_days.FIELD: day})  # a change nobody forgot
    later = NOW + timedelta(seconds=run_counts.DAY_CACHE_S + 1)
    assert run_counts.refresh(mock_db, later)
    assert run_counts.by_status(mock_db, later)[0]["FAILED"] == 2
