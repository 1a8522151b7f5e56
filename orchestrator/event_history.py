"""Where a run's event history is kept, and `manage-runs archive`, which moves the history of
finished runs out of the way of today's.

`events` holds the history of every run until it is archived; `archive` moves the events of runs
that ended (a terminal status) and were created before a date into `events_archive`, same
documents, same indexes. The run, its stages, artifacts, validations and status history stay
where they are. Every reader goes through `find` and `count`, which read both collections (one
indexed query more), so a run page shows an archived run's history as before, and an event that
arrives after its run was archived (a pod's spool replayed late, a retried run) joins it.

What archiving buys: `events` is the one collection that grows by a hundred documents and more
per run; where the server reads a whole collection to answer (FerretDB without the indexes of
`index_plan`, or any query no index serves) its size is the cost.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from pymongo.database import Database
from pymongo.errors import BulkWriteError

from orchestrator.db import as_utc, utcnow
from orchestrator.statuses import TERMINAL

LIVE = "events"
ARCHIVE = "events_archive"
COLLECTIONS = (LIVE, ARCHIVE)
#: Events moved per round trip.
BATCH = 500
_DUPLICATE_KEY = 11000

Sort = list[tuple[str, int]]


def find(db: Database, query: dict[str, Any], sort: Sort, limit: int = 0,
         projection: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The events matching `query` from both collections, in `sort` order, at most `limit` (0: all)."""
    found: list[dict[str, Any]] = []
    for name in COLLECTIONS:
        cursor = db[name].find(query, projection).sort(sort)
        found.extend(cursor.limit(limit) if limit else cursor)
    found = _sorted(found, sort)
    return found[:limit] if limit else found


def count(db: Database, query: dict[str, Any]) -> int:
    return sum(db[name].count_documents(query) for name in COLLECTIONS)


def _sorted(docs: list[dict[str, Any]], sort: Sort) -> list[dict[str, Any]]:
    """`docs` in `sort` order: a stable sort per key, the last key first. A missing value sorts
    first ascending, as BSON's null does."""
    for key, direction in reversed(sort):
        docs.sort(key=_key_of(key), reverse=direction < 0)
    return docs


def _key_of(name: str) -> Callable[[dict[str, Any]], tuple[bool, Any]]:
    return lambda doc: (doc.get(name) is not None, _comparable(doc.get(name)))


def _comparable(value: Any) -> Any:
    if isinstance(value, datetime):
        return as_utc(value)
    return value if value is not None else 0


def archivable(db: Database, before: datetime) -> Iterator[dict[str, Any]]:
    """Finished runs created before `before` whose events are not archived yet: one equality
    query per terminal status."""
    for status in sorted(s.value for s in TERMINAL):
        for run in db.runs.find({"status": status}, {"createdAt": 1, "eventsArchivedAt": 1}):
            created = run.get("createdAt")
            if run.get("eventsArchivedAt") is None and isinstance(created, datetime) and as_utc(created) < before:
                yield run


def archive_run(db: Database, run_id: str) -> int:
    """Move one run's events to the archive: copy, then delete, in batches. Safe to interrupt
    and to repeat: a copy made before an interruption is a duplicate key next time, and an event
    is deleted from `events` only once its copy exists. How many moved."""
    moved = 0
    while True:
        batch = list(db[LIVE].find({"runId": run_id}).limit(BATCH))
        if not batch:
            break
        _insert_missing(db[ARCHIVE], batch)
        moved += db[LIVE].delete_many({"runId": run_id, "_id": {"$in": [e["_id"] for e in batch]}}).deleted_count
    db.runs.update_one({"_id": run_id}, {"$set": {"eventsArchivedAt": utcnow()}})
    return moved


def _insert_missing(collection: Any, documents: list[dict[str, Any]]) -> None:
    try:
        collection.insert_many(documents, ordered=False)
    except BulkWriteError as exc:
        errors = (exc.details or {}).get("writeErrors", [])
        if any(e.get("code") != _DUPLICATE_KEY for e in errors):
            raise


def archive(db: Database, before: datetime, progress: Callable[[int, int, int], None] | None = None) -> dict[str, int]:
    """Archive the events of every run that ended and was created before `before`:
    {"runs": runs whose events moved, "events": events moved}. `progress(done, total, events)`
    after each run."""
    runs = [run["_id"] for run in archivable(db, before)]
    events = 0
    moved_runs = 0
    for done, run_id in enumerate(runs, 1):
        moved = archive_run(db, run_id)
        events += moved
        moved_runs += 1 if moved else 0
        if progress is not None:
            progress(done, len(runs), events)
    return {"runs": moved_runs, "events": events}
