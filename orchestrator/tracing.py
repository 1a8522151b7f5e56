"""The run's trace: one W3C Trace Context trace per run, from enqueue to the stored documents.

Enqueue starts the trace and stores its `traceparent` on the run (`new_run_trace`); every later
piece of work on the run (the dispatch, the Celery task, the attempt and its steps, the uploads,
ingest applying its events) is a span under it (`run_span`). The worker's CloudEvents carry the
span they were emitted in (`current_traceparent`), so ingest continues the trace.

Only `opentelemetry-api` is used here. A process that set up the SDK (`telemetry.configure`)
records and exports the spans; in one that did not, the API's no-op tracer records nothing and
costs next to nothing, and the run's stored trace context is still carried along, so the trace
id joins the logs of every process whatever is exported.

This module also knows which run the current thread works on (`current_run`), for the logs.
"""

from __future__ import annotations

import contextvars
import functools
import random
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanContext, SpanKind, TraceFlags

#: The field of the run document (and the CloudEvents extension attribute) holding the context.
FIELD = "traceparent"
#: The instrumentation scope of our own spans.
SCOPE = "ai_scientist_orchestrator"
#: Most links one span gets (a batch of many runs' events links to each run's trace).
MAX_LINKS = 64

#: A `traceparent`: version, trace id, parent span id, flags, in lowercase hex (a later version
#: may add fields; those are refused, since nobody sends them yet).
TRACEPARENT = re.compile(r"\A[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}\Z")

#: (run id, attempt or None) of the work the current thread does, for the logs.
_RUN: contextvars.ContextVar[tuple[str, int | None] | None] = contextvars.ContextVar("run", default=None)


def parse(traceparent: Any) -> SpanContext | None:
    """The span context a `traceparent` names, or None when it is not a valid one (version ff
    and all-zero ids are invalid, as the W3C recommendation says)."""
    if not isinstance(traceparent, str) or not TRACEPARENT.match(traceparent) or traceparent.startswith("ff"):
        return None
    trace_id, span_id, flags = int(traceparent[3:35], 16), int(traceparent[36:52], 16), int(traceparent[53:], 16)
    if not trace_id or not span_id:
        return None
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags))


def format_traceparent(ctx: SpanContext) -> str:
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def trace_id_of(traceparent: Any) -> str | None:
    """The 32 hex digits of the trace id in `traceparent`, or None."""
    ctx = parse(traceparent)
    return f"{ctx.trace_id:032x}" if ctx is not None else None


def current_traceparent() -> str | None:
    """The `traceparent` of the span current in this thread, or None outside any trace."""
    ctx = trace.get_current_span().get_span_context()
    return _formatted(ctx) if ctx.is_valid else None


#: The last span context formatted, and its text: the worker stamps every event of a step with
#: the same one, so each is formatted once, not per event.
_last_formatted: tuple[SpanContext, str] | None = None


def _formatted(ctx: SpanContext) -> str:
    global _last_formatted
    last = _last_formatted  # one read: another thread may replace it meanwhile
    if last is not None and last[0] is ctx:
        return last[1]
    text = format_traceparent(ctx)
    _last_formatted = (ctx, text)
    return text


@functools.lru_cache(maxsize=1024)
def _trace_of(traceparent: str) -> int | None:
    ctx = parse(traceparent)
    return ctx.trace_id if ctx is not None else None


#: Where TRACE_URL_TEMPLATE puts a run's trace id.
TRACE_ID_PLACEHOLDER = "{trace_id}"


def trace_url(template: str | None, trace_id: str | None) -> str | None:
    """The run's trace in the operators' tracing UI (Jaeger, Tempo...), or None without a template."""
    if not template or not trace_id:
        return None
    return template.replace(TRACE_ID_PLACEHOLDER, trace_id)


def for_run(stored: Any) -> str | None:
    """The context an event or record of a run carries: the current span's when it is in the
    run's trace (`stored`, the run's or its attempt's context), else `stored` itself; None when
    `stored` is not a valid context (a frontend's run inserted without one, or with garbage):
    a request's own trace is never taken for the run's. Called for every event the worker
    emits, so the stored value is parsed once (cached), the current span formatted once."""
    trace_id = _trace_of(stored) if isinstance(stored, str) else None
    if trace_id is None:
        return None
    current = _current_in(trace_id)
    return _formatted(current) if current is not None else stored


def _current_in(trace_id: int) -> SpanContext | None:
    """The current span's context when it is in the trace `trace_id` (the run's), else None."""
    current = trace.get_current_span().get_span_context()
    return current if current.is_valid and current.trace_id == trace_id else None


def _random_context() -> SpanContext:
    """A fresh root context, sampled: a process with the SDK records the run's spans even when
    the process that enqueued it exports nothing."""
    return SpanContext(random.getrandbits(128) or 1, random.getrandbits(64) or 1, is_remote=False,
                       trace_flags=TraceFlags(TraceFlags.SAMPLED))


@contextmanager
def new_run_trace(name: str, run_id: str, attributes: dict[str, Any] | None = None) -> Iterator[str]:
    """Start a run's trace with a root span `name` and yield the `traceparent` to store on the
    run. A new trace, not a child of the request that asked: one trace per run. The request's
    span, if any, gets a link."""
    requester = current_traceparent()
    with run_span(name, run_id, None, links=[requester] if requester else (), attributes=attributes, root=True):
        yield current_traceparent() or ""


def _parent(stored: SpanContext | None, root: bool) -> otel_context.Context:
    """The context a span of the run starts in: the current one when it is already in the run's
    trace (the Celery task's span in a worker), else the run's stored context; an empty one
    (a new trace) for a run without a stored context when `root` or outside any span."""
    if stored is None:
        return otel_context.Context() if root else otel_context.get_current()
    if _current_in(stored.trace_id) is not None:
        return otel_context.get_current()
    return trace.set_span_in_context(NonRecordingSpan(stored))


@contextmanager
def run_span(name: str, run_id: str, traceparent: Any, *, attempt: int | None = None,
             kind: SpanKind = SpanKind.INTERNAL, links: Iterable[str] = (),
             attributes: dict[str, Any] | None = None, root: bool = False) -> Iterator[Span]:
    """A span of the run's trace (`traceparent`, the run's stored context; a new trace when it
    has none), current in this thread, with the run for the logs, until the block ends. An
    exception escaping the block is recorded on the span and re-raised."""
    parent = _parent(parse(traceparent), root)
    span = _tracer().start_span(name, context=parent, kind=kind, attributes=_attributes(run_id, attempt, attributes),
                             links=links_to(links))
    if not span.get_span_context().is_valid:  # no SDK, and no trace yet: the trace id is still made
        span = NonRecordingSpan(_random_context())
    with trace.use_span(span, end_on_exit=True), run_scope(run_id, attempt):
        yield span


@contextmanager
def span(name: str, *, kind: SpanKind = SpanKind.INTERNAL, links: Iterable[str] = (),
         attributes: dict[str, Any] | None = None) -> Iterator[Span]:
    """A child of the current span (an upload within a step, a batch within a request)."""
    with _tracer().start_as_current_span(name, kind=kind, attributes=_clean(attributes), links=links_to(links)) as current:
        yield current


@contextmanager
def events_span(name: str, traceparents: Iterable[Any], attributes: dict[str, Any] | None = None) -> Iterator[Span]:
    """Work on events of one run or many (ingest applying a batch): a span in the events' trace
    when they all belong to one (a worker's batch), else in the current one, linked to the
    trace of each."""
    links = links_to(traceparents)
    parent = _parent(links[0].context, False) if len(links) == 1 else otel_context.get_current()
    with trace.use_span(_tracer().start_span(name, context=parent, attributes=_clean(attributes), links=links),
                        end_on_exit=True) as current:
        yield current


@contextmanager
def untraced() -> Iterator[None]:
    """No span of the instrumentations in the block (the API's suppression key, which every
    OpenTelemetry instrumentation honours): a call whose span would leak a credential (a
    webhook URL's path is its key), or that repeats for as long as a run lasts (the lease
    renewal every few seconds would make a day's run a trace of tens of thousands of spans)."""
    token = otel_context.attach(otel_context.set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
    try:
        yield
    finally:
        otel_context.detach(token)


@contextmanager
def within(traceparent: Any) -> Iterator[None]:
    """Work done in the block continues the trace `traceparent` names (an event's), without a
    span of its own: the worker's POST of a run's events, whose HTTP span and `traceparent`
    header the requests instrumentation makes. Nothing changes when it names none."""
    ctx = parse(traceparent)
    if ctx is None:
        yield
        return
    token = otel_context.attach(trace.set_span_in_context(NonRecordingSpan(ctx)))
    try:
        yield
    finally:
        otel_context.detach(token)


def links_to(traceparents: Iterable[str]) -> list[Link]:
    """One link per distinct trace among `traceparents`, at most `MAX_LINKS`."""
    links: dict[int, Link] = {}
    for value in dict.fromkeys(v for v in traceparents if isinstance(v, str)):  # a batch repeats its runs' contexts
        ctx = parse(value)
        if ctx is not None and ctx.trace_id not in links:
            links[ctx.trace_id] = Link(ctx)
            if len(links) == MAX_LINKS:
                break
    return list(links.values())


@contextmanager
def run_scope(run_id: str, attempt: int | None) -> Iterator[None]:
    """The current thread works on this run (and attempt) until the block ends."""
    token = _RUN.set((run_id, attempt))
    try:
        yield
    finally:
        _RUN.reset(token)


def current_run() -> tuple[str, int | None] | None:
    """(run id, attempt or None) the current thread works on, or None."""
    return _RUN.get()


def _tracer() -> trace.Tracer:
    """This process's tracer, asked for at each span (a handful per attempt or batch, never per
    event): the provider may be set after this module is imported (the SDK, after a fork)."""
    return trace.get_tracer(SCOPE)


def _attributes(run_id: str, attempt: int | None, extra: dict[str, Any] | None) -> dict[str, Any]:
    attributes = {"run.id": run_id, **_clean(extra)}
    if attempt is not None:
        attributes["run.attempt"] = attempt
    return attributes


def _clean(attributes: dict[str, Any] | None) -> dict[str, Any]:
    """Span attributes must be str, bool, int or float: None is left out."""
    return {key: value for key, value in (attributes or {}).items() if value is not None}
