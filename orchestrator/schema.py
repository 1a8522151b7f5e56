"""The version of the stored documents' shapes, the one rule for keying event records, and the
migration that brings an existing database to this release's shapes (`manage-runs migrate`).

Versions:

1. `events`, `artifacts` and `validations` are keyed by the event id alone, so the same id from
   two sources was answered "accepted" twice and the second record silently dropped.
2. They are keyed by (source, id), like the dedup record (`events.record_id`). Each carries `source`
   and `eventId`.
3. A pod's dead-letter notice in `events` carries `deadLetter: true` at the top level, so the
   count of dead letters is an indexed equality (before, a match on `data.kv.deadLetter`, which
   FerretDB evaluates in its Go code over the whole history). Every run carries `createdDay`,
   and `run_days` lists the days (`orchestrator.run_days`). Status-history entries carry their
   `day` and notifications their `createdDay`; the migration dates those of the last
   `DATED_DAYS` days, the only ones read by day (the notifier looks back an hour, the
   operations page a week).

A process refuses to start on a database whose version is newer than it knows (an old release
would write the old shapes back); on an older one it works and warns until it is migrated.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError

from orchestrator import run_days
from orchestrator.errors import SettingsError
from orchestrator.events import record_id

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3
META = "meta"
_SCHEMA_DOC = "schema"
#: The collections whose records an event makes, keyed by `record_id` since version 2.
RECORDS = ("events", "artifacts", "validations")
#: The source of a version-1 artifact or validation whose event is no longer in the history.
UNKNOWN_SOURCE = "unknown://"
#: Documents moved per round trip of the migration: bounds memory and the time of one step.
BATCH = 500
#: How far back the migration dates status-history entries and notifications (version 3).
DATED_DAYS = 8
#: (collection, its time field, the day field version 3 adds): what `_date_recent` fills in.
_DATED = (("status_history", "at", "day"), ("notifications", "createdAt", "createdDay"))


class SchemaError(SettingsError):
    """The database's shapes do not fit: newer than this release knows, or too old for a command
    that needs the migration first."""


def require_current(db: Database, command: str) -> None:
    """SchemaError unless the database is at this release's version: a command that moves
    documents of the old shapes (`archive`) would strand them where the migration does not look."""
    version = stored_version(db)
    if version is None:
        version = _unstamped_version(db)
    if version < SCHEMA_VERSION:
        raise SchemaError(f"the database's schema version is {version}; run `manage-runs migrate` "
                          f"(to {SCHEMA_VERSION}) before `{command}`")


#: The version from which every run carries `createdDay` (`run_days`).
KEYED_BY_DAY = 3


def keyed_by_day(db: Database) -> bool:
    """Whether every run is keyed by its day here: a database stamped by this release, or
    migrated to it. On an older one the run list and the counts read every run instead, so
    no run of an earlier release is left out of them before `manage-runs migrate`."""
    version = stored_version(db)
    return version is not None and version >= KEYED_BY_DAY


def stored_version(db: Database) -> int | None:
    found = db[META].find_one({"_id": _SCHEMA_DOC})
    return int(found["version"]) if found else None


def check(db: Database) -> int:
    """The database's schema version, checked at every process start: SchemaError when newer
    than this release; a fresh database is stamped with this release's version."""
    version = stored_version(db)
    if version is None:
        version = _unstamped_version(db)
        if version == SCHEMA_VERSION:
            _stamp(db, version)
    if version > SCHEMA_VERSION:
        raise SchemaError(
            f"the database's schema version is {version}, newer than this release knows ({SCHEMA_VERSION}); "
            "upgrade this process to the release that wrote it."
        )
    if version < SCHEMA_VERSION:
        log.warning("the database's schema version is %s; run `manage-runs migrate` to bring it to %s",
                    version, SCHEMA_VERSION)
    return version


def _unstamped_version(db: Database) -> int:
    """The version of a database no release has stamped: new (this release's), or one written
    before versions were stamped: 1 if a record lacks its key, 2 if a run that a dispatcher has
    seen lacks its day (a frontend's QUEUED runs get theirs from readers). Read once, at the
    first start on the database."""
    if any(db[name].find_one({"eventId": {"$exists": False}}, {"_id": 1}) for name in RECORDS):
        return 1
    if db.runs.find_one({run_days.FIELD: {"$exists": False}, "status": {"$ne": "QUEUED"}}, {"_id": 1}):
        return 2
    return SCHEMA_VERSION


def _stamp(db: Database, version: int) -> None:
    try:
        db[META].update_one({"_id": _SCHEMA_DOC}, {"$set": {"version": version, "at": datetime.now(UTC)}}, upsert=True)
    except DuplicateKeyError:
        _stamp(db, version)  # another process's upsert inserted it first; now it is an update


def migrate(db: Database, progress: Callable[[str, int], None] | None = None) -> dict[str, int]:
    """Bring every record to this version: copy each version-1 record under its new key, then
    delete the old one; flag the dead-letter notices (version 3). Idempotent and resumable: a
    record already moved is skipped, one copied but not yet deleted is deleted on the next run,
    and the version is stamped only at the end."""
    version = stored_version(db)
    if version is not None and version > SCHEMA_VERSION:
        check(db)
    moved = {name: 0 for name in RECORDS}
    moved["events"] = _rekey(db, "events", _event_key, progress)
    moved["artifacts"] = _rekey(db, "artifacts", _SourceOf(db, "artifacts").key_for, progress)
    moved["validations"] = _rekey(db, "validations", _SourceOf(db, "validations").key_for, progress)
    moved["deadLetterNotices"] = _flag_dead_letters(db)
    moved["runsKeyedByDay"] = run_days.stamp_all(db)
    moved["statusHistoryDated"], moved["notificationsDated"] = (_date_recent(db, *dated) for dated in _DATED)
    _stamp(db, SCHEMA_VERSION)
    return moved


def _flag_dead_letters(db: Database) -> int:
    """Version 3: flag the dead-letter notices stored before it (`events.history_record` flags new
    ones), in the live history and in the archive (`manage-runs archive` may have run first)."""
    legacy = {"type": "ai.run.log", "data.kv.deadLetter": True, "deadLetter": {"$exists": False}}
    return sum(db[name].update_many(legacy, {"$set": {"deadLetter": True}}).modified_count
               for name in ("events", "events_archive"))


def _date_recent(db: Database, collection: str, time_field: str, day_field: str) -> int:
    """Version 3: give the documents of the last `DATED_DAYS` days their day (one range read, then
    one update by `_id` each); how many."""
    since = datetime.now(UTC) - timedelta(days=DATED_DAYS)
    dated = 0
    for doc in db[collection].find({time_field: {"$gte": since}}, {time_field: 1, day_field: 1}):
        if day_field not in doc and isinstance(doc.get(time_field), datetime):
            db[collection].update_one({"_id": doc["_id"]}, {"$set": {day_field: run_days.day_of(doc[time_field])}})
            dated += 1
    return dated


def _event_key(doc: dict[str, Any]) -> tuple[str, str]:
    return str(doc.get("source") or UNKNOWN_SOURCE), str(doc["_id"])


class _SourceOf:
    """The source of an artifact's or validation's event, from the (migrated) event history.

    The id alone may name events of several sources (a release already keying by source may have
    stored a second one before the migration): the source chosen is one whose new key holds this
    very record (the copy an interrupted run made, marked `migratedFrom`), else one whose key is
    free, so no record replaces another, however alike their contents."""

    def __init__(self, db: Database, collection: str):
        self._db = db
        self._collection = db[collection]

    def key_for(self, doc: dict[str, Any]) -> tuple[str, str]:
        event_id = str(doc["_id"])
        sources = [str(e["source"]) for e in self._db.events.find({"eventId": event_id, "runId": doc.get("runId")},
                                                                  {"source": 1})]
        taken = {source: self._collection.find_one({"_id": record_id(source, event_id)}, {"migratedFrom": 1})
                 for source in sources}
        for source, found in taken.items():
            if found is not None and found.get("migratedFrom") == doc["_id"]:
                return source, event_id
        for source, found in taken.items():
            if found is None:
                return source, event_id
        log.warning("record %r: no free source in the history; keyed with source %s", doc["_id"], UNKNOWN_SOURCE)
        return UNKNOWN_SOURCE, event_id



def _rekey(db: Database, name: str, key_of: Callable[[dict[str, Any]], tuple[str, str]],
           progress: Callable[[str, int], None] | None) -> int:
    collection = db[name]
    moved = 0
    while True:
        batch = list(collection.find({"eventId": {"$exists": False}}).limit(BATCH))
        if not batch:
            return moved
        for doc in batch:
            _move(collection, doc, key_of(doc))
            moved += 1
        if progress is not None:
            progress(name, moved)


def _move(collection: Any, doc: dict[str, Any], key: tuple[str, str]) -> None:
    source, event_id = key
    copy = {**doc, "_id": record_id(source, event_id), "source": source, "eventId": event_id, "migratedFrom": doc["_id"]}
    try:
        collection.insert_one(copy)
    except (DuplicateKeyError, BulkWriteError):
        pass  # copied by an earlier, interrupted run
    collection.delete_one({"_id": doc["_id"], "eventId": {"$exists": False}})
