"""A worker's Prometheus metrics (`tasks.pod.metrics`): the collector reads the live runtime (a real
emitter and spool against a fake ingest), the GPU through a cache, step durations and failed lease
renewals are counted, WORKER_METRICS_PORT is checked, and the real HTTP server answers a real GET,
also after waiting for a port another process held."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from pymongo.errors import AutoReconnect

from orchestrator import claims
from orchestrator.errors import SettingsError
from orchestrator.retry import Backoff
from tasks.pod import metrics
from tasks.pod.emitter import Emitter, EmitterConfig
from tasks.pod.heartbeat import Heartbeat
from tasks.pod.metrics import CachedReading, MetricsBinder, WorkerCollector, observe_step
from tests.fakes import FakeIngest, answer, results
from tests.helpers import make_settings
from tests.servers import free_port, wait_until

FAST = EmitterConfig(max_delay_s=0.01, poll_s=0.01, backoff=Backoff(base_s=0.01, cap_s=0.05))
GPU = {"gpu_util": 87.0, "mem_gb": 40.5, "temp_c": 71.0}


def _values(collector: Any) -> dict[str, float]:
    """Each sample of one scrape by name (labels left out: these samples have none)."""
    return {sample.name: sample.value for family in collector.collect() for sample in family.samples}


def _sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


@pytest.fixture
def emitter(ingest: FakeIngest, tmp_path: Path) -> Iterator[Emitter]:
    made = Emitter(make_settings(INGEST_URL=ingest.url, SPOOL_DIR=str(tmp_path / "spool")), config=FAST)
    yield made
    made.close(timeout=0)


def _runtime(emitter: Emitter, current: Any = None) -> SimpleNamespace:
    """What the collector reads of a `Runtime`: its emitter and the attempt running now."""
    return SimpleNamespace(emitter=emitter, current=current)


def test_a_worker_with_no_runtime_yet_says_idle_and_no_sender_and_shows_no_emitter_metrics() -> None:
    values = _values(WorkerCollector(runtime=lambda: None, gpu=dict))
    assert values == {"orchestrator_worker_busy": 0, "orchestrator_worker_emitter_running": 0}


def test_the_collector_reads_the_emitters_counters_and_the_spools_backlog_at_scrape_time(
        ingest: FakeIngest, emitter: Emitter) -> None:
    collector = WorkerCollector(runtime=lambda: _runtime(emitter, current=object()), gpu=dict)
    ingest.then(answer(503), lambda events: results(events, invalid=frozenset({1})))
    stream = emitter.stream("run-1", 1)
    for progress in (0.1, 0.2, 0.3):
        stream.emit("ai.run.stage_progress", stage="Stage_1", progress=progress)
    assert emitter.flush(5)
    values = _values(collector)
    assert values["orchestrator_worker_busy"] == 1 and values["orchestrator_worker_emitter_running"] == 1
    assert values["orchestrator_worker_send_failures_total"] == 1  # the 503
    assert values["orchestrator_worker_dead_letters_total"] == 1  # the invalid one
    assert values["orchestrator_worker_events_sent_total"] == 3  # two, and the dead-letter notice
    assert values["orchestrator_worker_spool_backlog_events"] == 0
    assert values["orchestrator_worker_spool_backlog_bytes"] == 0
    assert values["orchestrator_worker_spool_write_errors_total"] == 0
    assert values["orchestrator_worker_events_duplicate_total"] == 0


def test_an_undelivered_backlog_shows_in_events_and_bytes(ingest: FakeIngest, emitter: Emitter, tmp_path: Path) -> None:
    ingest.rule = lambda events: answer(503)
    stream = emitter.stream("run-1", 1)
    lines = [stream.emit("ai.run.log", level="info", message=str(i)) for i in range(5)]
    values = _values(WorkerCollector(runtime=lambda: _runtime(emitter), gpu=dict))
    assert values["orchestrator_worker_busy"] == 0
    assert values["orchestrator_worker_spool_backlog_events"] == 5
    spooled = sum(path.stat().st_size for path in (tmp_path / "spool").glob("*.ndjson"))
    assert values["orchestrator_worker_spool_backlog_bytes"] == spooled > 5 * len(lines[0]["id"])


def test_gpu_telemetry_is_three_gauges_and_absent_on_a_cpu_pod() -> None:
    values = _values(WorkerCollector(runtime=lambda: None, gpu=lambda: GPU))
    assert values["orchestrator_worker_gpu_utilization_percent"] == 87.0
    assert values["orchestrator_worker_gpu_memory_used_bytes"] == 40.5e9
    assert values["orchestrator_worker_gpu_temperature_celsius"] == 71.0
    assert not any("gpu" in name for name in _values(WorkerCollector(runtime=lambda: None, gpu=dict)))


def test_a_broken_source_leaves_the_rest_of_the_scrape(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("nvml exploded")

    with caplog.at_level(logging.ERROR, logger="tasks.pod.metrics"):
        values = _values(WorkerCollector(runtime=lambda: None, gpu=broken))
    assert values == {"orchestrator_worker_busy": 0, "orchestrator_worker_emitter_running": 0}
    assert "nvml exploded" in caplog.text


def test_the_gpu_is_read_again_only_once_the_cache_is_old() -> None:
    now = [100.0]
    reads: list[float] = []
    cached = CachedReading(lambda: reads.append(now[0]) or GPU, max_age_s=10, clock=lambda: now[0])
    assert cached() == GPU and cached() == GPU
    now[0] += 9.9
    cached()
    now[0] += 0.1
    cached()
    assert reads == [100.0, 110.0]


def test_a_step_duration_is_observed_by_pipeline_step_and_outcome() -> None:
    before = _sample(metrics.REGISTRY, "orchestrator_worker_step_duration_seconds_count",
                     pipeline="demo", step="Stage_2", outcome="completed")
    observe_step("Stage_2", "completed", 42.0, pipeline="demo")
    observe_step("Stage_2", "failed", 3.0, pipeline="demo")
    labels = {"pipeline": "demo", "step": "Stage_2"}
    assert _sample(metrics.REGISTRY, "orchestrator_worker_step_duration_seconds_count", **labels, outcome="completed") == before + 1
    assert _sample(metrics.REGISTRY, "orchestrator_worker_step_duration_seconds_bucket", **labels, outcome="completed",
                   le="60.0") >= 1
    assert _sample(metrics.REGISTRY, "orchestrator_worker_step_duration_seconds_bucket", **labels, outcome="failed",
                   le="5.0") >= 1


def test_an_unknown_outcome_is_other_and_a_bad_value_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    observe_step("Stage_1", "exploded", 1.0)
    assert _sample(metrics.REGISTRY, "orchestrator_worker_step_duration_seconds_count",
                   pipeline="", step="Stage_1", outcome="other") >= 1
    with caplog.at_level(logging.ERROR, logger="tasks.pod.metrics"):
        observe_step("Stage_1", "completed", "soon")  # type: ignore[arg-type]
    assert "Stage_1" in caplog.text


def _failures(reason: str) -> float:
    return _sample(metrics.REGISTRY, "orchestrator_worker_lease_renew_failures_total", reason=reason)


def _heartbeat(db: Any) -> Heartbeat:
    return Heartbeat(db, "run-m", 1, "pod-m", interval_s=1, lease_s=5, grace_s=5, emit=lambda *a, **k: None,
                     target_thread=threading.get_ident(), on_fence_deadline=lambda: None)


def test_failed_lease_renewals_are_counted_by_reason(mock_db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    claims.claim_attempt(mock_db, "run-m", 1, "pod-m", lease_s=5)
    gone, database = _failures("lease_gone"), _failures("database")
    beat = _heartbeat(mock_db)
    beat.beat()
    assert (_failures("lease_gone"), _failures("database")) == (gone, database)  # renewed: nothing counted

    def down(*args: Any, **kwargs: Any) -> bool:
        raise AutoReconnect("connection refused")

    monkeypatch.setattr(claims, "renew_lease", down)
    with pytest.raises(AutoReconnect):
        beat.beat()  # the heartbeat's loop logs it and beats again
    monkeypatch.setattr(claims, "renew_lease", lambda *args, **kwargs: False)
    beat.beat()
    assert (_failures("lease_gone"), _failures("database")) == (gone + 1, database + 1)
    beat.stop()


def test_worker_metrics_port_is_off_by_default_and_checked() -> None:
    assert make_settings().worker_metrics_port == 0
    assert make_settings(WORKER_METRICS_PORT="9101").worker_metrics_port == 9101
    for bad in ("ninety", "70000", "-1"):
        with pytest.raises(SettingsError, match=f"WORKER_METRICS_PORT='{bad}'"):
            make_settings(WORKER_METRICS_PORT=bad)


def test_a_process_serves_once_and_not_at_all_on_port_0(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "_serving_pid", None)
    assert metrics.serve_worker_metrics(make_settings()) is None
    started: list[MetricsBinder] = []
    monkeypatch.setattr(MetricsBinder, "start", lambda self: started.append(self))
    settings = make_settings(WORKER_METRICS_PORT="9101", BIND_HOST="127.0.0.1")
    binder = metrics.serve_worker_metrics(settings)
    assert binder is not None and (binder.host, binder.port) == ("127.0.0.1", 9101)
    assert metrics.serve_worker_metrics(settings) is None and started == [binder]


def test_bad_settings_never_stop_a_worker_for_its_metrics(monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("WORKER_METRICS_PORT", "ninety")
    with caplog.at_level(logging.ERROR, logger="tasks.pod.metrics"):
        assert metrics.serve_worker_metrics() is None
    assert "WORKER_METRICS_PORT" in caplog.text


@pytest.fixture
def binders() -> Iterator[Callable[..., MetricsBinder]]:
    made: list[MetricsBinder] = []

    def make(port: int, registry: CollectorRegistry, **kw: Any) -> MetricsBinder:
        binder = MetricsBinder("127.0.0.1", port, registry, **kw)
        made.append(binder)
        binder.start()
        return binder

    yield make
    for binder in made:
        binder.stop()


def _scrape(port: int) -> dict[str, Any]:
    response = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    response.raise_for_status()
    return {family.name: family for family in text_string_to_metric_families(response.text)}


def test_the_real_server_answers_a_scrape_with_the_live_values(
        ingest: FakeIngest, emitter: Emitter, binders: Callable[..., MetricsBinder]) -> None:
    ingest.rule = lambda events: answer(503)
    emitter.stream("run-1", 1).emit("ai.run.log", level="info", message="waiting")
    registry = CollectorRegistry()
    registry.register(WorkerCollector(runtime=lambda: _runtime(emitter, current=object()), gpu=lambda: GPU))
    port = free_port()
    binders(port, registry)
    families = wait_until(lambda: _scrape(port), 5, "the metrics server to answer")
    assert families["orchestrator_worker_spool_backlog_events"].samples[0].value == 1
    assert families["orchestrator_worker_busy"].samples[0].value == 1
    assert families["orchestrator_worker_gpu_temperature_celsius"].samples[0].value == 71.0
    assert families["orchestrator_worker_send_failures"].type == "counter"


def test_a_port_still_held_is_bound_once_freed_with_one_warning(
        binders: Callable[..., MetricsBinder], caplog: pytest.LogCaptureFixture) -> None:
    """The pool child exiting holds the port for a while; its successor waits for it."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    registry = CollectorRegistry()
    registry.register(WorkerCollector(runtime=lambda: None, gpu=dict))
    with caplog.at_level(logging.INFO, logger="tasks.pod.metrics"):
        binder = binders(port, registry, retry_s=0.05)
        wait_until(lambda: sum("cannot listen" in r.getMessage() for r in caplog.records) == 1, 5, "the warning")
        threading.Event().wait(0.3)  # several tries meanwhile
        holder.close()
        families = wait_until(lambda: _scrape(port), 5, "the metrics server to answer")
    assert families["orchestrator_worker_busy"].samples[0].value == 0
    assert sum("cannot listen" in r.getMessage() for r in caplog.records) == 1
    binder.thread.join(1)
    assert not binder.thread.is_alive()  # bound: it tries no more
