"""The OpenTelemetry SDK of one process: spans exported over OTLP/HTTP, and the instrumentations.

    telemetry.traces.configure("worker")   # once per process, after any fork

Tracing is on when the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set,
unless `OTEL_SDK_DISABLED=true`. Everything else is the SDK's own standard variables:
`OTEL_SERVICE_NAME` (default: the process's name: ingest, dispatcher, worker or cli),
`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`, `OTEL_EXPORTER_OTLP_HEADERS`,
`OTEL_BSP_SCHEDULE_DELAY`... Off, nothing here is imported and the API's no-op tracer costs next
to nothing; the run's trace id is still carried (`orchestrator.tracing`).

The instrumentations, each maintained by the OpenTelemetry project: Flask (a span per request,
continuing an incoming `traceparent`), Celery (the dispatcher's publish span travels in the
message headers to the worker's task span), pymongo (a span per database command) and requests
(a span per HTTP call, with the `traceparent` header injected: the worker's event POSTs continue
the run's trace into ingest).

Sampling: `OTEL_TRACES_SAMPLER` when set. By default every trace is kept, except a database
command or HTTP call made outside any traced work (the broker's polling, the sweeper's reads,
the presence records): one-span traces of those would bury the runs' traces. Whatever the
sampler, some calls are never traced (`orchestrator.tracing.untraced`): the heartbeat's, every
few seconds for as long as a run lasts, and the notifier's POST, whose URL is a credential.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from orchestrator.redaction import without_password

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger(__name__)

#: The variables that turn tracing on (the OTLP exporter's own).
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
#: The processes, as they name themselves (`service.name` unless OTEL_SERVICE_NAME is set).
PROCESSES = ("ingest", "dispatcher", "worker", "cli")
#: Every process's `service.namespace`: a backend groups the four services under it.
NAMESPACE = "ai-scientist-orchestrator"
#: Requests not worth a trace (probes and scrapes), unless OTEL_PYTHON_FLASK_EXCLUDED_URLS says otherwise.
EXCLUDED_URLS = "healthz,readyz,metrics,static"

#: How long an export may take (OTEL_EXPORTER_OTLP_TIMEOUT otherwise): the SDK's 10 s, retried,
#: would hold `manage-runs` and a pool child's exit that long when the collector is away.
EXPORT_TIMEOUT_S = 2.0
#: Longest wait for the last spans at a process's end.
EXIT_FLUSH_S = 3.0

_lock = threading.Lock()
_provider: TracerProvider | None = None
_pid: int | None = None


def enabled(env: Mapping[str, str] = os.environ) -> bool:
    """Is tracing on for a process started with `env`?"""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(env.get(name, "").strip() for name in ENDPOINT_VARIABLES)


def configure(process: str, *, exporter: SpanExporter | None = None, instrument: bool = True,
              env: Mapping[str, str] = os.environ) -> TracerProvider | None:
    """Set up the SDK for this process, once (a child forked after its parent set up keeps the
    parent's); None when tracing is off. `exporter`: tests pass an in-memory one, which turns tracing on and is written to
    synchronously; `instrument=False` leaves the libraries alone (unit tests)."""
    global _provider, _pid
    if process not in PROCESSES:
        raise ValueError(f"unknown process {process!r}; known: {', '.join(PROCESSES)}")
    with _lock:
        if _provider is not None:
            # Set up here, or inherited from a parent that forked after setting up (gunicorn
            # --preload): the API lets a process set its provider once, and the SDK restarts
            # its export thread in a forked child by itself. Instrumenting again would only warn.
            _pid = os.getpid()
            return _provider
        if exporter is None and not enabled(env):
            return None
        _provider = _make_provider(process, exporter, env)
        _pid = os.getpid()
        if instrument:
            _instrument(process)
        where = "the test's exporter" if exporter else without_password(_endpoint(env))
        log.info("tracing on: %s spans go to %s", process, where)
        return _provider


def flush(timeout_s: float = EXIT_FLUSH_S) -> None:
    """Export what is buffered now: before a process ends without `atexit` (os._exit, a pool
    child), or a test reads what was exported."""
    if _provider is not None and _pid == os.getpid():
        _provider.force_flush(int(timeout_s * 1000))


def _endpoint(env: Mapping[str, str]) -> str:
    return next(env[name] for name in reversed(ENDPOINT_VARIABLES) if env.get(name, "").strip())


def _make_provider(process: str, exporter: SpanExporter | None, env: Mapping[str, str]) -> TracerProvider:
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    attributes: dict[str, Any] = {"service.namespace": NAMESPACE, "process.role": process}
    if not env.get("OTEL_SERVICE_NAME", "").strip():
        attributes["service.name"] = process
    provider = TracerProvider(resource=Resource.create(attributes), sampler=_sampler(env))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        timeout = None if _timeout_set(env) else EXPORT_TIMEOUT_S
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(timeout=timeout)))
    trace.set_tracer_provider(provider)
    return provider


def _timeout_set(env: Mapping[str, str]) -> bool:
    return any(env.get(name, "").strip() for name in ("OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"))


def _sampler(env: Mapping[str, str]) -> Any:
    """OTEL_TRACES_SAMPLER when set (None lets the SDK read it); else every trace but the orphan
    client calls."""
    if env.get("OTEL_TRACES_SAMPLER", "").strip():
        return None
    from opentelemetry.sdk.trace.sampling import ParentBased

    return ParentBased(root=_no_orphan_clients())


def _no_orphan_clients() -> Any:
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Decision, Sampler, SamplingResult
    from opentelemetry.trace import SpanKind

    class NoOrphanClients(Sampler):
        """Drops a root span of kind CLIENT: a call outside any traced work."""

        def should_sample(self, parent_context: Any, trace_id: int, name: str, kind: SpanKind | None = None,
                          attributes: Any = None, links: Sequence[Any] | None = None, trace_state: Any = None,
                          ) -> SamplingResult:
            if kind == SpanKind.CLIENT:
                return SamplingResult(Decision.DROP)
            return ALWAYS_ON.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

        def get_description(self) -> str:
            return "NoOrphanClients"

    return NoOrphanClients()


def _instrument(process: str) -> None:
    """The maintained instrumentations of the libraries this process calls. Flask's is per app
    (`instrument_flask`)."""
    from opentelemetry.instrumentation.pymongo import PymongoInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    PymongoInstrumentor().instrument()
    RequestsInstrumentor().instrument()
    if process in ("dispatcher", "worker", "cli"):  # they publish (dispatcher, cli's sweep) or run tasks
        from opentelemetry.instrumentation.celery import CeleryInstrumentor

        CeleryInstrumentor().instrument()


def instrument_flask(app: Any) -> None:
    """A span per request of `app`, when this process traces."""
    if _provider is None or _pid != os.getpid():
        return
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    FlaskInstrumentor().instrument_app(app, excluded_urls=os.environ.get("OTEL_PYTHON_FLASK_EXCLUDED_URLS", EXCLUDED_URLS))
