"""Dedup records deleted an hour at a time where the server has no TTL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from orchestrator import run_days, seen_retention
from orchestrator.seen_retention import EVENTS_SEEN_TTL_S, bucket_of

NOW = datetime(2026, 12, 3, 12, 30, tzinfo=UTC)


@pytest.fixture
def mock_db(mock_db: Any) -> Any:
    """The unit database without its TTL index: a server that cannot expire (FerretDB)."""
    mock_db.events_seen.drop_index(seen_retention.TTL_INDEX)
    return mock_db


def _records(db: Any, at: datetime, n: int, *, bucketed: bool = True) -> None:
    """Dedup records of a run created at `at` (its day is registered, as the run's creation does)."""
    run_days.register(db, run_days.day_of(at))
    for i in range(n):
        doc = {"source": "s", "eventId": f"{at.isoformat()}-{i}", "runId": "r", "processedAt": at}
        if bucketed:
            doc["bucket"] = bucket_of(at)
        db.events_seen.insert_one(doc)


def test_bucket_is_the_utc_hour() -> None:
    assert bucket_of(datetime(2026, 12, 3, 2, 59, 59, tzinfo=UTC)) == "2026-12-03T02"
    assert bucket_of(datetime(2026, 12, 3, 2, 0)) == "2026-12-03T02"  # naive is UTC, as BSON dates are


def test_only_hours_wholly_past_the_window_go_and_a_second_pass_reads_one_document(mock_db: Any) -> None:
    window = timedelta(seconds=EVENTS_SEEN_TTL_S)
    _records(mock_db, NOW - window - timedelta(hours=3), 2)
    _records(mock_db, NOW - window - timedelta(hours=1), 3)
    _records(mock_db, NOW - window, 4)  # the window's edge is in this hour: kept
    _records(mock_db, NOW - timedelta(hours=1), 5)
    assert sum(seen_retention.prune(mock_db, NOW) for _ in range(60)) == 5
    assert mock_db.events_seen.count_documents({}) == 9
    assert seen_retention.prune(mock_db, NOW) == 0
    marker = mock_db.meta.find_one({"_id": seen_retention.MARKER_ID})
    assert marker["bucket"] == bucket_of(NOW - window - timedelta(hours=1))


def test_one_pass_deletes_at_most_its_share_of_hours_and_the_next_goes_on(mock_db: Any) -> None:
    start = NOW - timedelta(seconds=EVENTS_SEEN_TTL_S) - timedelta(hours=10)
    mock_db.meta.insert_one({"_id": seen_retention.MARKER_ID, "bucket": bucket_of(start - timedelta(hours=1))})
    for hour in range(6):
        _records(mock_db, start + timedelta(hours=hour), 1)
    assert seen_retention.prune(mock_db, NOW, max_hours=4) == 4
    assert seen_retention.prune(mock_db, NOW, max_hours=4) == 2
    assert mock_db.events_seen.count_documents({}) == 0


def test_the_first_pass_starts_far_back_and_later_passes_go_on_from_the_marker(mock_db: Any) -> None:
    _records(mock_db, NOW - timedelta(days=300), 2)  # out of order on purpose: older records written last
    _records(mock_db, NOW - timedelta(days=30), 1)
    passes = [seen_retention.prune(mock_db, NOW) for _ in range(80)]
    # Each pass walks at most MAX_HOURS_PER_PASS hours (an empty hour costs one indexed delete).
    assert sum(passes) == 3 and passes[-1] == 0
    _records(mock_db, NOW, 2)
    assert sum(seen_retention.prune(mock_db, NOW + timedelta(days=8)) for _ in range(3)) == 2


def test_records_older_than_the_field_are_left_to_prune_seen(mock_db: Any) -> None:
    old = NOW - timedelta(days=30)
    _records(mock_db, old, 2, bucketed=False)
    _records(mock_db, old + timedelta(hours=1), 1)
    assert sum(seen_retention.prune(mock_db, NOW) for _ in range(60)) == 1
    assert mock_db.events_seen.count_documents({"bucket": {"$exists": False}}) == 2


def test_nothing_is_pruned_where_the_server_expires_records(mock_db: Any) -> None:
    mock_db.events_seen.create_index("processedAt", name=seen_retention.TTL_INDEX, expireAfterSeconds=10 ** 9)
    _records(mock_db, NOW - timedelta(days=30), 2)
    assert seen_retention.prune(mock_db, NOW) == 0
    assert mock_db.events_seen.count_documents({}) == 2


def test_a_database_without_runs_has_nothing_to_walk(mock_db: Any) -> None:
    assert seen_retention.prune(mock_db, NOW) == 0
    # The newest hour wholly outside the window: the next pass starts after it.
    assert mock_db.meta.find_one({"_id": seen_retention.MARKER_ID})["bucket"] == bucket_of(
        NOW - timedelta(seconds=EVENTS_SEEN_TTL_S) - timedelta(hours=1))


def test_a_pass_out_of_time_stops_after_the_hour_it_is_on_and_marks_it(mock_db: Any) -> None:
    start = NOW - timedelta(seconds=EVENTS_SEEN_TTL_S) - timedelta(hours=10)
    mock_db.meta.insert_one({"_id": seen_retention.MARKER_ID, "bucket": bucket_of(start - timedelta(hours=1))})
    for hour in range(3):
        _records(mock_db, start + timedelta(hours=hour), 2)
    # No time at all still makes progress: one hour per pass, never zero.
    assert [seen_retention.prune(mock_db, NOW, budget_s=0) for _ in range(4)] == [2, 2, 2, 0]
    assert mock_db.meta.find_one({"_id": seen_retention.MARKER_ID})["bucket"] == bucket_of(start + timedelta(hours=3))


def test_pending_hours_counts_down_to_zero_as_passes_catch_up(mock_db: Any) -> None:
    assert seen_retention.pending_hours(mock_db, NOW) == 1  # never pruned
    _records(mock_db, NOW - timedelta(days=20), 1)
    seen_retention.prune(mock_db, NOW, max_hours=24)
    before = seen_retention.pending_hours(mock_db, NOW)
    assert 13 * 24 - 24 <= before <= 14 * 24  # from the oldest run day to the window's edge, less a day
    while seen_retention.pending_hours(mock_db, NOW):
        seen_retention.prune(mock_db, NOW)
    assert mock_db.events_seen.count_documents({}) == 0
    mock_db.events_seen.create_index("processedAt", name=seen_retention.TTL_INDEX, expireAfterSeconds=10 ** 9)
    mock_db.meta.delete_many({})
    assert seen_retention.pending_hours(mock_db, NOW) == 0  # the server expires them itself


def test_a_database_whose_runs_are_all_newer_than_the_window_is_caught_up_after_one_pass(mock_db: Any) -> None:
    _records(mock_db, NOW - timedelta(hours=3), 2)  # today's runs only: nothing to prune yet
    assert seen_retention.pending_hours(mock_db, NOW) == 1  # never pruned
    assert seen_retention.prune(mock_db, NOW) == 0
    assert seen_retention.pending_hours(mock_db, NOW) == 0  # marked, though it deleted nothing
    assert seen_retention.prune(mock_db, NOW + timedelta(days=8)) == 2  # a week on, their hour goes
