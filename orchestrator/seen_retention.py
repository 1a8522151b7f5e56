"""How long dedup records (`events_seen`) are kept, on servers that cannot expire them.

MongoDB deletes a record `EVENTS_SEEN_TTL_S` after it was written (a TTL index on
`processedAt`). FerretDB v1 has no TTL, and a range on `processedAt` is not pushed down, so a
prune by date would read every record in its Go code each time (seconds at a million). Instead
each record carries the hour it was written (`bucket`, "2026-12-03T02"), and the sweeper deletes
whole hours by equality, oldest first: one indexed command per hour, at most `MAX_HOURS_PER_PASS`
hours and `BUDGET_S` seconds per pass (so catching up on a year of history never makes a pass
late), and a `meta` document remembers the last hour done, so a pass with nothing to prune costs
one read. The marker is written once per pass: a pass that dies midway leaves it behind, and the
next deletes those hours again, which deletes nothing.

Records written before the field existed are deleted by `manage-runs prune-seen` (a date range,
run once after the upgrade).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from orchestrator import run_days
from orchestrator.utc import as_utc

COLLECTION = "events_seen"
META = "meta"
MARKER_ID = "seenPrunedThrough"
#: Dedup records live this long; a resend older than that is applied again (mappers are idempotent).
EVENTS_SEEN_TTL_S = 7 * 24 * 3600
#: The name of MongoDB's TTL index on `processedAt` (`db.ensure_indexes` creates it where it can).
TTL_INDEX = "processedAt_ttl"
#: Hours deleted at most per pass: bounds one sweeper pass; the next goes on.
MAX_HOURS_PER_PASS = 168
#: Seconds one pass may spend deleting (checked after each hour): the sweeper's other work waits.
BUDGET_S = 0.25
#: How far back the first pass on a database starts (records older than this before the
#: upgrade are `manage-runs prune-seen`'s).
FIRST_LOOKBACK = timedelta(days=400)
_HOUR = timedelta(hours=1)
_FORMAT = "%Y-%m-%dT%H"


def bucket_of(when: datetime) -> str:
    """The hour a record written at `when` belongs to (UTC)."""
    return as_utc(when).strftime(_FORMAT)


def _last_prunable(now: datetime, window_s: float) -> datetime:
    """The newest hour wholly outside the window: the window's edge falls in the hour after it."""
    return _hour(bucket_of(now - timedelta(seconds=window_s))) - _HOUR


def _hour(bucket: str) -> datetime:
    return datetime.strptime(bucket, _FORMAT).replace(tzinfo=UTC)


def expires_by_itself(db: Database) -> bool:
    """True when the server deletes old records itself (the TTL index exists: MongoDB, and
    mongomock, which expires documents as it reads)."""
    return TTL_INDEX in db[COLLECTION].index_information()


def prune(db: Database, now: datetime, window_s: float = EVENTS_SEEN_TTL_S,
          max_hours: int = MAX_HOURS_PER_PASS, budget_s: float = BUDGET_S) -> int:
    """Delete the hours of dedup records wholly older than `window_s`, oldest first, at most
    `max_hours` of them and for about `budget_s`; how many records went. Nothing to do where
    the server expires them."""
    if expires_by_itself(db):
        return 0
    last = _last_prunable(now, window_s)
    hour, marked = _first_hour(db, last)
    first = hour
    deadline = time.monotonic() + budget_s
    deleted = 0
    for _ in range(max_hours):
        if hour > last:
            break
        deleted += db[COLLECTION].delete_many({"bucket": bucket_of(hour)}).deleted_count
        hour += _HOUR
        if time.monotonic() >= deadline:
            break
    if hour > first or not marked:  # the first pass marks even when its runs are all too new to prune
        _mark(db, hour - _HOUR)
    return deleted


def pending_hours(db: Database, now: datetime, window_s: float = EVENTS_SEEN_TTL_S) -> int:
    """How many hours the next passes still have to walk (0 when caught up, or where the server
    expires records itself): what the bench settles before it times a steady pass."""
    if expires_by_itself(db):
        return 0
    last = _last_prunable(now, window_s)
    marker = db[META].find_one({"_id": MARKER_ID})
    if marker is None:
        return 1  # never pruned: at least the first pass is due
    return max(0, int((last - _hour(str(marker["bucket"]))) / _HOUR))


def _first_hour(db: Database, last: datetime) -> tuple[datetime, bool]:
    """The first hour not pruned yet, and whether a marker says so: the one after the marker; on
    a database never pruned, the first hour of the oldest day with runs (no dedup record is older
    than its run; walking empty hours costs an indexed delete each, where finding the oldest
    record would read them all on FerretDB), at most `FIRST_LOOKBACK` before the window, or with
    no run yet (so no record) the hour after `last`."""
    marker = db[META].find_one({"_id": MARKER_ID})
    if marker is not None:
        return _hour(str(marker["bucket"])) + _HOUR, True
    dated = [day for day in run_days.days(db) if day != run_days.UNDATED]
    if not dated:
        return last + _HOUR, False
    oldest = datetime.strptime(dated[-1], "%Y-%m-%d").replace(tzinfo=UTC)
    return max(oldest, last - FIRST_LOOKBACK), False


def _mark(db: Database, hour: datetime) -> None:
    try:
        db[META].replace_one({"_id": MARKER_ID}, {"bucket": bucket_of(hour)}, upsert=True)
    except DuplicateKeyError:
        pass  # another sweeper marked the same moment
