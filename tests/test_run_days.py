"""Runs keyed by the day they were created: the run list reads a day at a time, the terminal
counts are summed per day, a frontend's run is stamped by the dispatcher."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from orchestrator import run_counts, run_days, run_list, schema
from orchestrator.dispatcher import dispatch_once
from orchestrator.runs import create_hypothesis_and_run, new_run_document, retry_run
from tests.fakes import FakeSender

DAY0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def _run_on(db: Any, when: datetime, status: str = "FAILED", pipeline: str = "demo") -> str:
    _, run_id = create_hypothesis_and_run(db, "t", "i", pipeline=pipeline)
    day = run_days.day_of(when)
    run_days.register(db, day)
    db.runs.update_one({"_id": run_id}, {"$set": {"createdAt": when, run_days.FIELD: day, "status": status}})
    return run_id


def _all_pages(db: Any, wanted: run_list.RunFilter, size: int) -> list[str]:
    seen, cursor = [], None
    while True:
        page, cursor = run_list.page(db, wanted, cursor, size)
        seen += [r["_id"] for r in page]
        if cursor is None:
            return seen


def test_pages_walk_the_days_newest_first_without_gaps_or_repeats(mock_db: Any) -> None:
    made = [_run_on(mock_db, DAY0 + timedelta(days=d, minutes=m)) for d in (0, 0, 3, 3, 3, 9) for m in (d,)]
    made += [_run_on(mock_db, DAY0 + timedelta(days=40))]
    mock_db[run_days.COLLECTION].insert_one({"_id": "2026-11-05"})  # a day whose run insert never happened
    expected = [r["_id"] for r in sorted(mock_db.runs.find(), key=lambda r: (r["createdAt"], r["_id"]), reverse=True)]
    for size in (1, 2, 3, 50):
        assert _all_pages(mock_db, run_list.RunFilter(), size) == expected
    assert len(expected) == len(made) == 7


def test_filters_apply_within_each_day(mock_db: Any) -> None:
    keep = [_run_on(mock_db, DAY0 + timedelta(days=d), pipeline="noop") for d in (1, 5)]
    for d in (0, 2, 5):
        _run_on(mock_db, DAY0 + timedelta(days=d))
    assert _all_pages(mock_db, run_list.RunFilter(pipeline="noop"), 1) == list(reversed(keep))
    queued = _run_on(mock_db, DAY0 + timedelta(days=3), status="QUEUED")
    assert _all_pages(mock_db, run_list.RunFilter(statuses=("QUEUED", "RUNNING")), 5) == [queued]


def test_a_frontend_run_is_keyed_by_the_first_reader_or_dispatcher_that_sees_it(mock_db: Any) -> None:
    _run_on(mock_db, DAY0)
    listed, dispatched = new_run_document("h-frontend"), new_run_document("h-frontend")
    for run in (listed, dispatched):
        del run[run_days.FIELD]  # as a frontend inserts it
        mock_db.runs.insert_one(run)
    dispatch_once(mock_db, FakeSender(), queue="elsewhere")  # serves another queue: sees neither
    undated = new_run_document("h-frontend")
    del undated[run_days.FIELD], undated["createdAt"]  # a malformed insert: listed last, as a sort would
    mock_db.runs.insert_one(undated)
    assert _all_pages(mock_db, run_list.RunFilter(), 1)[-1] == undated["_id"]  # the list stamps QUEUED runs
    assert {listed["_id"], dispatched["_id"]} <= set(_all_pages(mock_db, run_list.RunFilter(), 10))
    mock_db.runs.update_one({"_id": dispatched["_id"]}, {"$unset": {run_days.FIELD: ""}})
    dispatch_once(mock_db, FakeSender())
    assert mock_db.runs.find_one({"_id": dispatched["_id"]})[run_days.FIELD] == run_days.day_of(dispatched["createdAt"])


def test_terminal_counts_are_summed_per_day_and_settled_days_keep_theirs(mock_db: Any) -> None:
    now = DAY0 + timedelta(days=10)
    old = _run_on(mock_db, DAY0, "FAILED")
    _run_on(mock_db, DAY0, "CANCELED")
    _run_on(mock_db, DAY0 + timedelta(days=2), "FAILED")
    _run_on(mock_db, DAY0 + timedelta(days=2), "RUNNING")  # this day is not settled
    _run_on(mock_db, now, "HUMAN_VALIDATED")  # today: never settled
    assert run_counts.refresh(mock_db, now)
    counts, _ = run_counts.by_status(mock_db, now)
    assert (counts["FAILED"], counts["CANCELED"], counts["HUMAN_VALIDATED"], counts["RUNNING"]) == (2, 1, 1, 1)
    cached = {d["_id"]: d.get("counts") for d in mock_db[run_days.COLLECTION].find()}
    assert cached[run_days.day_of(DAY0)] == {"CANCELED": 1, "FAILED": 1, "HUMAN_REJECTED": 0, "HUMAN_VALIDATED": 0}
    assert cached[run_days.day_of(DAY0 + timedelta(days=2))] is None and cached[run_days.day_of(now)] is None
    retry_run(mock_db, old)  # leaves FAILED: the day's counts are forgotten, and the next count sees it
    later = now + timedelta(seconds=run_counts.REFRESH_S + 1)
    assert run_counts.refresh(mock_db, later)
    counts, _ = run_counts.by_status(mock_db, later)
    assert (counts["FAILED"], counts["QUEUED"]) == (1, 1)


def test_the_migration_keys_earlier_runs_by_day(mock_db: Any) -> None:
    for d in (0, 1):
        run = new_run_document("h")
        del run[run_days.FIELD]
        run["createdAt"] = DAY0 + timedelta(days=d)
        mock_db.runs.insert_one(run)
    mock_db.runs.insert_one({"_id": "undated", "status": "FAILED"})
    mock_db[schema.META].update_one({"_id": "schema"}, {"$set": {"version": 2}})
    assert not schema.keyed_by_day(mock_db)
    assert len(_all_pages(mock_db, run_list.RunFilter(), 1)) == 3  # before the migration: every run, by one sort
    assert schema.migrate(mock_db)["runsKeyedByDay"] == 3
    assert run_days.days(mock_db) == ["2026-11-02", "2026-11-01", run_days.UNDATED]
    assert schema.keyed_by_day(mock_db)
    assert _all_pages(mock_db, run_list.RunFilter(), 1)[-1] == "undated"  # its day comes last


def test_a_frontend_run_canceled_before_anything_stamped_it_is_still_listed_and_counted(mock_db: Any) -> None:
    from orchestrator.runs import cancel_run

    run = new_run_document("h-frontend")
    del run[run_days.FIELD]  # inserted by a frontend; no reader, no dispatcher has seen it
    run["createdAt"] = DAY0
    mock_db.runs.insert_one(run)
    cancel_run(mock_db, run["_id"], by="operator")
    assert mock_db.runs.find_one({"_id": run["_id"]})[run_days.FIELD] == run_days.day_of(DAY0)
    assert _all_pages(mock_db, run_list.RunFilter(), 5) == [run["_id"]]
    assert run_counts.refresh(mock_db, DAY0 + timedelta(days=3))
    assert run_counts.by_status(mock_db, DAY0 + timedelta(days=3))[0]["CANCELED"] == 1


def test_a_filter_of_runs_in_flight_reads_each_status_whole_not_every_day(mock_db: Any, monkeypatch: Any) -> None:
    from bson import ObjectId

    when = DAY0 + timedelta(days=5)
    running = [_run_on(mock_db, DAY0 + timedelta(days=d), "RUNNING") for d in (0, 3, 300)]
    tied = [_run_on(mock_db, when, "QUEUED") for _ in range(3)]  # one createdAt: ordered by _id
    oid = ObjectId()
    mock_db.runs.insert_one({"_id": oid, "status": "QUEUED", "createdAt": when, run_days.FIELD: run_days.day_of(when)})
    mock_db.runs.insert_one({"_id": "no-time", "status": "RUNNING", run_days.FIELD: run_days.UNDATED})
    for d in range(0, 300, 7):
        _run_on(mock_db, DAY0 + timedelta(days=d), "FAILED")
    wanted = run_list.RunFilter(statuses=("RUNNING", "QUEUED"))
    expected = [r["_id"] for r in mock_db.runs.find({"status": {"$in": ["RUNNING", "QUEUED"]}}).sort(run_list.SORT)]
    assert expected[:2] == [running[2], oid] and expected[-1] == "no-time"  # the server's order: ObjectId over string
    assert len(expected) == 3 + len(tied) + 2

    def no_days(db: Any) -> list[str]:
        raise AssertionError("a filter of runs in flight walked the days")

    monkeypatch.setattr(run_days, "days", no_days)
    for size in (1, 2, 4, 50):
        assert _all_pages(mock_db, wanted, size) == expected
