"""Short-lived records every process and replica must agree on: fixed-window counters (rate
limits, failed sign-ins) and ids accepted once (webhook message ids).

Built from what every supported server does atomically, a unique insert and `$inc`: FerretDB v1
has neither TTL indexes nor atomic read-modify-write, so a counter is one document per key,
window and process (`{key}@{window start}@{host:pid}`), created by a unique insert and raised by
`$inc` by that process alone. Nothing expires by itself, so whoever writes prunes what has
expired, at most once per `PRUNE_EVERY_S` per process, in bounded batches.
"""

from __future__ import annotations

import math
import os
import socket
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from orchestrator.utc import as_utc

COUNTERS = "rate_counters"
ONCE = "seen_once"
#: Seconds between two prunes by one process; expired records cost a little space meanwhile.
PRUNE_EVERY_S = 30.0
#: Records deleted per collection and prune: bounds the time a request spends on it.
PRUNE_BATCH = 500

_last_prune: dict[str, float] = {}
_prune_lock = threading.Lock()
#: This host's name on its counter documents, with the pid of the process writing (read at each
#: call: a forked gunicorn worker must not share its parent's documents).
_HOST = socket.gethostname()
_write_lock = threading.Lock()


def count(db: Database, key: str, window_s: float, amount: int = 1, now: datetime | None = None) -> int:
    """Add `amount` to `key`'s counter in the current window of `window_s` seconds (windows are
    aligned to the epoch, so every process agrees where one starts); return the window's total.

    Each process writes its own document of the window, under a lock, so the servers' whole-
    document write-back (FerretDB's `$inc` lost 116 of 200 concurrent increments on one
    document, measured) never races; the total is the sum over the processes' documents."""
    now = now or datetime.now(UTC)
    start = math.floor(now.timestamp() / window_s) * window_s
    expires = datetime.fromtimestamp(start + window_s, UTC)
    doc_id = f"{key}@{start:.0f}@{_HOST}:{os.getpid()}"
    _prune_sometimes(db, COUNTERS, now)
    with _write_lock:
        try:
            db[COUNTERS].insert_one({"_id": doc_id, "key": key, "n": amount, "expiresAt": expires})
        except DuplicateKeyError:
            db[COUNTERS].update_one({"_id": doc_id}, {"$inc": {"n": amount}})
    return sum(int(doc["n"]) for doc in db[COUNTERS].find({"key": key, "expiresAt": expires}, {"n": 1}))


def current(db: Database, key: str, now: datetime | None = None) -> tuple[int, datetime | None]:
    """`key`'s count in its live window and when that window ends; (0, None) when none is live."""
    now = now or datetime.now(UTC)
    totals: dict[datetime, int] = {}
    for doc in db[COUNTERS].find({"key": key, "expiresAt": {"$gt": now}}, {"n": 1, "expiresAt": 1}):
        ends = as_utc(doc["expiresAt"])
        totals[ends] = totals.get(ends, 0) + int(doc["n"])
    if not totals:
        return 0, None
    latest = max(totals)
    return totals[latest], latest


def clear(db: Database, key: str) -> None:
    db[COUNTERS].delete_many({"key": key})


def clear_all(db: Database) -> int:
    return db[COUNTERS].delete_many({}).deleted_count


def first_time(db: Database, record_id: str, keep_s: float, now: datetime | None = None) -> bool:
    """True the first time `record_id` is presented within `keep_s` seconds, False after: the
    unique insert decides, so two replicas given the same id at once accept it once."""
    now = now or datetime.now(UTC)
    _prune_sometimes(db, ONCE, now)
    try:
        db[ONCE].insert_one({"_id": record_id, "at": now, "expiresAt": now + timedelta(seconds=keep_s)})
        return True
    except DuplicateKeyError:
        found = db[ONCE].find_one({"_id": record_id}, {"expiresAt": 1})
        if found is not None and as_utc(found["expiresAt"]) <= now:
            # Expired but not pruned yet: the id is new again; the guarded delete lets one taker win.
            db[ONCE].delete_one({"_id": record_id, "expiresAt": found["expiresAt"]})
            return first_time(db, record_id, keep_s, now)
        return False


def forget(db: Database, record_id: str) -> None:
    """Undo `first_time` for a request that then failed, so its sender may send it again."""
    db[ONCE].delete_one({"_id": record_id})


def _prune_sometimes(db: Database, collection: str, now: datetime) -> None:
    prune_sometimes(db, collection, {"expiresAt": {"$lte": now}})


def prune_sometimes(db: Database, collection: str, expired: dict[str, Any], limit: int = PRUNE_BATCH) -> int:
    """Delete a batch of `collection`'s documents matching `expired`, at most once per
    `PRUNE_EVERY_S` per process and collection: the writers of records that nothing expires by
    itself (these, `ingest_stats`) clean up after themselves without paying for it each write."""
    key = f"{db.name}/{collection}"
    tick = time.monotonic()
    with _prune_lock:
        if tick - _last_prune.get(key, -math.inf) < PRUNE_EVERY_S:
            return 0
        _last_prune[key] = tick
    return delete_batch(db, collection, expired, limit)


def delete_batch(db: Database, collection: str, query: dict[str, Any], limit: int = PRUNE_BATCH) -> int:
    """Delete up to `limit` documents matching `query`, found by id first, so one call's work is
    bounded whatever the collection holds; how many were deleted."""
    ids = [doc["_id"] for doc in db[collection].find(query, {"_id": 1}).limit(limit)]
    return db[collection].delete_many({"_id": {"$in": ids}}).deleted_count if ids else 0
