"""Prometheus metrics of the ingest app, in one registry per app so tests can read them.

Under gunicorn each worker is a process of its own, and a scrape reaches whichever worker
answers: with per-process counters, two scrapes a second apart could read 5 and then 11. So the
Procfile gives the web process a directory (PROMETHEUS_MULTIPROC_DIR), prometheus_client then
keeps every value in a file per process there, and `/metrics` adds up the files: one total,
whichever worker answers (`ingest_app.gunicorn_conf` empties the directory when the master
starts and tells the library when a worker dies). Without the variable (tests, one process)
`/metrics` reads this app's registry as before.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

#: The variable prometheus_client reads, at import, to keep values in files.
MULTIPROC_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

#: The methods a label may name; any other (a client can send any token as its method) is
#: "other", so made-up methods cannot grow /metrics without limit. Endpoints are the app's
#: route rules or "unmatched", a fixed set too.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_label(method: str) -> str:
    return method if method in METHODS else "other"


def multiprocess_dir() -> str | None:
    """The directory of the multiprocess mode, or None when this process counts alone."""
    return os.environ.get(MULTIPROC_DIR_VARIABLE) or None


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

    def scraped(self) -> CollectorRegistry:
        """What /metrics shows: this app's registry, or in multiprocess mode the sum over every
        worker's files of this app's metrics (and of nothing else: the core's module-level
        counters, the dispatcher's business, would otherwise show here at 0)."""
        path = multiprocess_dir()
        if path is None:
            return self.registry
        registry = CollectorRegistry()
        names = {metric.name for metric in self.registry.collect()}
        registry.register(_Only(names, MultiProcessCollector(None, path=path)))
        return registry


class _Only(Collector):
    """The metrics of `collector` whose names are in `names`."""

    def __init__(self, names: set[str], collector: MultiProcessCollector):
        self.names = names
        self.collector = collector

    def collect(self) -> Iterable[Metric]:
        return [metric for metric in self.collector.collect() if metric.name in self.names]
