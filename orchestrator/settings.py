"""Settings for every process, read once from the environment.

Each value is checked at start-up: a malformed one raises `SettingsError` naming the variable,
its value and what would be accepted, so a pod fails at boot and not an hour into a run.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from orchestrator import credentials
from orchestrator.credentials import Credential
from orchestrator.env_values import (
    local_address,
    read_boolean,
    read_choice,
    read_endpoint,
    read_host,
    read_http_url,
    read_integer,
    read_networks,
    read_number,
    read_optional_url,
    read_origins,
    read_rate,
    read_text,
)
from orchestrator.errors import SettingsError
from orchestrator.redaction import split_password, url_host, without_password
from orchestrator.statuses import RunStatus
from orchestrator.tracing import TRACE_ID_PLACEHOLDER

#: The control plane's own credentials: never handed to code a pipeline runs (AI-Scientist-v2
#: executes code an LLM wrote), which needs only its model keys.
SECRET_VARIABLES = (
    "MONGODB_URL", *credentials.VARIABLES.values(), "INGEST_WEBHOOK_SECRET", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY",
    "SECRET_KEY", "NOTIFY_URL", "NOTIFY_SECRET",
)
DEFAULT_MONGODB_URL = "mongodb://localhost:27017/ai_scientist"

#: Defaults of a new run, here once for the API, the CLI, the dispatcher and the worker.
#: The queue GPU pods consume (`celery -A tasks worker -Q gpu`).
DEFAULT_QUEUE = "gpu"
#: The pipeline a run gets when it names none: the demo, which needs no GPU and no LLM.
DEFAULT_PIPELINE = "demo"
#: The pipelines this package ships (`pipeline.registry` holds their code; a worker may add more
#: through PIPELINE_MODULES). Named here so the web console offers them without importing the
#: pipelines' numpy and matplotlib into every web process.
BUILTIN_PIPELINES = ("demo", "ai_scientist")
#: 0 (lowest) .. 9 (highest), as Celery's message priority.
DEFAULT_PRIORITY = 5
#: Attempts per run (the first try plus automatic retries of retryable failures); MAX_ATTEMPTS.
DEFAULT_MAX_ATTEMPTS = 3
#: The statuses a run notification is sent for (NOTIFY_ON): a result to review, a failure, a decision.
DEFAULT_NOTIFY_ON = ("AWAITING_HUMAN", "FAILED", "HUMAN_VALIDATED", "HUMAN_REJECTED")
#: The bodies a notification can have (NOTIFY_FORMAT): our JSON object, or a Slack message.
NOTIFY_FORMATS = ("json", "slack")
#: How every process writes its log records to stderr (LOG_FORMAT): for people, or one JSON
#: object a line for a log collector (`telemetry.logs`).
LOG_FORMATS = ("text", "json")
#: Where the processes listen (BIND_HOST): this machine only, unless told otherwise.
DEFAULT_BIND_HOST = "127.0.0.1"
#: The web process's port (WEB_PORT), and with it INGEST_URL's default.
DEFAULT_WEB_PORT = 8000
#: Variables a process reads outside `Settings`, each with what reads it: the Procfile's shell
#: lines, libraries, the pod runtime. Declared here, with their defaults, so one test
#: (tests/test_configuration_documented.py) holds these, `Settings`, the Procfile, `.env.example`
#: and the README's tables in agreement. honcho's per-process PORT is not among them: no process reads it.
PROCESS_VARIABLES = {
    "WEB_CONCURRENCY": "Procfile: gunicorn workers of the web process (4)",
    "FLOWER_PORT": "Procfile: Flower's port (5555), on BIND_HOST",
    "DATA_DIR": "Procfile: Flower's state and the web process's Prometheus files (./data)",
    "PROMETHEUS_MULTIPROC_DIR": "prometheus_client: set by the Procfile for the web process alone (DATA_DIR/prometheus/web)",
    "FLOWER_BASIC_AUTH": "Flower: user:password for its pages and API",
    "POD_REGION": "worker: the pod's region, reported in ai.run.started",
    "POD_IMAGE": "worker: the pod's image, reported in ai.run.started",
    "SSL_CERT_FILE": "CA bundle for HTTPS to the S3 endpoint (certifi's otherwise)",
    # OpenTelemetry's own variables, read by the SDK and by `telemetry.traces` (which needs the
    # first three to decide whether to trace at all); every other OTEL_* works as documented.
    "OTEL_EXPORTER_OTLP_ENDPOINT": "telemetry: tracing on, spans exported over OTLP/HTTP to this collector",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "telemetry: as OTEL_EXPORTER_OTLP_ENDPOINT, for traces only (the full URL)",
    "OTEL_SDK_DISABLED": "telemetry: true turns tracing off whatever the endpoint",
    "OTEL_SERVICE_NAME": "telemetry: the service name in place of the process's own (ingest, dispatcher, worker, cli)",
    "OTEL_TRACES_SAMPLER": "telemetry: the SDK's sampler in place of ours (every trace but orphan client calls)",
    "OTEL_PYTHON_FLASK_EXCLUDED_URLS": "telemetry: requests not traced (healthz,readyz,metrics,static)",
    "OTEL_EXPORTER_OTLP_TIMEOUT": "telemetry: seconds an export may take (ours: 2, so a collector away holds no exit long)",
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "telemetry: as OTEL_EXPORTER_OTLP_TIMEOUT, for traces only",
}


def _mongodb_url(env: Mapping[str, str]) -> tuple[str, str]:
    """Return the URL and its database name (the URL's path). Every message shows the URL with
    its password masked: these messages end up in terminals, pod logs and CI output."""
    url = read_text(env, "MONGODB_URL", DEFAULT_MONGODB_URL)
    assert url is not None
    shown = without_password(url)
    scheme = url.partition("://")[0] if "://" in url else ""
    if scheme not in ("mongodb", "mongodb+srv", "mongomock"):
        raise SettingsError(
            f"MONGODB_URL={shown!r} must start with mongodb://, mongodb+srv:// or mongomock:// "
            "(mongomock:// is the in-process embedded database for the demo and unit tests)."
        )
    parsed = _parse_mongodb_url(url, shown)
    database = parsed["database"] or ""
    if not database:
        raise SettingsError(
            f"MONGODB_URL={shown!r} names no database; add it as the path, e.g. {DEFAULT_MONGODB_URL}."
        )
    if parsed["collection"] or " " in database:
        raise SettingsError(f"MONGODB_URL={shown!r}: the path is not a valid database name "
                            "(no '.', '/' or spaces); use e.g. ai_scientist.")
    return url, database


def _parse_mongodb_url(url: str, shown: str) -> dict[str, Any]:
    """pymongo's own checks of the URL (hosts, ports, escaping, options), run here so a bad URL
    fails at start as a SettingsError instead of as pymongo's InvalidURI, ConfigurationError or
    ValueError, which name no variable, when the first client is made. This is the check
    `MongoClient()` itself runs (`_validate_uri`): the public `parse_uri` does the same and then
    resolves a mongodb+srv:// name in DNS, which reading settings must not wait for. A
    mongomock:// URL is checked as the mongodb:// URL it imitates."""
    # Imported here: the pipeline package reads this module's defaults and must not load pymongo.
    from pymongo.errors import PyMongoError
    from pymongo.uri_parser_shared import _validate_uri

    checked = "mongodb://" + url.partition("://")[2] if url.startswith("mongomock://") else url
    try:
        return _validate_uri(checked, warn=True, normalize=False)
    except (PyMongoError, ValueError) as exc:
        _, password, _ = split_password(url)
        reason = (str(exc).replace(password, "***") if password else str(exc)).rstrip(".")
        raise SettingsError(
            f"MONGODB_URL={shown!r} is not a valid MongoDB URL: {reason}; fix it, e.g. {DEFAULT_MONGODB_URL} "
            "(escape '@', ':' and '/' in the user name and password as %40, %3A and %2F)."
        ) from None


def _webhook_secret(env: Mapping[str, str], name: str) -> str | None:
    secret = read_text(env, name, None)
    if secret is not None:
        credentials.webhook(name, secret)  # the one rule of webhook secrets; never echoes it
    return secret


def read_log_format(env: Mapping[str, str] | None = None) -> str:
    """LOG_FORMAT on its own: `manage-runs` sets its logging up before, and without, the other
    settings, which commands such as `token` never read."""
    return read_choice(os.environ if env is None else env, "LOG_FORMAT", LOG_FORMATS)


def _statuses(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """A comma-separated list of run statuses (any case), in the order given."""
    raw = read_text(env, name, None)
    if raw is None:
        return default
    found: list[str] = []
    for entry in raw.split(","):
        status = entry.strip().upper()
        if not status:
            continue
        if status not in RunStatus.__members__:
            raise SettingsError(f"{name}: {entry.strip()!r} is not a run status; use any of {', '.join(RunStatus)}.")
        if status not in found:
            found.append(status)
    if not found:
        raise SettingsError(f"{name}={raw!r} names no status; leave it unset for {','.join(default)}.")
    return tuple(found)


@dataclass(frozen=True)
class Settings:
    """Every tunable of every process. Units are in the names: _s seconds, _bytes bytes."""

    mongodb_url: str
    database: str
    #: Base URL of the ingest app; the worker posts events to {ingest_url}/api/ingest/events.
    #: Defaults to the web process on this machine (http://BIND_HOST:WEB_PORT, 127.0.0.1 for 0.0.0.0).
    ingest_url: str
    #: Where the web process (and Flower, and the dispatcher's and workers' metrics) listen: BIND_HOST, WEB_PORT.
    bind_host: str
    web_port: int
    #: The token the worker sends: the first entry of INGEST_TOKEN. Never logged.
    ingest_token: str | None
    #: Every credential the API accepts, with its role and name (`orchestrator.credentials`).
    credentials: tuple[Credential, ...]
    #: "required" (default) or "disabled" for an open development mode.
    ingest_auth: str
    #: Optional Standard Webhooks secret (whsec_...); when set, ingest also accepts signed requests.
    ingest_webhook_secret: str | None
    minio_endpoint: str | None
    minio_access_key: str | None
    minio_secret_key: str | None
    minio_bucket: str
    minio_secure: bool
    #: Where artifacts go when no MINIO_ENDPOINT is set (the embedded demo).
    artifact_dir: str
    pod_id: str
    #: Server selection timeout: how long a call waits for an unreachable MongoDB before failing.
    mongodb_timeout_s: float
    #: How often an idle worker polls its queue (one find-and-delete per poll). 0.5 s: 100 idle
    #: pods send about 350 commands/s, against 1,130 at 0.1 s, and a run that finds one pod idle
    #: waits up to half a second for its poll (BENCHMARKS.md, "Idle load").
    broker_polling_interval_s: float
    #: Dispatcher sweep interval when the server has no change streams (FerretDB, standalone).
    dispatch_interval_s: float
    #: Worker heartbeat: lease renewal, ai.run.heartbeat and the cancel check.
    heartbeat_interval_s: float
    #: Lease length: a worker silent this long is presumed dead and its run is requeued.
    lease_s: float
    #: How far apart the clocks of pods and sweepers may be (NTP keeps them much closer): the
    #: sweeper judges a lease expired only this long after its `leaseExpiresAt`.
    clock_skew_s: float
    #: After a cancel is seen, how long the pipeline has to reach a checkpoint before it is interrupted.
    cancel_grace_s: float
    #: A SCHEDULED run with no claim after this long is dispatched again (lost broker message).
    schedule_timeout_s: float
    #: How often the dispatcher process runs the sweeper (lost dispatches, expired leases).
    sweep_interval_s: float
    #: Port of the dispatcher's Prometheus endpoint (0: none).
    metrics_port: int
    #: Port of a worker's Prometheus endpoint, served by the process that runs its tasks (0: none).
    worker_metrics_port: int
    #: Default attempts per run (first try plus retries).
    max_attempts: int
    #: Extra modules whose `PIPELINES` dict (name -> factory) the worker adds to the registry,
    #: so a site can add pipelines without forking this package (PIPELINE_MODULES=a.b,c.d).
    pipeline_modules: tuple[str, ...]
    #: Directory for the worker's durable event spool.
    spool_dir: str
    #: Directory where runs write their files before upload (one subfolder per run and attempt).
    work_dir: str
    #: Ingest limits: whole body, events in one batch, one NDJSON line.
    max_body_bytes: int
    max_batch_events: int
    max_line_bytes: int
    #: Requests per credential (and, without one, per client address), in the `limits` notation
    #: ("100/second", "5000/hour;100/second"); RATE_LIMIT, empty to turn it off.
    rate_limit: str
    #: Failed authentications per client address before it gets 429 (AUTH_FAILURE_LIMIT).
    auth_failure_limit: str
    #: Proxies in front of the app whose X-Forwarded-For is trusted (0: use the peer address).
    trusted_proxies: int
    #: Networks the worker routes accept requests from (none given: any).
    ingest_allow_cidrs: tuple[str, ...]
    #: Browser origins allowed to call the API across sites (CORS); none by default.
    cors_origins: tuple[str, ...]
    #: Signs the web console's session cookies (SECRET_KEY); without it nobody can sign in.
    secret_key: str | None
    #: Send the console's cookie over HTTPS only (CONSOLE_COOKIE_SECURE): set it when the
    #: console is served over TLS, as it should be anywhere but a laptop.
    console_cookie_secure: bool
    #: How often a worker process writes its presence record (`orchestrator.pods`): last seen,
    #: its run, GPU telemetry. A pod silent for 3 intervals is shown as gone.
    presence_interval_s: float
    #: Outgoing run notifications (`orchestrator.notify`, sent by the dispatcher process): the
    #: receiver (None: none are sent). A credential: a Slack incoming webhook's path is its key.
    notify_url: str | None
    #: Optional Standard Webhooks secret (whsec_...) the notifications are signed with.
    notify_secret: str | None
    #: "json" (our object) or "slack" ({"text", "blocks"}, for a Slack incoming webhook).
    notify_format: str
    #: The run statuses a notification is sent for.
    notify_on: tuple[str, ...]
    #: The web console's public base URL, for a link to the run in each notification (None: no link).
    console_url: str | None
    #: A link to a run's trace in the tracing UI, with `{trace_id}` where its id goes
    #: (TRACE_URL_TEMPLATE, e.g. https://jaeger.lab.example.org/trace/{trace_id}); None: no link.
    trace_url_template: str | None
    #: "text" (for people) or "json" (one object a line), every process's log on stderr.
    log_format: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read and check every setting; raise `SettingsError` on the first bad one."""
        env = os.environ if env is None else env
        url, database = _mongodb_url(env)
        found = credentials.from_env(env)
        auth = (read_text(env, "INGEST_AUTH", "required") or "required").lower()
        if auth not in ("required", "disabled"):
            raise SettingsError(f"INGEST_AUTH={auth!r} must be 'required' or 'disabled'.")
        web_port = read_integer(env, "WEB_PORT", DEFAULT_WEB_PORT, maximum=65535)
        bind_host = read_host(env, "BIND_HOST", DEFAULT_BIND_HOST)
        settings = cls(
            mongodb_url=url,
            database=database,
            ingest_url=read_http_url(env, "INGEST_URL", f"http://{local_address(bind_host)}:{web_port}"),
            bind_host=bind_host,
            web_port=web_port,
            ingest_token=_worker_token(found),
            credentials=found,
            ingest_auth=auth,
            ingest_webhook_secret=read_text(env, "INGEST_WEBHOOK_SECRET", None),
            minio_endpoint=read_endpoint(env, "MINIO_ENDPOINT"),
            minio_access_key=read_text(env, "MINIO_ACCESS_KEY", None),
            minio_secret_key=read_text(env, "MINIO_SECRET_KEY", None),
            minio_bucket=read_text(env, "MINIO_BUCKET", "ai-scientist") or "ai-scientist",
            minio_secure=read_boolean(env, "MINIO_SECURE", False),
            artifact_dir=read_text(env, "ARTIFACT_DIR", os.path.abspath("artifacts")) or "artifacts",
            pod_id=read_text(env, "POD_ID", socket.gethostname()) or "pod",
            mongodb_timeout_s=read_number(env, "MONGODB_TIMEOUT_S", 5.0, minimum=0.1),
            broker_polling_interval_s=read_number(env, "BROKER_POLLING_INTERVAL_S", 0.5, minimum=0.01),
            dispatch_interval_s=read_number(env, "DISPATCH_INTERVAL", 1.0, minimum=0.01),
            heartbeat_interval_s=read_number(env, "HEARTBEAT_INTERVAL_S", 15.0, minimum=0.05),
            lease_s=read_number(env, "LEASE_S", 90.0, minimum=0.1),
            clock_skew_s=read_number(env, "CLOCK_SKEW_S", 5.0, minimum=0.0),
            cancel_grace_s=read_number(env, "CANCEL_GRACE_S", 30.0, minimum=0.0),
            schedule_timeout_s=read_number(env, "SCHEDULE_TIMEOUT_S", 300.0, minimum=0.1),
            sweep_interval_s=read_number(env, "SWEEP_INTERVAL_S", 5.0, minimum=0.05),
            metrics_port=read_integer(env, "DISPATCHER_METRICS_PORT", 0, minimum=0, maximum=65535),
            worker_metrics_port=read_integer(env, "WORKER_METRICS_PORT", 0, minimum=0, maximum=65535),
            max_attempts=read_integer(env, "MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS),
            pipeline_modules=tuple(m.strip() for m in (read_text(env, "PIPELINE_MODULES", "") or "").split(",") if m.strip()),
            spool_dir=read_text(env, "SPOOL_DIR", os.path.abspath(".spool")) or ".spool",
            work_dir=read_text(env, "WORK_DIR", os.path.abspath("work")) or "work",
            max_body_bytes=read_integer(env, "INGEST_MAX_BODY_BYTES", 5 * 1024 * 1024),
            max_batch_events=read_integer(env, "INGEST_MAX_BATCH_EVENTS", 1000),
            max_line_bytes=read_integer(env, "INGEST_MAX_LINE_BYTES", 256 * 1024),
            rate_limit=read_rate(env, "RATE_LIMIT", "100/second"),
            auth_failure_limit=read_rate(env, "AUTH_FAILURE_LIMIT", "20/minute"),
            trusted_proxies=read_integer(env, "TRUSTED_PROXIES", 0, minimum=0),
            ingest_allow_cidrs=read_networks(env, "INGEST_ALLOW_CIDRS"),
            cors_origins=read_origins(env, "CORS_ORIGINS"),
            secret_key=_secret_key(env),
            console_cookie_secure=read_boolean(env, "CONSOLE_COOKIE_SECURE", False),
            presence_interval_s=read_number(env, "PRESENCE_INTERVAL_S", 10.0, minimum=0.05),
            notify_url=read_optional_url(env, "NOTIFY_URL", "https://receiver.example.org/hooks/runs", secret=True),
            notify_secret=_webhook_secret(env, "NOTIFY_SECRET"),
            notify_format=read_choice(env, "NOTIFY_FORMAT", NOTIFY_FORMATS),
            notify_on=_statuses(env, "NOTIFY_ON", DEFAULT_NOTIFY_ON),
            console_url=read_optional_url(env, "CONSOLE_URL", "https://console.lab.example.org"),
            trace_url_template=_trace_url_template(env),
            log_format=read_log_format(env),
        )
        settings._check_consistency()
        return settings

    def _check_consistency(self) -> None:
        if self.lease_s <= self.heartbeat_interval_s:
            raise SettingsError(
                f"LEASE_S={self.lease_s} must be longer than HEARTBEAT_INTERVAL_S="
                f"{self.heartbeat_interval_s}, or every lease expires before it is renewed."
            )
        if self.minio_endpoint and not (self.minio_access_key and self.minio_secret_key):
            raise SettingsError("MINIO_ENDPOINT is set but MINIO_ACCESS_KEY or MINIO_SECRET_KEY is not.")

    @property
    def embedded(self) -> bool:
        """True for mongomock://: everything runs in one process with no services."""
        return self.mongodb_url.startswith("mongomock://")

    @property
    def bind_address(self) -> str:
        """host:port for gunicorn's bind, an IPv6 address in brackets."""
        host = f"[{self.bind_host}]" if ":" in self.bind_host else self.bind_host
        return f"{host}:{self.web_port}"

    @property
    def broker_url(self) -> str:
        """The MongoDB URL for kombu, with server selection bounded so an unreachable server
        fails a connect in `mongodb_timeout_s` instead of pymongo's 30 s."""
        if self.embedded or "serverselectiontimeoutms" in self.mongodb_url.lower():
            return self.mongodb_url
        joiner = "&" if "?" in self.mongodb_url else "?"
        return f"{self.mongodb_url}{joiner}serverSelectionTimeoutMS={int(self.mongodb_timeout_s * 1000)}"

    def redacted(self) -> dict[str, object]:
        """The settings as a dict with secrets masked, for start-up logs."""
        secret = {"ingest_token", "minio_secret_key", "ingest_webhook_secret", "secret_key", "notify_secret"}
        out: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = "***" if f.name in secret and value else value
        out["credentials"] = [f"{c.role}:{c.label}" for c in self.credentials]
        for name in ("mongodb_url", "ingest_url", "minio_endpoint"):
            if out[name]:
                out[name] = without_password(str(out[name]))  # a URL may carry user:password too
        if self.notify_url:
            out["notify_url"] = url_host(self.notify_url)
        return out


def _trace_url_template(env: Mapping[str, str]) -> str | None:
    example = f"https://jaeger.lab.example.org/trace/{TRACE_ID_PLACEHOLDER}"
    template = read_optional_url(env, "TRACE_URL_TEMPLATE", example)
    if template is not None and TRACE_ID_PLACEHOLDER not in template:
        raise SettingsError(f"TRACE_URL_TEMPLATE={template!r} must contain {TRACE_ID_PLACEHOLDER} where the run's trace id "
                            f"goes, e.g. {example}.")
    return template


#: Shortest SECRET_KEY: as long as a token `manage-runs token` makes.
MIN_SECRET_KEY_CHARS = 32


def _secret_key(env: Mapping[str, str]) -> str | None:
    value = read_text(env, "SECRET_KEY", None)
    if value is not None and (len(value) < MIN_SECRET_KEY_CHARS or len(set(value)) < 10):
        raise SettingsError(
            f"SECRET_KEY is too weak ({len(value)} characters): it signs the console's sessions, so use at least "
            f"{MIN_SECRET_KEY_CHARS} random characters (`manage-runs token` prints one).")
    return value


def _worker_token(found: tuple[Credential, ...]) -> str | None:
    worker = next((c for c in found if c.role == credentials.WORKER), None)
    return worker.token if worker is not None else None
