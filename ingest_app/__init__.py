"""The ingest service: where worker events become the documents the frontend reads.

`create_app` is the app factory (`gunicorn 'ingest_app:create_app()'`). It serves the two ingest
routes (`routes_ingest`), the read API (`api`) and the probes (`probes`), and keeps what the
blueprints share in `app.extensions["orchestrator"]` (an `AppState`).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, Response, current_app, g, request
from pymongo.database import Database
from pymongo.errors import ConnectionFailure, PyMongoError
from standardwebhooks.webhooks import Webhook
from werkzeug.exceptions import HTTPException

from ingest_app import auth
from ingest_app.metrics import IngestMetrics
from ingest_app.problem import problem
from orchestrator import db as dbmod
from orchestrator.errors import SettingsError
from orchestrator.settings import Settings
from orchestrator.storage import storage_from_settings

__all__ = ["AppState", "app_state", "create_app"]

log = logging.getLogger(__name__)

#: Seconds a client should wait after a 503 for MongoDB: about one server selection timeout.
RETRY_AFTER_S = 5


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
    return current_app.extensions["orchestrator"]


def create_app(settings: Settings | None = None, *, db: Database | None = None) -> Flask:
    """Build the app. Refuses to start (SettingsError) without INGEST_TOKEN unless
    INGEST_AUTH=disabled. A MongoDB that is down at start does not stop it: indexes are then
    created on the first ingest request (which answers 503 until they exist), and /readyz
    reports the outage meanwhile."""
    settings = settings if settings is not None else Settings.from_env()
    _configure_logging()
    _check_auth_settings(settings)
    log.info("ingest app starting with settings %s", settings.redacted())
    state = AppState(
        settings=settings,
        db=db if db is not None else dbmod.get_db(settings),
        metrics=IngestMetrics(),
        storage=storage_from_settings(settings),
        webhook=auth.make_verifier(settings),
    )
    try:
        state.prepare()
    except PyMongoError as exc:
        # Down, or racing another worker's createIndexes: either way not a reason to die at boot.
        log.error("indexes not ensured at start (%s); retried on the first ingest request", exc)
    app = Flask(__name__)
    app.extensions["orchestrator"] = state
    # Imported here: the blueprints import `AppState` from this package.
    from ingest_app import api, probes, routes_ingest

    for blueprint in (routes_ingest.bp, api.bp, probes.bp):
        app.register_blueprint(blueprint)
    _install_hooks(app)
    return app


def _configure_logging() -> None:
    """INFO and up of this package to stderr, unless the host (gunicorn's --log-config, pytest)
    already configured logging; then records just propagate to it."""
    package = logging.getLogger(__name__)
    if not logging.getLogger().handlers and not package.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s"))
        package.addHandler(handler)
    if package.level == logging.NOTSET:
        package.setLevel(logging.INFO)


def _check_auth_settings(settings: Settings) -> None:
    if settings.ingest_auth == "disabled":
        log.warning(
            "INGEST_AUTH=disabled: ingest accepts events from ANYONE who can reach this port. "
            "Use this open mode for local development only; set INGEST_TOKEN and remove INGEST_AUTH elsewhere."
        )
        return
    if not settings.ingest_token:
        raise SettingsError(
            "INGEST_TOKEN is not set, and the ingest app does not start without a credential. Set "
            "INGEST_TOKEN to the token the workers send (Authorization: Bearer ...), or set "
            "INGEST_AUTH=disabled for an open development mode."
        )


def _install_hooks(app: Flask) -> None:
    """Request timing and problem+json for every error the blueprints do not handle themselves."""

    @app.before_request
    def _start_timer() -> None:
        g._started = time.perf_counter()

    @app.after_request
    def _record_latency(response: Response) -> Response:
        try:
            started = g.get("_started")
            if started is not None:
                endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
                app_state().metrics.request_latency.labels(endpoint, request.method, str(response.status_code)).observe(
                    time.perf_counter() - started
                )
        except Exception:  # noqa: BLE001 - a metrics failure must never fail the request
            log.exception("recording request latency failed")
        return response

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        return problem(exc.code or 500, exc.name, exc.description)

    @app.errorhandler(ConnectionFailure)
    def _database_down(exc: ConnectionFailure) -> Response:
        log.warning("MongoDB unreachable for %s %s: %s", request.method, request.path, exc)
        return problem(
            503, "Service Unavailable", f"MongoDB is unreachable ({type(exc).__name__}); try again shortly.",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
