"""Ingest counts per minute (orchestrator/ingest_stats.py) and how the ingest routes feed them,
on mongomock."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import mongomock
import pytest
from pymongo.errors import ServerSelectionTimeoutError

from orchestrator import expiring, ingest_stats
from tests.fakes import DownDb
from tests.helpers import bearer, make_settings
from tests.ingest_helpers import NDJSON, STRUCTURED, Worker, ingest_app, insert_run, post_ndjson

NOW = datetime(2026, 3, 1, 12, 30, 40, tzinfo=UTC)
MINUTE = NOW.replace(second=0)


@pytest.fixture(autouse=True)
def _fresh_process_state(monkeypatch: Any) -> None:
    """Each test starts as a fresh process would: no minute document known, no prune yet."""
    monkeypatch.setattr(ingest_stats, "_current", {})
    monkeypatch.setattr(expiring, "_last_prune", {})


def _row(summary: dict[str, Any], minute: datetime) -> dict[str, Any]:
    [row] = [r for r in summary["perMinute"] if r["minute"] == minute]
    return row


def test_counts_add_up_per_minute_and_every_minute_of_the_hour_is_listed(mock_db: Any) -> None:
    ingest_stats.record(mock_db, 5, 1, 0, now=NOW - timedelta(minutes=10))
    ingest_stats.record(mock_db, 3, 0, 2, now=NOW - timedelta(minutes=10, seconds=30))
    ingest_stats.record(mock_db, 30, 2, 1, now=NOW)
    ingest_stats.record(mock_db, 100, 0, 0, now=NOW - timedelta(minutes=61))  # out of the hour
    summary = ingest_stats.last_hour(mock_db, NOW)
    minutes = [r["minute"] for r in summary["perMinute"]]
    assert len(minutes) == 60 and minutes[-1] == MINUTE and minutes[0] == MINUTE - timedelta(minutes=59)
    assert minutes == sorted(minutes)
    assert _row(summary, MINUTE - timedelta(minutes=10)) == {"minute": MINUTE - timedelta(minutes=10), "accepted": 8,
                                                             "duplicates": 1, "rejected": 2}
    assert _row(summary, MINUTE) == {"minute": MINUTE, "accepted": 30, "duplicates": 2, "rejected": 1}
    zeros = [r for r in summary["perMinute"] if r["minute"] not in (MINUTE, MINUTE - timedelta(minutes=10))]
    assert len(zeros) == 58 and all(r["accepted"] == r["duplicates"] == r["rejected"] == 0 for r in zeros)
    assert (summary["acceptedLastHour"], summary["duplicatesLastHour"], summary["rejectedLastHour"]) == (38, 3, 3)
    assert summary["eventsPerSecond"] == round(30 / 300, 3), "only the last 5 minutes, over 300 s"


def test_the_counts_of_every_process_are_summed(mock_db: Any) -> None:
    ingest_stats.record(mock_db, 4, 0, 0, now=NOW)
    mock_db.ingest_stats.insert_one({"_id": f"{MINUTE:%Y-%m-%dT%H:%MZ}@other-host:42", "minute": MINUTE,
                                     "accepted": 6, "duplicates": 1, "rejected": 0})
    assert _row(ingest_stats.last_hour(mock_db, NOW), MINUTE)["accepted"] == 10
    assert mock_db.ingest_stats.count_documents({}) == 2, "one document per minute and process"


def test_a_request_costs_one_write_once_its_minutes_document_exists(mock_db: Any, monkeypatch: Any) -> None:
    writes: list[str] = []
    for name in ("insert_one", "update_one", "replace_one", "find_one_and_update"):
        original = getattr(mongomock.collection.Collection, name)

        def counted(self: Any, *args: Any, _name: str = name, _original: Any = original, **kwargs: Any) -> Any:
            if self.name == ingest_stats.STATS:
                writes.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(mongomock.collection.Collection, name, counted)
    monkeypatch.setattr(expiring, "_last_prune", {f"{mock_db.name}/{ingest_stats.STATS}": float("inf")})
    for _ in range(4):
        ingest_stats.record(mock_db, 1, 0, 0, now=NOW)
    ingest_stats.record(mock_db, 1, 0, 0, now=NOW + timedelta(minutes=1))
    assert writes == ["insert_one", "update_one", "update_one", "update_one", "insert_one"]
    assert _row(ingest_stats.last_hour(mock_db, NOW), MINUTE)["accepted"] == 4


def test_a_minutes_document_deleted_behind_the_writers_back_is_created_again(mock_db: Any) -> None:
    ingest_stats.record(mock_db, 1, 0, 0, now=NOW)
    mock_db.ingest_stats.delete_many({})
    ingest_stats.record(mock_db, 2, 0, 0, now=NOW)
    assert ingest_stats.last_hour(mock_db, NOW)["acceptedLastHour"] == 2


def test_the_writer_prunes_documents_older_than_two_hours_at_most_every_30_s_in_batches(mock_db: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(ingest_stats, "PRUNE_BATCH", 2)
    old = [{"_id": f"old-{n}", "minute": MINUTE - timedelta(hours=3, minutes=n), "accepted": 1} for n in range(3)]
    kept = {"_id": "kept", "minute": MINUTE - timedelta(minutes=90), "accepted": 1}
    mock_db.ingest_stats.insert_many([*old, kept])
    ingest_stats.record(mock_db, 1, 0, 0, now=NOW)
    assert mock_db.ingest_stats.count_documents({"_id": {"$regex": "^old-"}}) == 1, "one batch of 2"
    ingest_stats.record(mock_db, 1, 0, 0, now=NOW)
    assert mock_db.ingest_stats.count_documents({"_id": {"$regex": "^old-"}}) == 1, "not again within 30 s"
    monkeypatch.setattr(expiring, "_last_prune", {})
    ingest_stats.record(mock_db, 1, 0, 0, now=NOW)
    assert mock_db.ingest_stats.count_documents({"_id": {"$regex": "^old-"}}) == 0
    assert mock_db.ingest_stats.find_one({"_id": "kept"}) is not None
    assert ingest_stats.prune(mock_db, NOW - timedelta(hours=1)) == 1


def test_nothing_is_written_for_a_request_with_nothing_to_count(mock_db: Any) -> None:
    ingest_stats.record(mock_db, 0, 0, 0, now=NOW)
    assert mock_db.ingest_stats.count_documents({}) == 0


def test_record_swallows_a_database_error_and_logs_it(caplog: Any) -> None:
    with caplog.at_level(logging.WARNING, logger="orchestrator.ingest_stats"):
        ingest_stats.record(DownDb(), 1, 0, 0, now=NOW)  # type: ignore[arg-type]
    assert "not recorded" in caplog.text


# --- through the ingest routes --------------------------------------------------------------------


def _log(run_id: str, n: int) -> dict[str, Any]:
    return Worker(run_id, n=n).event("ai.run.log", level="info", message="m")


def _hour(db: Any) -> tuple[int, int, int]:
    summary = ingest_stats.last_hour(db)
    return summary["acceptedLastHour"], summary["duplicatesLastHour"], summary["rejectedLastHour"]


def test_a_batch_counts_its_accepted_duplicate_and_invalid_lines(mock_db: Any) -> None:
    run_id = insert_run(mock_db)
    client = ingest_app(mock_db).test_client()
    first, second = _log(run_id, 0), _log(run_id, 1)
    response = post_ndjson(client, [first, second, first, "{not json", {"type": "nope"}])
    assert (response.json["accepted"], response.json["duplicate"], response.json["invalid"]) == (2, 1, 2)
    assert _hour(mock_db) == (2, 1, 2)


def test_single_events_count_accepted_duplicate_and_invalid(mock_db: Any) -> None:
    run_id = insert_run(mock_db)
    client = ingest_app(mock_db).test_client()
    event = _log(run_id, 0)
    codes = [client.post("/api/ingest/event", data=json.dumps(body), headers=STRUCTURED).status_code
             for body in (event, event, {"specversion": "1.0"})]
    assert codes == [201, 200, 422]
    assert _hour(mock_db) == (1, 1, 1)


def test_requests_refused_as_a_whole_count_one_rejection_each_and_unauthenticated_ones_none(mock_db: Any) -> None:
    run_id = insert_run(mock_db)
    client = ingest_app(mock_db, make_settings(INGEST_MAX_BODY_BYTES="2000")).test_client()
    unparseable = client.post("/api/ingest/event", data='{"id": 1,', headers=STRUCTURED)
    wrong_type = client.post("/api/ingest/events", data="x", headers={**NDJSON, "Content-Type": "text/plain"})
    too_large = post_ndjson(client, [_log(run_id, n) for n in range(10)])
    no_token = client.post("/api/ingest/events", data="{}\n", headers={"Content-Type": "application/x-ndjson"})
    wrong_token = client.post("/api/ingest/events", data="{}\n", headers={**NDJSON, **bearer("w" * 40 + "-wrong")})
    assert [r.status_code for r in (unparseable, wrong_type, too_large, no_token, wrong_token)] == [400, 415, 413, 401, 403]
    assert _hour(mock_db) == (0, 0, 3)


def test_a_database_error_while_counting_does_not_fail_the_ingest_request(mock_db: Any, monkeypatch: Any) -> None:
    def down(*_: Any, **__: Any) -> None:
        raise ServerSelectionTimeoutError("127.0.0.1:1: [Errno 111] Connection refused")

    monkeypatch.setattr(ingest_stats, "_create", down)
    run_id = insert_run(mock_db)
    client = ingest_app(mock_db).test_client()
    response = post_ndjson(client, [_log(run_id, 0), _log(run_id, 1)])
    assert response.status_code == 200 and response.json["accepted"] == 2
    assert mock_db.events.count_documents({"runId": run_id}) == 2
    assert mock_db.ingest_stats.count_documents({}) == 0


def test_a_bug_while_counting_does_not_fail_the_ingest_request_either(mock_db: Any, monkeypatch: Any) -> None:
    def broken(*_: Any, **__: Any) -> None:
        raise RuntimeError("counting bug")

    monkeypatch.setattr(ingest_stats, "record", broken)
    run_id = insert_run(mock_db)
    response = ingest_app(mock_db).test_client().post("/api/ingest/event", data=json.dumps(_log(run_id, 0)),
                                                      headers=STRUCTURED)
    assert response.status_code == 201 and mock_db.events.count_documents({"runId": run_id}) == 1
