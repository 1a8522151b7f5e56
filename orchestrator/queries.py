"""Read models shared by the CLI and the read API: one place assembles what "a run" shows."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.database import Database

from orchestrator import event_history, status_history, tracing
from orchestrator.runs import get_run, in_statuses
from orchestrator.statuses import ACTIVE, RunStatus
from orchestrator.utc import as_utc


def run_detail(db: Database, run_id: str, *, events: int = 10, trace_url_template: str | None = None) -> dict[str, Any]:
    """The run with its hypothesis, stages (in order), artifacts, latest validation and latest
    auto-validation, last events, its status history, how many of its events were
    dead-lettered on a pod, and its trace id (with a link, given TRACE_URL_TEMPLATE).

    Raises `NotFound` for an unknown id."""
    run = get_run(db, run_id)
    run["hypothesis"] = db.hypotheses.find_one({"_id": run.get("hypothesisId")})
    run["stages"] = list(db.stages.find({"runId": run_id}).sort([("index", ASCENDING), ("_id", ASCENDING)]))
    run["artifacts"] = list(db.artifacts.find({"runId": run_id}).sort([("createdAt", ASCENDING), ("_id", ASCENDING)]))
    validations = list(db.validations.find({"runId": run_id}).sort([("createdAt", DESCENDING), ("_id", DESCENDING)]))
    run["validation"] = next(iter(validations), None)
    # The auto-validation's verdict, scores and results stay the run's measured outcome after a
    # reviewer's record (which has none) becomes the latest validation.
    run["autoValidation"] = next((v for v in validations if v.get("kind") == "auto"), None)
    recent = event_history.find(db, {"runId": run_id}, [("seq", DESCENDING), ("time", DESCENDING)], events) if events > 0 else []
    run["recentEvents"] = list(reversed(recent))
    run["deadLetters"] = dead_letters(db, run_id)
    run["statusHistory"] = status_history.of_run(db, run_id)
    run["traceId"] = tracing.trace_id_of(run.get(tracing.FIELD))
    run["traceUrl"] = tracing.trace_url(trace_url_template, run["traceId"])
    return run


#: A pod's warning that it could never deliver an event and kept it in its dead-letter file
#: (`events.is_dead_letter_notice`), flagged at the top level of its record.
DEAD_LETTER = {"deadLetter": True}


def dead_letters(db: Database, run_id: str) -> int:
    """Events of this run a pod could never deliver and kept in its dead-letter file, as the
    pod's warnings in the history count them."""
    return event_history.count(db, {"runId": run_id, **DEAD_LETTER})


def dead_letter_summary(db: Database, limit: int = 20) -> dict[str, Any]:
    """{"total": dead letters of every run, "runs": [{"runId", "count"}, ...]}: the `limit` runs
    whose latest dead letter arrived last, most recent first, each counted as `dead_letters`.
    Dead letters are few, and flagged at the top level: one indexed equality, grouped here."""
    found = event_history.find(db, DEAD_LETTER, [("receivedAt", DESCENDING), ("runId", ASCENDING)],
                               projection={"runId": 1, "receivedAt": 1})
    counts = Counter(event.get("runId") for event in found)
    latest_first = list(dict.fromkeys(event.get("runId") for event in found))
    return {"total": len(found), "runs": [{"runId": run_id, "count": counts[run_id]} for run_id in latest_first[:limit]]}


def events_after(db: Database, run_id: str, after_seq: int, limit: int = 200) -> list[dict[str, Any]]:
    """History after a seq, for a live tail (ties broken by time, then id)."""
    return event_history.find(db, {"runId": run_id, "seq": {"$gt": after_seq}},
                              [("seq", ASCENDING), ("time", ASCENDING), ("_id", ASCENDING)], limit)


def queue_depth(db: Database, known: Iterable[str] = ()) -> dict[str, int]:
    """Messages waiting per queue, from kombu's `messages` collection (Flower's broker tab does
    not support MongoDB): every queue that holds one, and each `known` queue, 0 when empty (an
    empty queue has no document to group, and "gpu: 0" is the answer an operator looks for).
    kombu deletes a message when a worker fetches it: prefetched and running tasks are not counted."""
    depth = dict.fromkeys(known, 0)
    depth.update({str(row["_id"]): row["n"] for row in db.messages.aggregate([{"$group": {"_id": "$queue", "n": {"$sum": 1}}}])})
    return depth


def oldest_queued_age_s(db: Database, now: datetime) -> float | None:
    """Seconds since the oldest QUEUED run was created; None when none is queued."""
    oldest = next(iter(db.runs.find({"status": RunStatus.QUEUED.value}).sort("createdAt", ASCENDING).limit(1)), None)
    return round((now - oldest["createdAt"]).total_seconds(), 1) if oldest else None


def pods_seen_last_minute(db: Database, now: datetime) -> list[str]:
    """Pods whose run heartbeat is under a minute old (`claimedBy`): busy pods only. Only a run a
    worker holds has a fresh heartbeat, so one equality query per such status finds them all
    without reading the history."""
    cutoff = now - timedelta(minutes=1)
    pods = set()
    statuses = sorted(s.value for s in ACTIVE | {RunStatus.SCHEDULED, RunStatus.AWAITING_HUMAN})
    for run in in_statuses(db, statuses, projection={"claimedBy": 1, "lastHeartbeat": 1}):
        beat = run.get("lastHeartbeat")
        if run.get("claimedBy") and isinstance(beat, datetime) and as_utc(beat) >= cutoff:
            pods.add(str(run["claimedBy"]))
    return sorted(pods)


#: Metric points a run page draws: enough for a long run's curves, bounded for the page's size.
MAX_METRIC_POINTS = 5000


def metric_series(db: Database, run_id: str) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Every `ai.run.stage_metric` value of the run, in seq order: stage -> metric -> points
    `{step, time, value}` (the latest `MAX_METRIC_POINTS` points). The run's `metrics` hold only
    each metric's latest value; the curve is in the history."""
    found = event_history.find(db, {"runId": run_id, "type": "ai.run.stage_metric"}, [("seq", DESCENDING)],
                               MAX_METRIC_POINTS, {"seq": 1, "time": 1, "data": 1})
    series: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for event in reversed(found):
        data = event.get("data") or {}
        stage, name, value = data.get("stage"), data.get("name"), data.get("value")
        if not isinstance(stage, str) or not isinstance(name, str) or not isinstance(value, (int, float)):
            continue
        point = {"step": data.get("step"), "time": event.get("time"), "value": value}
        series.setdefault(stage, {}).setdefault(name, []).append(point)
    return series


def event_log(db: Database, run_id: str, *, type_: str | None = None, limit: int = 200,
              up_to_seq: int | None = None) -> list[dict[str, Any]]:
    """The run's latest `limit` events (up to `up_to_seq`), oldest first, optionally of one type."""
    query: dict[str, Any] = {"runId": run_id}
    if type_:
        query["type"] = type_
    if up_to_seq is not None:
        query["seq"] = {"$lte": up_to_seq}
    newest = event_history.find(db, query, [("seq", DESCENDING), ("time", DESCENDING), ("_id", DESCENDING)], limit)
    return list(reversed(newest))
