"""Tracing in tests: the SDK with an in-memory exporter, set up for one test and taken down after.

The OpenTelemetry API lets a process set its tracer provider once; a test that needs a fresh one
resets that guard (the API's own test utilities do the same).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once

from telemetry import traces


def reset_tracing() -> None:
    """Back to no SDK: the API's no-op tracer, as in a process with tracing off."""
    provider = traces._provider
    if provider is not None:
        provider.shutdown()
    traces._provider, traces._pid = None, None
    trace._TRACER_PROVIDER_SET_ONCE = Once()  # type: ignore[attr-defined]
    trace._TRACER_PROVIDER = None  # type: ignore[attr-defined]


class Spans:
    """What the process exported so far, by name and by trace."""

    def __init__(self, exporter: InMemorySpanExporter):
        self.exporter = exporter

    @property
    def all(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.all if s.name == name]

    def one(self, name: str) -> ReadableSpan:
        found = self.named(name)
        assert len(found) == 1, f"{len(found)} spans named {name!r}; spans: {[s.name for s in self.all]}"
        return found[0]


@pytest.fixture
def spans() -> Iterator[Spans]:
    """The SDK on in this process (no instrumentations), every span kept in memory."""
    reset_tracing()
    exporter = InMemorySpanExporter()
    traces.configure("worker", exporter=exporter, instrument=False)
    try:
        yield Spans(exporter)
    finally:
        reset_tracing()


def hex_trace(span: ReadableSpan) -> str:
    assert span.context is not None
    return f"{span.context.trace_id:032x}"


def parent_span_id(span: ReadableSpan) -> str | None:
    return f"{span.parent.span_id:016x}" if span.parent is not None else None
