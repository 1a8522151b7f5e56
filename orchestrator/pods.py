"""Pod presence: which worker processes are alive, what each is running, and its GPU's state.

Each process that runs tasks keeps one document in `pods`, `_id` = "{pod_id}/{slot}" (the slot
is "host:pid"), and is its only writer: FerretDB's updates write the whole document back, so
two writers of one document would undo each other's fields. It replaces the document every
`PRESENCE_INTERVAL_S` and whenever an attempt starts or ends (`tasks.pod.presence`), and
deletes it on a clean exit (`leave`). A process that dies leaves its document behind: `live`
shows it as gone once it is `GONE_AFTER_INTERVALS` of its own intervals old, and the sweeper
deletes it `SHOW_GONE_S` after it was last seen (`prune`).

Unlike `runs.claimedBy`/`lastHeartbeat` (which only a pod running a run writes), presence also
shows idle pods, and is written without a run.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from pymongo.database import Database

from orchestrator import expiring
from orchestrator.utc import as_utc, utcnow

PODS = "pods"
BUSY, IDLE, GONE = "busy", "idle", "gone"
#: A pod whose last beat is this many of its intervals old is gone (missed two beats and more).
GONE_AFTER_INTERVALS = 3
#: A gone pod is shown this long after it was last seen, then pruned.
SHOW_GONE_S = 3600.0
#: Documents deleted per command and at most per `prune` call: bounds one sweeper pass.
PRUNE_BATCH = 500
PRUNE_MAX_BATCHES = 10


def presence_id(pod_id: str, slot: str) -> str:
    return f"{pod_id}/{slot}"


def gpu_facet(stats: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """GPU telemetry as a pod reports it (`tasks.pod.gpu.gpu_stats()`, an `ai.run.heartbeat`'s
    data: {"gpu_util", "mem_gb", "temp_c"}) in the shape the documents store ({"util", "memGb",
    "tempC"}), for presence records and runs alike; None for a pod with no visible GPU."""
    if not stats:
        return None
    return {"util": stats.get("gpu_util"), "memGb": stats.get("mem_gb"), "tempC": stats.get("temp_c")}


def beat(db: Database, pod_id: str, slot: str, *, run_id: str | None, attempt: int | None,
         gpu: Mapping[str, Any] | None, now: datetime | None = None, interval_s: float = 10.0,
         host: str | None = None, pid: int | None = None, started_at: datetime | None = None,
         queues: tuple[str, ...] | list[str] = ()) -> None:
    """Write this process's presence: one upsert of its own document, replaced whole (the
    process is its only writer). `run_id` None: idle. `gpu` as `gpu_stats()` returns it."""
    now = now or utcnow()
    doc = {
        "podId": pod_id,
        "slot": slot,
        "host": host,
        "pid": pid,
        "queues": list(queues),
        "startedAt": started_at or now,
        "lastSeen": now,
        "intervalS": float(interval_s),
        "run": {"runId": run_id, "attempt": attempt} if run_id is not None else None,
        "gpu": gpu_facet(gpu),
    }
    db[PODS].replace_one({"_id": presence_id(pod_id, slot)}, doc, upsert=True)


def leave(db: Database, pod_id: str, slot: str) -> None:
    """A clean exit: the process's document goes (a prefork pool starts one process per run,
    so a record kept per exit would pile up)."""
    db[PODS].delete_one({"_id": presence_id(pod_id, slot)})


def state_of(doc: Mapping[str, Any], now: datetime) -> str:
    """busy (on a run), idle, or gone (no beat for `GONE_AFTER_INTERVALS` of its intervals)."""
    interval = float(doc.get("intervalS") or 10.0)
    if as_utc(doc["lastSeen"]) < now - timedelta(seconds=GONE_AFTER_INTERVALS * interval):
        return GONE
    return BUSY if doc.get("run") else IDLE


def live(db: Database, now: datetime | None = None) -> list[dict[str, Any]]:
    """Every pod process seen within `SHOW_GONE_S`, busy first, then idle, then gone; each as
    {"id", "podId", "slot", "host", "pid", "queues", "state", "run": {"runId", "attempt"} or None,
    "gpu": {"util", "memGb", "tempC"} or None, "startedAt", "lastSeen", "lastSeenAgoS"}."""
    now = now or utcnow()
    cutoff = now - timedelta(seconds=SHOW_GONE_S)
    found = []
    for doc in db[PODS].find({"lastSeen": {"$gte": cutoff}}):
        found.append({
            "id": doc["_id"], "podId": doc.get("podId"), "slot": doc.get("slot"), "host": doc.get("host"),
            "pid": doc.get("pid"), "queues": doc.get("queues") or [], "state": state_of(doc, now),
            "run": doc.get("run"), "gpu": doc.get("gpu"), "startedAt": doc.get("startedAt"), "lastSeen": doc["lastSeen"],
            "lastSeenAgoS": round(max((now - as_utc(doc["lastSeen"])).total_seconds(), 0.0), 1),
        })
    order = {BUSY: 0, IDLE: 1, GONE: 2}
    return sorted(found, key=lambda p: (order[p["state"]], str(p["podId"]), str(p["id"])))


def prune(db: Database, older_than: datetime) -> int:
    """Delete the documents last seen before `older_than`, in batches of `PRUNE_BATCH`, at most
    `PRUNE_MAX_BATCHES` of them (the next call goes on); how many were deleted."""
    deleted = 0
    for _ in range(PRUNE_MAX_BATCHES):
        batch = expiring.delete_batch(db, PODS, {"lastSeen": {"$lt": older_than}}, PRUNE_BATCH)
        deleted += batch
        if batch < PRUNE_BATCH:
            break
    return deleted
