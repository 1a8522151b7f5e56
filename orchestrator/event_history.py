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

from orchestrator import schema
from orchestrator.db import insert_missing
from orchestrator.statuses import TERMINAL_VALUES
from orchestrator.utc import as_utc, utcnow

LIVE = "events"
ARCHIVE = "events_archive"
COLLECTIONS = (LIVE, ARCHIVE)
#: Events moved per round trip.
BATCH = 500
#: Set on a run once its events are archived; a retry clears it, so the archive takes the new ones later.
ARCHIVED_AT = "eventsArchivedAt"

Sort = list[tuple[str, int]]


def find(db: Database, query: dict[str, Any], sort: Sort, limit: int = 0,
         projection: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The events matching `query` from both collections, in `sort` order, at most `limit` (0: all).

    An event can be in both for a while: an archive copies a batch before it deletes it (and may
    be interrupted between), and a pod that resends an event of an archived run writes it to
    `events` again. The copies are the same document, so each `_id` is shown once. Taking `limit`
    from each collection is enough: whatever ranks above an event in its own collection ranks
    above it overall."""
    found: list[dict[str, Any]] = []
    for name in COLLECTIONS:
        cursor = db[name].find(query, projection).sort(sort)
        found.extend(cursor.limit(limit) if limit else cursor)
    found = _once_each(_sorted(found, sort))
    return found[:limit] if limit else found


def count(db: Database, query: dict[str, Any]) -> int:
    """How many distinct events match `query` in both collections (see `find` for why both can
    hold one): two counts, and the `_id`s only when both found some."""
    counts = [db[name].count_documents(query) for name in COLLECTIONS]
    if not all(counts):
        return sum(counts)
    return len({doc["_id"] for name in COLLECTIONS for doc in db[name].find(query, {"_id": 1})})


def _once_each(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: set[Any] = set()
    unique = []
    for doc in docs:
        key = doc.get("_id", id(doc))  # a projection without `_id`: nothing to tell copies apart by
        if key not in seen:
            seen.add(key)
            unique.append(doc)
    return unique


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
    for status in TERMINAL_VALUES:
        for run in db.runs.find({"status": status}, {"createdAt": 1, ARCHIVED_AT: 1}):
            created = run.get("createdAt")
            if run.get(ARCHIVED_AT) is None and isinstance(created, datetime) and as_utc(created) < before:
                yield run


def archive_run(db: Database, run_id: str) -> int:
    """Move one run's events to the archive: copy, then delete, in batches. Safe to interrupt
    and to repeat: a copy made before an interruption is a duplicate key next time, and an event
    is deleted from `events` only once its copy exists. A run that is no longer finished (retried
    since it was listed) is left alone. How many moved."""
    run = db.runs.find_one({"_id": run_id}, {"status": 1})
    if run is None or run.get("status") not in TERMINAL_VALUES:
        return 0
    moved = 0
    while True:
        batch = list(db[LIVE].find({"runId": run_id}).limit(BATCH))
        if not batch:
            break
        insert_missing(db[ARCHIVE], batch)
        moved += db[LIVE].delete_many({"runId": run_id, "_id": {"$in": [e["_id"] for e in batch]}}).deleted_count
    db.runs.update_one({"_id": run_id, "status": {"$in": list(TERMINAL_VALUES)}}, {"$set": {ARCHIVED_AT: utcnow()}})
    return moved


def archive(db: Database, before: datetime, progress: Callable[[int, int, int], None] | None = None) -> dict[str, int]:
    """Archive the events of every run that ended and was created before `before`:
    {"runs": runs whose events moved, "events": events moved}. `progress(done, total, events)`
    after each run. Refused (`schema.SchemaError`) before `manage-runs migrate`: an event moved
    in an old shape would be out of the migration's reach."""
    schema.require_current(db, "archive")
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
