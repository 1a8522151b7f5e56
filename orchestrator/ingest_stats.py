"""Ingest counts per minute, for the operations overview: events accepted, duplicates, and
rejections (invalid events, and requests refused as a whole) over the last hour.

Built as `orchestrator.expiring`'s counters are, for the same reason (FerretDB's `$inc` writes
the whole document back, so two writers of one document lose increments): one document per
minute and process, `_id` = "{minute, ISO}@{host}:{pid}", raised with `$inc` by that process
alone, under a lock. One write per request: the process remembers the document of its current
minute, so only the first request of a minute inserts it. Nothing expires by itself: the writer
deletes documents older than `KEEP_S`, as `expiring` prunes its own (`expiring.prune_sometimes`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import datetime, timedelta
from typing import Any

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, PyMongoError

from orchestrator import expiring
from orchestrator.utc import as_utc, utcnow

log = logging.getLogger(__name__)

STATS = "ingest_stats"
#: Kept this long (the overview shows one hour), then pruned by the writers.
KEEP_S = 2 * 3600.0
PRUNE_BATCH = expiring.PRUNE_BATCH
#: The overview's window, and the part of it `eventsPerSecond` averages over.
MINUTES = 60
RATE_MINUTES = 5

_HOST = socket.gethostname()
_lock = threading.Lock()
#: The id of the minute document this process last created, per database.
_current: dict[str, str] = {}


def minute_of(moment: datetime) -> datetime:
    return as_utc(moment).replace(second=0, microsecond=0)


def record(db: Database, accepted: int, duplicates: int, rejected: int, now: datetime | None = None) -> None:
    """Add one request's counts to this process's document of the current minute. Never raises
    a database error (the request it counts must not fail for it): logs it and drops the counts."""
    if accepted == duplicates == rejected == 0:
        return
    now = now or utcnow()
    minute = minute_of(now)
    doc_id = f"{minute.strftime('%Y-%m-%dT%H:%MZ')}@{_HOST}:{os.getpid()}"
    counts = {"accepted": int(accepted), "duplicates": int(duplicates), "rejected": int(rejected)}
    key = f"{id(db.client)}/{db.name}"
    try:
        with _lock:
            if _current.get(key) != doc_id or db[STATS].update_one({"_id": doc_id}, {"$inc": counts}).matched_count == 0:
                _create(db, doc_id, minute, counts)
                _current[key] = doc_id
        expiring.prune_sometimes(db, STATS, _older_than(now - timedelta(seconds=KEEP_S)), PRUNE_BATCH)
    except PyMongoError as exc:
        log.warning("ingest counts of this request not recorded (%s)", exc)


def _create(db: Database, doc_id: str, minute: datetime, counts: dict[str, int]) -> None:
    try:
        db[STATS].insert_one({"_id": doc_id, "minute": minute, "host": _HOST, "pid": os.getpid(), **counts})
    except DuplicateKeyError:  # this process's document of the minute exists (its memory was lost)
        db[STATS].update_one({"_id": doc_id}, {"$inc": counts})


def prune(db: Database, older_than: datetime) -> int:
    """Delete up to `PRUNE_BATCH` documents of minutes before `older_than`; how many."""
    return expiring.delete_batch(db, STATS, _older_than(older_than), PRUNE_BATCH)


def _older_than(moment: datetime) -> dict[str, Any]:
    return {"minute": {"$lt": moment}}


def last_hour(db: Database, now: datetime | None = None) -> dict[str, Any]:
    """{"perMinute": [{"minute", "accepted", "duplicates", "rejected"}, ...] (the last 60 minutes,
    oldest first, the current one last, zeros where nothing was counted), "acceptedLastHour",
    "duplicatesLastHour", "rejectedLastHour", "eventsPerSecond" (accepted in the last 5 of those
    minutes / 300)}, summed over every process's documents."""
    now = now or utcnow()
    current = minute_of(now)
    first = current - timedelta(minutes=MINUTES - 1)
    minutes = [first + timedelta(minutes=n) for n in range(MINUTES)]
    totals = {m: {"accepted": 0, "duplicates": 0, "rejected": 0} for m in minutes}
    for doc in db[STATS].find({"minute": {"$gte": first, "$lte": current}}):
        row = totals.get(as_utc(doc["minute"]))
        if row is not None:
            for name in row:
                row[name] += int(doc.get(name) or 0)
    rows = [totals[m] for m in minutes]
    recent = sum(row["accepted"] for row in rows[-RATE_MINUTES:])
    return {
        "perMinute": [{"minute": m, **totals[m]} for m in minutes],
        "acceptedLastHour": sum(row["accepted"] for row in rows),
        "duplicatesLastHour": sum(row["duplicates"] for row in rows),
        "rejectedLastHour": sum(row["rejected"] for row in rows),
        "eventsPerSecond": round(recent / (RATE_MINUTES * 60), 3),
    }
