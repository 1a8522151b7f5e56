"""The ingest service: where worker events become the documents the frontend reads.

`create_app` is the app factory (`gunicorn 'ingest_app:create_app()'`). It serves the two ingest
routes (`routes_ingest`), the read API (`api`), the web console (`console`) and the probes (`probes`), and keeps what the
blueprints share in `app.extensions["orchestrator"]` (an `ingest_app.state.AppState`). The rules
(validation, dedup, mappers) are the core's (`orchestrator.ingest`); this package is HTTP.
"""

from __future__ import annotations

import logging
import time

from flask import Flask, Response, g, request
from flask_cors import CORS
from pymongo.database import Database
from pymongo.errors import PyMongoError
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from ingest_app import api, auth, console, limiter, probes, routes_ingest
from ingest_app.console import session as console_session
from ingest_app.metrics import IngestMetrics, method_label
from ingest_app.problem import database_down, problem
from ingest_app.state import AppState, app_state
from orchestrator import db as dbmod
from orchestrator.credentials import OPERATOR, READER, WORKER, Keyring
from orchestrator.errors import SettingsError
from orchestrator.settings import Settings
from orchestrator.storage import storage_from_settings
from telemetry import logs, traces

__all__ = ["create_app", "require_credential"]

log = logging.getLogger(__name__)
#: The web process's lines for people: the pid tells its gunicorn workers apart.
TEXT_FORMAT = "%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s"


def create_app(settings: Settings | None = None, *, db: Database | None = None) -> Flask:
    """Build the app. Refuses to start (SettingsError) without INGEST_TOKEN unless
    INGEST_AUTH=disabled (`ingest_app.auth` has who may call what). A MongoDB that is down at
    start does not stop it: indexes are then created on the first ingest request (which answers
    503 until they exist), and /readyz reports the outage meanwhile."""
    settings = settings if settings is not None else Settings.from_env()
    _configure_logging(settings)
    traces.configure("ingest")  # in each gunicorn worker: the app is built after the fork
    _check_auth_settings(settings)
    log.info("ingest app starting with settings %s", settings.redacted())
    state = AppState(
        settings=settings,
        db=db if db is not None else dbmod.get_db(settings),
        metrics=IngestMetrics(),
        storage=storage_from_settings(settings),
        webhook=auth.make_verifier(settings),
        keyring=Keyring(settings.credentials),
    )
    try:
        state.prepare()
    except PyMongoError as exc:
        # Down, or racing another worker's createIndexes: either way not a reason to die at boot.
        log.error("indexes not ensured at start (%s); retried on the first ingest request", exc)
    app = Flask(__name__)
    traces.instrument_flask(app)
    app.extensions["orchestrator"] = state
    for blueprint in (routes_ingest.bp, api.bp, probes.bp, console.bp):
        app.register_blueprint(blueprint)
    console_session.configure(app)
    _install_hooks(app)
    app.before_request(auth.authenticate)  # before the limiter's hook: the credential keys its limit
    app.after_request(auth.forget_failed_signature)
    state.sign_ins = limiter.install(app, state.db, settings, exempt=probes.bp)
    _install_network(app, settings)
    return app


def _install_network(app: Flask, settings: Settings) -> None:
    """The client address from X-Forwarded-For only behind TRUSTED_PROXIES proxies (anyone can
    send the header, so trusting it by default would let a client pick the address its failed
    sign-ins are counted against); CORS only for the origins CORS_ORIGINS names."""
    if settings.trusted_proxies:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxies, x_proto=settings.trusted_proxies)  # type: ignore[method-assign]
    if settings.cors_origins:
        CORS(app, resources={r"/api/*": {"origins": list(settings.cors_origins)}},
             allow_headers=["Authorization", "Content-Type"], expose_headers=["Location", "Retry-After"],
             supports_credentials=False, max_age=600)


def _configure_logging(settings: Settings) -> None:
    """INFO and up of this package, and warnings of the libraries and the core it calls, to
    stderr as LOG_FORMAT says, unless the host (gunicorn's --log-config, pytest, the demo)
    already configured logging; then records just propagate to it. The handler is the root's:
    a warning of `orchestrator` in a web worker was otherwise Python's bare last-resort line."""
    package = logging.getLogger(__name__)
    root = logging.getLogger()
    if not root.handlers and not package.handlers:
        root.addHandler(logs.stderr_handler(settings.log_format, process="ingest", text_format=TEXT_FORMAT))
    if package.level == logging.NOTSET:
        package.setLevel(logging.INFO)


def _check_auth_settings(settings: Settings) -> None:
    if settings.ingest_auth == "disabled":
        log.warning(
            "INGEST_AUTH=disabled: ingest accepts events from ANYONE who can reach this port. "
            "Use this open mode for local development only; set INGEST_TOKEN and remove INGEST_AUTH elsewhere."
        )
        return
    require_credential(settings)
    if not {credential.role for credential in settings.credentials} & {READER, OPERATOR}:
        log.warning("neither OPERATOR_TOKEN nor READER_TOKEN is set: the read and write API answers 401 to everyone")


def require_credential(settings: Settings) -> None:
    """Raise SettingsError when ingest would start open without INGEST_AUTH=disabled saying so;
    also checked by gunicorn's master before it starts workers (`ingest_app.gunicorn_conf`)."""
    if settings.ingest_auth != "disabled" and not any(c.role == WORKER for c in settings.credentials):
        raise SettingsError(
            "INGEST_TOKEN is not set, and the ingest app does not start without a credential. Set "
            "INGEST_TOKEN to the token the workers send (Authorization: Bearer ...; `manage-runs token` "
            "makes one), or set INGEST_AUTH=disabled for an open development mode."
        )


def _install_hooks(app: Flask) -> None:
    """Request timing, and problem+json for HTTP errors and a database outage on every route."""

    @app.before_request
    def _start_timer() -> None:
        g._started = time.perf_counter()

    @app.after_request
    def _record_latency(response: Response) -> Response:
        try:
            started = g.get("_started")
            if started is not None:
                endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
                labels = (endpoint, method_label(request.method), str(response.status_code))
                app_state().metrics.request_latency.labels(*labels).observe(time.perf_counter() - started)
        except Exception:  # noqa: BLE001 - a metrics failure must never fail the request
            log.exception("recording request latency failed")
        return response

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        if console.wants_page():  # a person's browser, outside the API: a page, not JSON
            return console.error_page(exc.code or 500, exc.name, exc.description or exc.name)
        return problem(exc.code or 500, exc.name, exc.description)

    @app.errorhandler(PyMongoError)
    def _database_error(exc: PyMongoError) -> Response:
        """The one answer to a database outage, on every route: 503 with Retry-After. That
        includes FerretDB up with its PostgreSQL down (`dbmod.is_unavailable`)."""
        if dbmod.is_unavailable(exc):
            log.warning("MongoDB unreachable for %s %s: %s", request.method, request.path, exc)
            return database_down(exc)
        log.error("database error on %s %s", request.method, request.path, exc_info=exc)
        return problem(500, "Internal Server Error", "The database refused the request; the server log has the details.")
