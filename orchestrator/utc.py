"""Time as the database keeps it: UTC, to the millisecond.

BSON dates have no zone and pymongo (unless `tz_aware`) and mongomock return them naive, so a
naive datetime here always means UTC. This module is the one place that says so; days and hours
used as keys (`run_days`, `seen_retention`), cursors and RFC 3339 strings all go through it.
"""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """Aware UTC now, millisecond precision (what BSON stores), so round trips compare equal."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def as_utc(value: datetime) -> datetime:
    """A datetime read back from the database (or given by a caller), as aware UTC: naive is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
