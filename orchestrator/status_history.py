"""The status history: one document per status change of a run, {runId, from, to, at, by,
attempt, reason}, in the `status_history` collection.

One document per change, keyed, rather than an array on the run: on a server whose updates
write back the whole document (FerretDB v1), two writers appending at once would lose an entry,
and a retried write would add it twice. The key makes each change recorded once: a direct
transition is keyed by the run's change counter (`statusChanges`), a change an event made by
that event's seq. `orchestrator.runs` writes it with every direct status write, and
`orchestrator.ingest_history` for the changes an ingest batch made; `of_run` reads it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from orchestrator import run_days

COLLECTION = "status_history"


#: The order of a run's changes: `step` orders the several changes one write made at one `at`
#: (an ingest batch that moved a run through three statuses).
ORDER = [("at", ASCENDING), ("step", ASCENDING), ("_id", ASCENDING)]


def record(db: Database, run_id: str, key: str, *, before: str, after: str, by: str, attempt: int, reason: str,
           at: datetime, step: int = 0) -> None:
    """Record one change, once: a second write of the same key is a no-op."""
    try:
        db[COLLECTION].insert_one({"_id": f"{run_id}:{key}", "runId": run_id, "from": before, "to": after, "at": at,
                                   "day": run_days.day_of(at), "step": step, "by": by, "attempt": attempt,
                                   "reason": reason})
    except DuplicateKeyError:
        pass


def days_between(since: datetime, now: datetime) -> list[str]:
    """The days (UTC) from `since` to `now`, newest first: readers of recent changes ask for
    `{"to": status, "day": day}`, an indexed equality, where a range on `at` would read every
    change to that status since the beginning on FerretDB."""
    days, day = [], now
    while True:
        days.append(run_days.day_of(day))
        if run_days.day_of(day) <= run_days.day_of(since):
            return days
        day -= timedelta(days=1)


def recorded(db: Database, run_id: str, key: str) -> bool:
    return db[COLLECTION].find_one({"_id": f"{run_id}:{key}"}, {"_id": 1}) is not None


def last_status(db: Database, run_id: str) -> str | None:
    """Where the recorded history of the run ends (None: nothing recorded)."""
    last = db[COLLECTION].find_one({"runId": run_id}, {"to": 1}, sort=[(name, DESCENDING) for name, _ in ORDER])
    return None if last is None else str(last["to"])


def of_run(db: Database, run_id: str, limit: int = 500) -> list[dict[str, Any]]:
    """The run's changes, oldest first."""
    cursor = db[COLLECTION].find({"runId": run_id}, {"runId": 0})
    return list(cursor.sort(ORDER).limit(limit))
