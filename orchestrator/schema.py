"""The version of the stored documents' shapes, the one rule for keying event records, and the
migration that brings an existing database to this release's shapes (`manage-runs migrate`).

Versions:

1. `events`, `artifacts` and `validations` are keyed by the event id alone, so the same id from
   two sources was answered "accepted" twice and the second record silently dropped.
2. They are keyed by (source, id), like the dedup record (`events.record_id`). Each carries `source`
   and `eventId`.

A process refuses to start on a database whose version is newer than it knows (an old release
would write the old shapes back); on an older one it works and warns until it is migrated.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError

from orchestrator.errors import SettingsError
from orchestrator.events import record_id

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
META = "meta"
_SCHEMA_DOC = "schema"
#: The collections whose records an event makes, keyed by `record_id` since version 2.
RECORDS = ("events", "artifacts", "validations")
#: Documents moved per round trip of the migration: bounds memory and the time of one step.
BATCH = 500


class SchemaError(SettingsError):
    """The database's shapes are newer than this release knows."""


def stored_version(db: Database) -> int | None:
    found = db[META].find_one({"_id": _SCHEMA_DOC})
    return int(found["version"]) if found else None


def check(db: Database) -> int:
    """The database's schema version, checked at every process start: SchemaError when newer
    than this release; a fresh database is stamped with this release's version."""
    version = stored_version(db)
    if version is None:
        version = 1 if any(db[name].find_one({"eventId": {"$exists": False}}, {"_id": 1}) for name in RECORDS) else SCHEMA_VERSION
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


def _stamp(db: Database, version: int) -> None:
    try:
        db[META].update_one({"_id": _SCHEMA_DOC}, {"$set": {"version": version, "at": datetime.now(UTC)}}, upsert=True)
    except DuplicateKeyError:
        _stamp(db, version)  # another process's upsert inserted it first; now it is an update


def migrate(db: Database, progress: Callable[[str, int], None] | None = None) -> dict[str, int]:
    """Bring every record to version 2: copy each under its new key, then delete the old one.
    Idempotent and resumable: a record already moved is skipped, one copied but not yet deleted
    is deleted on the next run, and the version is stamped only at the end."""
    version = stored_version(db)
    if version is not None and version > SCHEMA_VERSION:
        check(db)
    moved = {name: 0 for name in RECORDS}
    moved["events"] = _rekey(db, "events", _event_key, progress)
    sources = _SourceOf(db)
    moved["artifacts"] = _rekey(db, "artifacts", sources.key_for, progress)
    moved["validations"] = _rekey(db, "validations", sources.key_for, progress)
    _stamp(db, SCHEMA_VERSION)
    return moved


def _event_key(doc: dict[str, Any]) -> tuple[str, str] | None:
    return (str(doc["source"]), str(doc["_id"])) if "source" in doc else None


class _SourceOf:
    """The source of an artifact's or validation's event, from the (migrated) event history."""

    def __init__(self, db: Database):
        self._db = db

    def key_for(self, doc: dict[str, Any]) -> tuple[str, str] | None:
        event = self._db.events.find_one({"eventId": str(doc["_id"]), "runId": doc.get("runId")}, {"source": 1})
        return (str(event["source"]), str(doc["_id"])) if event else None


def _rekey(db: Database, name: str, key_of: Callable[[dict[str, Any]], tuple[str, str] | None],
           progress: Callable[[str, int], None] | None) -> int:
    collection = db[name]
    moved = 0
    skipped: list[Any] = []
    while True:
        batch = list(collection.find({"eventId": {"$exists": False}, "_id": {"$nin": skipped}}).limit(BATCH))
        if not batch:
            return moved
        for doc in batch:
            key = key_of(doc)
            if key is None:
                log.warning("%s %r: no source found; left as it is", name, doc["_id"])
                skipped.append(doc["_id"])
                continue
            _move(collection, doc, key)
            moved += 1
        if progress is not None:
            progress(name, moved)


def _move(collection: Any, doc: dict[str, Any], key: tuple[str, str]) -> None:
    source, event_id = key
    copy = {**doc, "_id": record_id(source, event_id), "source": source, "eventId": event_id}
    try:
        collection.insert_one(copy)
    except (DuplicateKeyError, BulkWriteError):
        pass  # copied by an earlier, interrupted run
    collection.delete_one({"_id": doc["_id"], "eventId": {"$exists": False}})
