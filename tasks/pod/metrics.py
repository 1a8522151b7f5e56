"""Prometheus metrics of a worker, served on WORKER_METRICS_PORT (0: none) at BIND_HOST.

Served by the process that runs tasks, since that is where the emitter, the spool and the
heartbeat live: a prefork pool child (`tasks.hooks`, at `worker_process_init`), or the main
process of a solo or threads pool. The pool replaces its child (after every run with the shipped
`worker_max_tasks_per_child = 1`), so a new child may find the port still held by the one
exiting, which flushes its spool first: it binds in a thread that tries again every
`BIND_RETRY_S` until it can, and says so once in the log. Each child counts from zero; Prometheus'
`rate()` and `increase()` take such resets in their stride.

The emitter's counters, the spool's backlog, whether a run is in progress and the GPU are read
when Prometheus scrapes (`WorkerCollector`), from the live objects, so nothing is copied around;
the GPU through a short cache, so scrapes do not run nvidia-smi more often than every
`GPU_CACHE_S`. Step durations and lease renewals that failed are counted where they happen
(`observe_step`, `lease_renew_failed`). The metrics are in a registry of their own (`REGISTRY`):
the core's module-level counters (the dispatcher's, the sweeper's) mean nothing in a worker.

No metrics failure may break a task: the recording functions and the collector log and go on.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from orchestrator.settings import Settings
from tasks.pod.gpu import gpu_stats
from tasks.pod.runtime import Runtime, current_runtime

log = logging.getLogger(__name__)

#: Seconds between tries to bind a port another process (the pool child exiting) still holds.
BIND_RETRY_S = 1.0
#: Seconds a GPU reading is reused: nvidia-smi takes tens of milliseconds and up to its 5 s timeout.
GPU_CACHE_S = 10.0

#: How a step ended: `completed`, `failed` (its error failed the attempt, a timeout included), or
#: `stopped` (a cancel, the pod stopping, a lost lease); anything else is counted as `other`.
STEP_OUTCOMES = frozenset({"completed", "failed", "stopped"})
#: Why a lease renewal failed: the run's lease was no longer this attempt's (the sweeper ended
#: it), or the database did not answer.
LEASE_GONE, DATABASE_ERROR = "lease_gone", "database"

#: Steps last from seconds (the demo) to hours (AI-Scientist-v2's tree search).
STEP_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 86400)

REGISTRY = CollectorRegistry()

STEP_SECONDS = Histogram(
    "orchestrator_worker_step_duration_seconds",
    "Wall-clock seconds of a pipeline step in this worker, by pipeline, step and outcome (completed, failed, stopped).",
    ["pipeline", "step", "outcome"], buckets=STEP_BUCKETS, registry=REGISTRY,
)
LEASE_RENEW_FAILURES = Counter(
    "orchestrator_worker_lease_renew_failures_total",
    "Lease renewals of a running attempt that failed, by reason: lease_gone (the sweeper ended it) or database.",
    ["reason"], registry=REGISTRY,
)


def observe_step(step: str, outcome: str, seconds: float, *, pipeline: str = "") -> None:
    """Record one step's wall-clock duration. `outcome`: one of `STEP_OUTCOMES`. Never raises."""
    try:
        label = outcome if outcome in STEP_OUTCOMES else "other"
        STEP_SECONDS.labels(pipeline, step, label).observe(max(0.0, seconds))
    except Exception:  # noqa: BLE001 - a metric must never fail a run
        log.exception("could not record the duration of step %s", step)


def lease_renew_failed(reason: str) -> None:
    """Count a failed lease renewal (`LEASE_GONE` or `DATABASE_ERROR`). Never raises."""
    try:
        LEASE_RENEW_FAILURES.labels(reason).inc()
    except Exception:  # noqa: BLE001 - a metric must never break the heartbeat
        log.exception("could not count a failed lease renewal")


class CachedReading:
    """The value of `read`, read again only once `max_age_s` has passed; one reader at a time,
    so concurrent scrapes run one nvidia-smi, not one each."""

    def __init__(self, read: Callable[[], dict[str, Any]], max_age_s: float,
                 clock: Callable[[], float] = time.monotonic):
        self.read = read
        self.max_age_s = max_age_s
        self.clock = clock
        self._lock = threading.Lock()
        self._value: dict[str, Any] = {}
        self._at: float | None = None

    def __call__(self) -> dict[str, Any]:
        with self._lock:
            now = self.clock()
            if self._at is None or now - self._at >= self.max_age_s:
                self._value = self.read() or {}
                self._at = now
            return self._value


class WorkerCollector(Collector):
    """The worker's values at scrape time: its runtime's emitter and spool (none until the
    runtime starts: the emitter metrics are then absent), whether a run is in progress, and the
    GPU (absent on a CPU pod)."""

    def __init__(self, runtime: Callable[[], Runtime | None] = current_runtime,
                 gpu: Callable[[], dict[str, Any]] | None = None):
        self.runtime = runtime
        self.gpu = gpu or CachedReading(gpu_stats, GPU_CACHE_S)

    def collect(self) -> Iterable[Metric]:
        found: list[Metric] = []
        for part in (self._runtime_metrics, self._gpu_metrics):
            try:
                found.extend(part())
            except Exception:  # noqa: BLE001 - one broken source must not empty the scrape
                log.exception("worker metrics: %s failed", part.__name__)
        return found

    def _runtime_metrics(self) -> Iterator[Metric]:
        current = self.runtime()
        yield _gauge("orchestrator_worker_busy", "1 while this worker runs an attempt, else 0.",
                     int(current is not None and current.current is not None))
        yield _gauge("orchestrator_worker_emitter_running",
                     "1 while this worker's event sender thread is alive (0: none started yet, or it died).",
                     int(current is not None and current.emitter.running))
        if current is None:
            return
        stats = current.emitter.stats()
        yield _gauge("orchestrator_worker_spool_backlog_events", "Events in the spool not yet delivered to ingest.",
                     stats.backlog)
        yield _gauge("orchestrator_worker_spool_backlog_bytes", "Bytes of the events in the spool not yet delivered.",
                     stats.backlog_bytes)
        yield _counter("orchestrator_worker_events_sent", "Events ingest acknowledged (accepted or duplicate).",
                       stats.sent)
        yield _counter("orchestrator_worker_events_duplicate", "Events ingest acknowledged as already stored.",
                       stats.duplicates)
        yield _counter("orchestrator_worker_dead_letters", "Events ingest refused for good, moved to the spool's "
                       "dead-letters.jsonl.", stats.dropped_invalid)
        yield _counter("orchestrator_worker_send_failures", "POSTs to ingest that failed and will be tried again.",
                       stats.retries)
        yield _counter("orchestrator_worker_spool_write_errors", "Events or dead letters the spool could not write.",
                       stats.spool_errors)
        yield _gauge("orchestrator_worker_emit_blocked_max_seconds", "Longest an emit call has taken in this process.",
                     stats.blocked_max_s)

    def _gpu_metrics(self) -> Iterator[Metric]:
        reading = self.gpu()
        for key, name, doc, scale in _GPU_FIELDS:
            value = reading.get(key)
            if isinstance(value, int | float):
                yield _gauge(name, doc, float(value) * scale)


#: (gpu_stats key, metric, help, factor) of the first GPU.
_GPU_FIELDS = (
    ("gpu_util", "orchestrator_worker_gpu_utilization_percent", "Utilization of the first GPU, percent.", 1.0),
    ("mem_gb", "orchestrator_worker_gpu_memory_used_bytes", "Memory used on the first GPU, bytes.", 1e9),
    ("temp_c", "orchestrator_worker_gpu_temperature_celsius", "Temperature of the first GPU, degrees Celsius.", 1.0),
)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    """A counter whose value the emitter keeps; exposed as `{name}_total`."""
    return CounterMetricFamily(name, documentation, value=value)


#: The collector `REGISTRY` scrapes (tests give it a fake runtime and GPU).
COLLECTOR = WorkerCollector()
REGISTRY.register(COLLECTOR)
#: The process's own CPU, memory, file descriptors and GC, as the dispatcher serves them.
for _default in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
    REGISTRY.register(_default)

_serving_pid: int | None = None
_serving_lock = threading.Lock()


def serve_worker_metrics(settings: Settings | None = None, registry: CollectorRegistry = REGISTRY) -> MetricsBinder | None:
    """Serve `registry` on WORKER_METRICS_PORT in this process, once per process (again after a
    fork: a pool child serves, not its parent), binding in a thread that retries. None when the
    port is 0 or this process serves already. Never raises: metrics must not stop a worker."""
    global _serving_pid
    try:
        settings = settings or Settings.from_env()
    except Exception:  # noqa: BLE001 - the worker itself reports a bad setting at start
        log.exception("worker metrics not served: the settings could not be read")
        return None
    with _serving_lock:
        if not settings.worker_metrics_port or _serving_pid == os.getpid():
            return None
        _serving_pid = os.getpid()
    binder = MetricsBinder(settings.bind_host, settings.worker_metrics_port, registry)
    binder.start()
    return binder


class MetricsBinder:
    """Binds the metrics server, trying again every `retry_s` while the port is held, with one
    warning in the log however long that takes."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry, *, retry_s: float = BIND_RETRY_S):
        self.host, self.port, self.registry, self.retry_s = host, port, registry, retry_s
        self.server: Any = None
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, name="worker-metrics", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def run(self) -> None:
        warned = False
        while not self.stopped.is_set():
            try:
                self.server, _ = start_http_server(self.port, addr=self.host, registry=self.registry)
            except OSError as exc:
                if not warned:
                    log.warning("worker metrics: cannot listen on %s:%d yet (%s); the pool child before this one may "
                                "still hold it; trying again every %gs", self.host, self.port, exc, self.retry_s)
                    warned = True
                self.stopped.wait(self.retry_s)
                continue
            log.info("worker metrics on %s:%d/metrics (pid %d)", self.host, self.port, os.getpid())
            return

    def stop(self) -> None:
        """Stop trying, and stop serving (tests; a process's exit closes the socket anyway)."""
        self.stopped.set()
        self.thread.join(timeout=5)
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
