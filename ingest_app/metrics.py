"""Prometheus metrics of the ingest app, in one registry per app so tests can read them.

Counters are per process: under gunicorn with several workers each worker counts its own, and a
scrape sees whichever worker answered (the client library's multiprocess mode is not wired).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram

#: The methods a label may name; any other (a client can send any token as its method) is
#: "other", so made-up methods cannot grow /metrics without limit. Endpoints are the app's
#: route rules or "unmatched", a fixed set too.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_label(method: str) -> str:
    return method if method in METHODS else "other"


@dataclass
class IngestMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.events = Counter(
            "ingest_events_total", "Events received, by type and outcome (accepted, duplicate, invalid).",
            ["type", "outcome"], registry=self.registry,
        )
        self.batch_size = Histogram(
            "ingest_batch_events", "Events per ingest request.",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000), registry=self.registry,
        )
        self.request_latency = Histogram(
            "http_request_duration_seconds", "HTTP request latency by endpoint and status.",
            ["endpoint", "method", "status"], registry=self.registry,
        )
