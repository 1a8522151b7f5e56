"""The operations overview (orchestrator/operations.py): its shape and its numbers, on mongomock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from orchestrator import ingest_stats, operations, pods, queries, run_counts
from orchestrator.runs import create_hypothesis_and_run
from orchestrator.statuses import RunStatus

NOW = datetime(2026, 3, 1, 12, 0, 30, tzinfo=UTC)


def _dead_letter(db: Any, run_id: str, n: int, at: datetime) -> None:
    """A pod's dead-letter notice, as `events.history_record` stores it (flagged at the top level)."""
    db.events.insert_one({"_id": f"{run_id}-dl-{n}", "runId": run_id, "type": "ai.run.log", "receivedAt": at,
                          "deadLetter": True,
                          "data": {"level": "warning", "message": "dead-lettered", "kv": {"deadLetter": True}}})


def test_an_empty_system_has_every_key_with_zeros() -> None:
    import mongomock

    db = mongomock.MongoClient(tz_aware=True)["empty"]
    view = operations.overview(db, NOW)
    assert set(view) == {"runsByStatus", "queueDepth", "oldestQueuedAgeS", "pods", "podsBusy", "podsIdle", "podsGone",
                         "ingest", "deadLetters", "notifications", "terminalCountedAt"}
    assert view["runsByStatus"] == {s.value: 0 for s in RunStatus}
    assert (view["queueDepth"], view["oldestQueuedAgeS"], view["pods"]) == ({"gpu": 0}, None, [])
    assert (view["podsBusy"], view["podsIdle"], view["podsGone"]) == (0, 0, 0)
    assert view["deadLetters"] == {"total": 0, "runs": []}
    assert len(view["ingest"]["perMinute"]) == 60 and view["ingest"]["acceptedLastHour"] == 0
    assert view["ingest"]["eventsPerSecond"] == 0
    assert view["notifications"] == {"counts": {"pending": 0, "sent": 0, "failed": 0}, "recent": []}


def test_the_overview_counts_runs_queues_pods_ingest_and_dead_letters(mock_db: Any) -> None:
    queued = [create_hypothesis_and_run(mock_db, "t", "i")[1] for _ in range(3)]
    mock_db.runs.update_one({"_id": queued[0]}, {"$set": {"status": "RUNNING"}})
    mock_db.runs.update_one({"_id": queued[1]}, {"$set": {"createdAt": NOW - timedelta(seconds=90)}})
    mock_db.runs.update_one({"_id": queued[2]}, {"$set": {"createdAt": NOW - timedelta(seconds=30)}})
    mock_db.messages.insert_many([{"queue": "gpu", "payload": "{}"}, {"queue": "gpu", "payload": "{}"},
                                  {"queue": "celeryev.x", "payload": "{}"}])
    pods.beat(mock_db, "pod-a", "h:1", run_id=queued[0], attempt=1, gpu={"gpu_util": 90.0}, now=NOW)
    pods.beat(mock_db, "pod-b", "h:2", run_id=None, attempt=None, gpu={}, now=NOW - timedelta(seconds=5))
    pods.beat(mock_db, "pod-c", "h:3", run_id=None, attempt=None, gpu={}, now=NOW - timedelta(minutes=5))
    ingest_stats.record(mock_db, 600, 3, 2, now=NOW)
    ingest_stats.record(mock_db, 50, 0, 1, now=NOW - timedelta(minutes=30))
    _dead_letter(mock_db, "r-old", 0, NOW - timedelta(hours=2))
    for n in range(3):
        _dead_letter(mock_db, "r-new", n, NOW - timedelta(minutes=n))
    mock_db.events.insert_one({"_id": "plain", "runId": "r-new", "type": "ai.run.log", "receivedAt": NOW,
                               "data": {"level": "info", "message": "m", "kv": {"deadLetter": False}}})

    view = operations.overview(mock_db, NOW)

    assert view["runsByStatus"]["QUEUED"] == 2 and view["runsByStatus"]["RUNNING"] == 1
    assert sum(view["runsByStatus"].values()) == 3
    assert view["queueDepth"] == {"gpu": 2, "celeryev.x": 1}
    assert view["oldestQueuedAgeS"] == 90.0
    assert [(p["podId"], p["state"]) for p in view["pods"]] == [("pod-a", "busy"), ("pod-b", "idle"), ("pod-c", "gone")]
    assert view["pods"][0]["run"] == {"runId": queued[0], "attempt": 1} and view["pods"][0]["gpu"]["util"] == 90.0
    assert (view["podsBusy"], view["podsIdle"], view["podsGone"]) == (1, 1, 1)
    assert (view["ingest"]["acceptedLastHour"], view["ingest"]["duplicatesLastHour"],
            view["ingest"]["rejectedLastHour"]) == (650, 3, 3)
    assert view["ingest"]["eventsPerSecond"] == 2.0
    assert view["deadLetters"] == {"total": 4, "runs": [{"runId": "r-new", "count": 3}, {"runId": "r-old", "count": 1}]}
    assert queries.dead_letters(mock_db, "r-new") == 3, "counted as the run detail counts them"


def test_dead_letters_list_the_20_runs_whose_latest_dead_letter_came_last(mock_db: Any) -> None:
    for n in range(25):
        _dead_letter(mock_db, f"r-{n:02d}", 0, NOW - timedelta(minutes=100 - n))
    _dead_letter(mock_db, "r-00", 1, NOW)  # r-00's latest is now the newest of all
    summary = operations.overview(mock_db, NOW)["deadLetters"]
    assert summary["total"] == 26 and len(summary["runs"]) == 20
    assert summary["runs"][0] == {"runId": "r-00", "count": 2}
    assert [r["runId"] for r in summary["runs"][1:]] == [f"r-{n:02d}" for n in range(24, 5, -1)]


def test_the_overview_reads_queue_depth_and_counts_per_status_through_the_one_query_each(mock_db: Any) -> None:
    create_hypothesis_and_run(mock_db, "t", "i")
    mock_db.messages.insert_many([{"queue": "gpu", "payload": "{}"}, {"queue": "cpu", "payload": "{}"}])
    view = operations.overview(mock_db)
    assert view["queueDepth"] == queries.queue_depth(mock_db) == {"gpu": 1, "cpu": 1}
    assert view["runsByStatus"] == run_counts.by_status(mock_db)[0]
    assert view["oldestQueuedAgeS"] is not None
