"""kombu's MongoDB transport on the in-process mongomock database, for `mongomock://` URLs.

The one place where the embedded mode adapts kombu: the stock transport connects with
pymongo's `MongoClient` and creates `messages.broadcast` as a capped collection, which mongomock
refuses (`NotImplementedError`). This subclass hands kombu the shared embedded database and
creates the broadcast collection uncapped, and like the `mongodb://` one stops polling once the
worker is stopping (`tasks.broker`); everything else (fetch by find-and-delete, priority,
routing, fanout) is kombu's own code. Registered under the alias "mongomock" by `register()`.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import TRANSPORT_ALIASES, mongodb

from orchestrator.db import embedded_client
from tasks.broker import StopPollingAtShutdown

ALIAS = "mongomock"


class Channel(mongodb.Channel):
    def _open(self, scheme: str = "mongodb://") -> Any:
        database = self.connection.client.virtual_host or self.default_database
        return embedded_client()[database.strip("/") or self.default_database]

    def _create_broadcast(self, database: Any) -> None:
        if self.broadcast_collection not in database.list_collection_names():
            database.create_collection(self.broadcast_collection)


class Transport(StopPollingAtShutdown, mongodb.Transport):
    Channel = Channel
    driver_type = "mongodb"
    driver_name = "mongomock"


def register() -> None:
    """Make `mongomock://host/db` broker URLs resolve to this transport (idempotent)."""
    TRANSPORT_ALIASES.setdefault(ALIAS, f"{__name__}:Transport")
