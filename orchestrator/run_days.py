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
migrate` stamps the runs of earlier releases. Until it has (`schema.keyed_by_day`), readers read
every run, as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from orchestrator.utc import as_utc

COLLECTION = "run_days"
FIELD = "createdDay"
#: The day of a run without a creation time (a malformed insert): before every real day, so
#: such runs come last in the list, as a sort on a missing `createdAt` puts them.
UNDATED = "0000-00-00"
#: Moved by every `forget_counts`, so counts taken before it are not kept after it.
GENERATION = "countsGeneration"


def day_of(when: datetime) -> str:
    return as_utc(when).strftime("%Y-%m-%d")


def register(db: Database, day: str) -> None:
    """Record that `day` has runs (before its first run is written: a crash between leaves an
    empty day, which costs one empty query, never a run no page shows)."""
    try:
        db[COLLECTION].insert_one({"_id": day})
    except DuplicateKeyError:
        pass


def stamp(db: Database, run: dict[str, Any]) -> str:
    """Give a run that has none its `createdDay` (a frontend's insert); the day."""
    created = run.get("createdAt")
    day = day_of(created) if isinstance(created, datetime) else UNDATED
    register(db, day)
    db.runs.update_one({"_id": run["_id"], FIELD: {"$exists": False}}, {"$set": {FIELD: day}})
    forget_counts(db, day)  # a run joined a day that may have been counted
    return day


def days(db: Database) -> list[str]:
    """Every day that has runs, newest first (one short read: a year is 365 tiny documents)."""
    return sorted((str(doc["_id"]) for doc in db[COLLECTION].find({}, {"_id": 1})), reverse=True)


def forget_counts(db: Database, day: str | None) -> None:
    """A run of `day` left a terminal status (a retry) or joined the day: its kept counts no
    longer hold. The generation moves, so a count taken before this is not kept after it."""
    if day:
        db[COLLECTION].update_one({"_id": day}, {"$unset": {"counts": "", "countsUntil": ""}, "$inc": {GENERATION: 1}})


def kept_counts(doc: dict[str, Any], statuses: Sequence[str], now: datetime) -> dict[str, int] | None:
    """The counts a day's document keeps for `statuses`, if they are still good at `now`."""
    counts, until = doc.get("counts"), doc.get("countsUntil")
    if not isinstance(counts, dict) or not isinstance(until, datetime) or as_utc(until) <= now:
        return None
    if not all(isinstance(counts.get(status), int) for status in statuses):
        return None
    return {status: int(counts[status]) for status in statuses}


def keep_counts(db: Database, doc: dict[str, Any], counts: dict[str, int], until: datetime) -> None:
    """Keep a settled day's `counts` until `until`, unless `forget_counts` ran since `doc` was read."""
    generation = doc.get(GENERATION)
    unchanged = {GENERATION: generation} if generation is not None else {GENERATION: {"$exists": False}}
    db[COLLECTION].update_one({"_id": doc["_id"], **unchanged}, {"$set": {"counts": counts, "countsUntil": until}})


def stamp_all(db: Database) -> int:
    """The migration's part: stamp every run created before runs were keyed by day; how many."""
    return _stamp_each(db, db.runs.find({FIELD: {"$exists": False}}, {"createdAt": 1}))


def stamp_queued(db: Database) -> int:
    """Stamp the QUEUED runs a frontend inserted that no dispatcher has seen yet, so a reader
    lists them at once (and while every dispatcher is down): one equality on the status."""
    return _stamp_each(db, (run for run in db.runs.find({"status": "QUEUED"}, {"createdAt": 1, FIELD: 1})
                            if FIELD not in run))


def _stamp_each(db: Database, runs: Any) -> int:
    stamped = 0
    for run in runs:
        stamp(db, run)
        stamped += 1
    return stamped
