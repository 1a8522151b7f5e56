"""Item 1's peer baseline: the ingest algorithm of the service this project replaces, replayed
as plain pymongo calls on the same server.

That service took one event per request and, for each, made four round trips: a `find_one` on
`events_seen` (source + eventId) to drop a repeat, an `insert_one` of the event into `events`,
an `insert_one` of the dedup record into `events_seen`, and one `update_one` of the run
(`$set` of its status, current stage and updatedAt, `$max` of lastEventSeq). No HTTP, JSON
parsing or validation is replayed, and it writes no stage, artifact or validation documents:
the peer is measured doing less than ours, so the ratio does not flatter ours.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymongo.database import Database

from bench.stats import percentile
from orchestrator.statuses import RunStatus

#: The run status an event type asserted in the peer (the last one to arrive wins: it had no seq guards).
_STATUS = {
    "ai.run.started": RunStatus.RUNNING,
    "ai.run.stage_started": RunStatus.RUNNING,
    "ai.run.stage_progress": RunStatus.RUNNING,
    "ai.run.stage_completed": RunStatus.RUNNING,
    "ai.validation.auto_started": RunStatus.AUTO_VALIDATING,
    "ai.validation.auto_completed": RunStatus.AWAITING_HUMAN,
    "ai.run.failed": RunStatus.FAILED,
    "ai.run.canceled": RunStatus.CANCELED,
}
#: The current stage's progress a stage event set, where the event does not carry it.
_PROGRESS = {"ai.run.stage_started": 0.0, "ai.run.stage_completed": 1.0}


@dataclass(frozen=True)
class PeerEvent:
    """What the peer writes for one event, built before the clock starts (as ours gets
    pre-encoded bodies): the `events` document, its dedup key, and the run update's fixed part."""

    document: dict[str, Any]
    key: dict[str, str]
    run_id: str
    seq: int
    run_set: dict[str, Any]


def prepare(documents: list[dict[str, Any]]) -> list[PeerEvent]:
    """The peer's work for `documents`, the `events` documents ours stores (`workload.stored_documents`)."""
    return [PeerEvent(doc, {"source": doc["source"], "eventId": doc["_id"]}, doc["runId"], doc["seq"], _run_set(doc))
            for doc in documents]


def _run_set(doc: dict[str, Any]) -> dict[str, Any]:
    """The `$set` the peer made on the run for this event, besides updatedAt."""
    values: dict[str, Any] = {}
    if doc["type"] in _STATUS:
        values["status"] = _STATUS[doc["type"]].value
    if "stage" in doc["data"] and doc["type"].startswith("ai.run.stage_") and doc["type"] != "ai.run.stage_metric":
        progress = doc["data"].get("progress", _PROGRESS.get(doc["type"], 0.0))
        values["currentStage"] = {"name": doc["data"]["stage"], "progress": progress}
    return values


def handle(db: Database, event: PeerEvent) -> bool:
    """One request of the peer: True if the event was applied, False if it was a repeat."""
    if db.events_seen.find_one(event.key, {"_id": 1}) is not None:
        return False
    now = datetime.now(UTC)
    db.events.insert_one(event.document)
    db.events_seen.insert_one({**event.key, "runId": event.run_id, "processedAt": now})
    db.runs.update_one({"_id": event.run_id},
                       {"$set": {**event.run_set, "updatedAt": now}, "$max": {"lastEventSeq": event.seq}})
    return True


def lookup_ms(db: Database, repeat: int = 20) -> float:
    """Median milliseconds of the peer's dedup lookup for a new event (a miss), on `events_seen` as
    the peer left it: every request of the peer paid one, and a server that does not answer it
    from the (source, eventId) index scans the collection, so the cost grows with it."""
    took = []
    for i in range(repeat):
        started = time.perf_counter()
        db.events_seen.find_one({"source": "worker://bench-probe", "eventId": f"missing-{i}"}, {"_id": 1})
        took.append((time.perf_counter() - started) * 1000)
    return percentile(took, 50)
