"""How long dedup records (`events_seen`) are kept, on servers that cannot expire them.

MongoDB deletes a record `EVENTS_SEEN_TTL_S` after it was written (a TTL index on
`processedAt`). FerretDB v1 has no TTL, and a range on `processedAt` is not pushed down, so a
prune by date would read every record in its Go code each time (seconds at a million). Instead
each record carries the hour it was written (`bucket`, "2026-12-03T02"), and the sweeper deletes
whole hours by equality, oldest first: one indexed command per hour, at most `MAX_HOURS_PER_PASS`
per pass, and a `meta` document remembers the last hour done, so a pass with nothing to prune
costs one read.

Records written before the field existed are deleted by `manage-runs prune-seen` (a date range,
run once after the upgrade).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

COLLECTION = "events_seen"
META = "meta"
MARKER_ID = "seenPrunedThrough"
#: Dedup records live this long; a resend older than that is applied again (mappers are idempotent).
EVENTS_SEEN_TTL_S = 7 * 24 * 3600
#: The name of MongoDB's TTL index on `processedAt` (`db.ensure_indexes` creates it where it can).
TTL_INDEX = "processedAt_ttl"
#: Hours deleted at most per pass: bounds one sweeper pass; the next goes on.
MAX_HOURS_PER_PASS = 48
_HOUR = timedelta(hours=1)
_FORMAT = "%Y-%m-%dT%H"


def bucket_of(when: datetime) -> str:
    """The hour a record written at `when` belongs to (UTC)."""
    aware = when if when.tzinfo else when.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime(_FORMAT)


def _hour(bucket: str) -> datetime:
    return datetime.strptime(bucket, _FORMAT).replace(tzinfo=UTC)


def expires_by_itself(db: Database) -> bool:
    """True when the server deletes old records itself (the TTL index exists: MongoDB, and
    mongomock, which expires documents as it reads)."""
    return TTL_INDEX in db[COLLECTION].index_information()


def prune(db: Database, now: datetime, window_s: float = EVENTS_SEEN_TTL_S,
          max_hours: int = MAX_HOURS_PER_PASS) -> int:
    """Delete the hours of dedup records wholly older than `window_s`, oldest first, at most
    `max_hours` of them; how many records went. Nothing to do where the server expires them."""
    if expires_by_itself(db):
        return 0
    last = _hour(bucket_of(now - timedelta(seconds=window_s))) - _HOUR  # the newest hour wholly outside
    hour = _first_hour(db, last)
    deleted = 0
    for _ in range(max_hours):
        if hour is None or hour > last:
            break
        deleted += db[COLLECTION].delete_many({"bucket": bucket_of(hour)}).deleted_count
        _mark(db, hour)
        hour += _HOUR
    return deleted


def _first_hour(db: Database, last: datetime) -> datetime | None:
    """The first hour not pruned yet: after the marker, else the hour of the oldest record
    (natural order: the first written), else None when there is nothing to prune."""
    marker = db[META].find_one({"_id": MARKER_ID})
    if marker is not None:
        return _hour(str(marker["bucket"])) + _HOUR
    oldest = db[COLLECTION].find_one({"bucket": {"$exists": True}}, {"bucket": 1})
    if oldest is None:
        _mark(db, last)  # nothing older than now can appear later: start from here
        return None
    return _hour(str(oldest["bucket"]))


def _mark(db: Database, hour: datetime) -> None:
    try:
        db[META].replace_one({"_id": MARKER_ID}, {"bucket": bucket_of(hour)}, upsert=True)
    except DuplicateKeyError:
        pass  # another sweeper marked the same moment
