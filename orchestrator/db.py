"""MongoDB access for every process: one client per URL, the indexes, and what the server can do.

Code is written for real MongoDB and degrades on servers that lack a feature (FerretDB has no
TTL expiry and no change streams); it never assumes the weaker server.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from typing import Any

import pymongo
from pymongo import ASCENDING, IndexModel
from pymongo.database import Database
from pymongo.errors import BulkWriteError, CollectionInvalid, ConnectionFailure, OperationFailure, PyMongoError

from orchestrator import index_plan, schema, seen_retention, server_warnings
from orchestrator.settings import Settings

log = logging.getLogger(__name__)

_clients: dict[str, Any] = {}
_clients_lock = threading.Lock()


#: What a wire server answers while the database behind it is down, restarting or shutting down:
#: FerretDB on PostgreSQL reports the PostgreSQL driver's error as an OperationFailure
#: (InternalError), e.g. "failed to connect to `user=... database=...`: ... connection refused".
BACKEND_DOWN_PATTERN = (r"failed to connect to|connection refused|unexpected EOF|conn closed|connection reset"
                        r"|broken pipe|terminating connection|the database system is (starting up|shutting down"
                        r"|in recovery mode)|SQLSTATE (57P0|08)")
_BACKEND_DOWN = re.compile(BACKEND_DOWN_PATTERN, re.IGNORECASE)


def is_unavailable(exc: BaseException) -> bool:
    """True when the database cannot serve now but may soon, so the caller should answer "try
    again" (503, a retry) rather than report a bug: the server is unreachable, or it is up but
    the database behind it is not (FerretDB's PostgreSQL backend)."""
    if isinstance(exc, ConnectionFailure):
        return True
    return isinstance(exc, OperationFailure) and bool(_BACKEND_DOWN.search(str(exc)))


_DUPLICATE_KEY = 11000


def insert_missing(collection: Any, documents: list[dict[str, Any]]) -> None:
    """Insert each document unless its `_id` exists (a repeat, or another process's copy): the
    unique `_id` is what makes a resent event, or a copy made twice, a no-op. Any other write
    error is raised."""
    by_id: dict[Any, dict[str, Any]] = {}
    for doc in documents:  # one per `_id` (stage base documents repeat within a batch): the first wins
        by_id.setdefault(doc["_id"], doc)
    try:
        collection.insert_many(list(by_id.values()), ordered=False)
    except BulkWriteError as exc:
        if errors_besides_duplicates(exc):
            raise


def errors_besides_duplicates(exc: BulkWriteError) -> list[dict[str, Any]]:
    """The write errors and write concern errors of a bulk write other than duplicate keys."""
    details = exc.details or {}
    return [e for e in details.get("writeErrors", []) if e.get("code") != _DUPLICATE_KEY] + list(
        details.get("writeConcernErrors", []))


EMBEDDED = "mongomock"


def client_for(settings: Settings) -> Any:
    """The process-wide client for `settings.mongodb_url`. Every `mongomock://` URL shares one
    in-process store, so the demo's ingest app, worker, broker and dispatcher see one database."""
    if settings.embedded:
        return embedded_client()
    key = settings.mongodb_url
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = _new_client(settings)
            _clients[key] = client
        return client


def embedded_client() -> Any:
    """The in-process mongomock client (created on first use), for the embedded broker."""
    with _clients_lock:
        client = _clients.get(EMBEDDED)
        if client is None:
            import mongomock

            client = _clients[EMBEDDED] = mongomock.MongoClient(tz_aware=True)
        return client


def _new_client(settings: Settings) -> Any:
    timeout_ms = int(settings.mongodb_timeout_s * 1000)
    return pymongo.MongoClient(
        settings.mongodb_url,
        tz_aware=True,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        appname=f"ai-scientist-orchestrator/{settings.pod_id}",
    )


def get_db(settings: Settings) -> Database:
    """The database named by the URL's path."""
    return client_for(settings)[settings.database]


def forget_clients() -> None:
    """Close and drop every cached client, so a test leaves none open behind it."""
    with _clients_lock:
        for client in _clients.values():
            try:
                client.close()
            except Exception:  # noqa: BLE001 - closing a dead client must not mask the caller's error
                pass
        _clients.clear()


@dataclass(frozen=True)
class ServerFeatures:
    """What the connected server can do, probed once at start."""

    name: str
    version: str
    change_streams: bool

    @property
    def is_ferretdb(self) -> bool:
        return self.name == "FerretDB"


def probe_features(db: Database) -> ServerFeatures:
    """Ask the server what it is. FerretDB answers buildInfo with a `ferretdbVersion` field."""
    if type(db.client).__module__.startswith("mongomock"):
        return ServerFeatures(name="mongomock", version="embedded", change_streams=False)
    info = db.client.admin.command("buildInfo")
    ferret = "ferretdbVersion" in info or "ferretdb" in str(info.get("ferretdbFeatures", "")).lower()
    name = "FerretDB" if ferret else "MongoDB"
    hello = db.client.admin.command("hello")
    change_streams = not ferret and "setName" in hello
    return ServerFeatures(name=name, version=str(info.get("version", "?")), change_streams=change_streams)


def _ttl_index() -> IndexModel:
    return IndexModel([("processedAt", ASCENDING)], name=seen_retention.TTL_INDEX,
                      expireAfterSeconds=seen_retention.EVENTS_SEEN_TTL_S)


#: kombu's fanout collection and its size (kombu's own default, `capped_queue_size`).
BROADCAST_COLLECTION = "messages.broadcast"
BROADCAST_CAPPED_BYTES = 100_000


def _ensure_broadcast(db: Database) -> None:
    """Create kombu's capped broadcast collection before any broker client does.

    kombu checks for it and then creates it, so processes starting together on a fresh
    database race, and the loser dies with `CollectionInvalid: collection messages.broadcast
    already exists`, which Celery does not retry (seen: 2 of 30 tries with three processes)."""
    try:
        if BROADCAST_COLLECTION not in db.list_collection_names():
            db.create_collection(BROADCAST_COLLECTION, capped=True, size=BROADCAST_CAPPED_BYTES)
    except CollectionInvalid:
        pass  # another process created it first
    except NotImplementedError:
        pass  # mongomock has no capped collections; the embedded broker creates its own


def prepare_database(settings: Settings) -> list[str]:
    """`ensure_indexes` through a short-lived client, for a process about to fork (a Celery
    worker's parent, before the broker connects): no client crosses the fork."""
    if settings.embedded:
        return ensure_indexes(get_db(settings))
    client = _new_client(settings)
    try:
        return ensure_indexes(client[settings.database])
    finally:
        client.close()


def ensure_indexes(db: Database) -> list[str]:
    """Check the schema version (`orchestrator.schema`: SchemaError on a database newer than this
    release) and create every index; safe to call from every process at every start.

    Returns the warnings for features the server lacks, instead of crashing: FerretDB v1 answers
    a TTL index with NotImplemented, so there events_seen is not expired and the warning says how
    to prune it. Each is returned at every call and logged once per process
    (`server_warnings.warn_once`).
    """
    warnings: list[str] = []
    schema.check(db)
    _ensure_broadcast(db)
    for collection, models in index_plan.mongodb_indexes().items():
        for model in models:
            # One index per call: FerretDB v1.24 drops the connection (a Go panic, "slice bounds
            # out of range") when one createIndexes names two or more indexes that all exist,
            # i.e. on every start after the first (seen).
            _create_index(db, collection, model)
    try:
        db["events_seen"].create_indexes([_ttl_index()])
    except OperationFailure as exc:
        if exc.code != UNAUTHORIZED:
            warnings.append(_no_ttl(exc))
    except NotImplementedError as exc:
        warnings.append(_no_ttl(exc))
    if ferretdb_backend(db) == "sqlite":
        warnings.append(SQLITE_WARNING)
        server_warnings.warn_once("sqlite", SQLITE_WARNING)
    return warnings


SQLITE_WARNING = ("FerretDB's SQLite backend is for development only: it reads a whole collection for every query "
                  "but an _id lookup, so the system slows as history grows; use FerretDB on PostgreSQL or MongoDB "
                  "(README, \"Supported servers\")")


def ferretdb_backend(db: Database) -> str | None:
    """"postgresql" or "sqlite" for FerretDB, None for any other server. FerretDB names its
    backend nowhere but in `explain`: PostgreSQL's plan is a tree (a document), SQLite's a list
    of lines."""
    if type(db.client).__module__.startswith("mongomock"):
        return None
    if "ferretdbVersion" not in db.client.admin.command("buildInfo"):
        return None
    plan = db.command("explain", {"find": schema.META, "filter": {}}).get("queryPlanner", {}).get("Plan")
    return "sqlite" if isinstance(plan, list) else "postgresql"


#: MongoDB's error code for a command the user's roles do not allow.
UNAUTHORIZED = 13


def _create_index(db: Database, collection: str, model: IndexModel) -> None:
    """Create one index. A user whose role may not create indexes (docs/security.md: only the
    bootstrap user may) goes on when the index exists, and is told what to run when it does not."""
    try:
        db[collection].create_indexes([model])
    except OperationFailure as exc:
        name = model.document["name"]
        if exc.code == UNAUTHORIZED and name in db[collection].index_information():
            return
        hint = (" It is missing and this database user may not create it: run `manage-runs migrate` once as the "
                "bootstrap user (docs/security.md).") if exc.code == UNAUTHORIZED else ""
        raise OperationFailure(f"creating index {name} on {collection}: {exc}.{hint}", exc.code, exc.details) from exc
    except PyMongoError as exc:
        raise type(exc)(f"creating indexes on {collection}: {exc}") from exc


def _no_ttl(exc: BaseException) -> str:
    warning = (
        f"server cannot expire events_seen (TTL index refused: {exc}); the sweeper deletes dedup records "
        "an hour at a time once they are 7 days old (those written before this release: `manage-runs prune-seen`)"
    )
    server_warnings.warn_once("no-ttl", warning)
    return warning
