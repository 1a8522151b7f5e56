"""What every blueprint of one app shares, kept in `app.extensions["orchestrator"]`."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from flask import current_app
from pymongo.database import Database
from standardwebhooks.webhooks import Webhook

from ingest_app.metrics import IngestMetrics
from orchestrator import db as dbmod
from orchestrator.credentials import Keyring
from orchestrator.settings import Settings


@dataclass
class AppState:
    """What every blueprint of one app shares. `storage` is the artifact store the download
    route presigns links from (MinIO, or the local ARTIFACT_DIR without MINIO_ENDPOINT)."""

    settings: Settings
    db: Database
    metrics: IngestMetrics
    storage: Any = None
    #: The Standard Webhooks verifier when INGEST_WEBHOOK_SECRET is set.
    webhook: Webhook | None = None
    #: The tokens this app accepts, with their roles.
    keyring: Keyring = field(default_factory=lambda: Keyring(()))
    #: Failed sign-ins per client address (`ingest_app.limiter.FailedSignIns`).
    sign_ins: Any = None
    #: What the server can do; known once `prepare` has run.
    features: dbmod.ServerFeatures | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def prepare(self) -> dbmod.ServerFeatures:
        """Once per process, before the first event is applied: create the indexes (the unique
        index on events_seen is the dedup authority, so ingest must not run without it) and
        probe the server. Raises `ConnectionFailure` while MongoDB is unreachable (the route
        answers 503)."""
        if self.features is not None:
            return self.features
        with self._lock:
            if self.features is None:
                dbmod.ensure_indexes(self.db)
                self.features = dbmod.probe_features(self.db)
        return self.features


def app_state() -> AppState:
    """The state of the app serving the current request."""
    state: AppState = current_app.extensions["orchestrator"]
    return state
