"""The days on which runs were created: the key that lets the run list and the counts per
status read a day of runs at a time instead of the whole history.

Each run carries `createdDay` ("2026-12-03", UTC, from `createdAt`), and `run_days` holds one
tiny document per day that has runs (`_id` = the day). A page of the list walks those days
newest first and asks, per day, for `{createdDay: day}` plus its filters: an equality every
server answers from an index, where a sort of all runs by `createdAt` reads the whole history on
FerretDB (4.5 s at 10,000 runs). The same days cache the count of runs in each terminal status
once no run of the day is live (`counts`), so counting the history costs a query per day that
changed, not a read of every run.

Runs this project creates get both at creation (`runs.create_hypothesis_and_run`); a run a
frontend inserts gets them from the dispatcher when it first sees it (`stamp`), and `manage-runs
migrate` stamps the runs of earlier releases.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

COLLECTION = "run_days"
FIELD = "createdDay"


def day_of(when: datetime) -> str:
    aware = when if when.tzinfo else when.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%d")


def register(db: Database, day: str) -> None:
    """Record that `day` has runs (before its first run is written: a crash between leaves an
    empty day, which costs one empty query, never a run no page shows)."""
    try:
        db[COLLECTION].insert_one({"_id": day})
    except DuplicateKeyError:
        pass


def stamp(db: Database, run: dict[str, Any]) -> str | None:
    """Give a run that has none its `createdDay` (a frontend's insert); the day, or None for a
    run without a creation time."""
    created = run.get("createdAt")
    if not isinstance(created, datetime):
        return None
    day = day_of(created)
    register(db, day)
    db.runs.update_one({"_id": run["_id"], FIELD: {"$exists": False}}, {"$set": {FIELD: day}})
    return day


def days(db: Database) -> list[str]:
    """Every day that has runs, newest first (one short read: a year is 365 tiny documents)."""
    return sorted((str(doc["_id"]) for doc in db[COLLECTION].find({}, {"_id": 1})), reverse=True)


def in_use(db: Database) -> bool:
    """Whether runs are keyed by day here (False on a database `manage-runs migrate` has not
    stamped yet, where readers fall back to reading every run)."""
    return db[COLLECTION].find_one({}, {"_id": 1}) is not None


def forget_counts(db: Database, day: str | None) -> None:
    """A run of `day` left a terminal status (a retry): its cached counts no longer hold."""
    if day:
        db[COLLECTION].update_one({"_id": day}, {"$unset": {"counts": "", "countedAt": ""}})


def stamp_all(db: Database) -> int:
    """The migration's part: stamp every run created before runs were keyed by day; how many."""
    stamped = 0
    for run in db.runs.find({FIELD: {"$exists": False}}, {"createdAt": 1}):
        stamped += 1 if stamp(db, run) else 0
    return stamped
