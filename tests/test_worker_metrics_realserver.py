"""A real `celery worker` process with WORKER_METRICS_PORT serves its metrics: idle, then busy
during a run, then again from the pool child that replaces the one that ran it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.runs import create_hypothesis_and_run
from tests.cluster import cluster_on
from tests.servers import free_port, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(real_server: Any, tmp_path: Any) -> Any:
    with cluster_on(real_server, tmp_path, "wm") as c:
        yield c


def _scrape(port: int) -> dict[str, float]:
    """Each unlabelled sample of the worker's /metrics."""
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if not s.labels}


def _when(port: int, what: str, condition: Callable[[dict[str, float]], bool]) -> dict[str, float]:
    def matches() -> dict[str, float] | None:
        values = _scrape(port)
        return values if condition(values) else None
    return wait_until(matches, 20, f"the worker's metrics to show {what}")  # type: ignore[return-value]


def test_a_worker_serves_its_metrics_from_each_pool_child_in_turn(cluster: Any) -> None:
    port = free_port()
    cluster.start_ingest()
    cluster.start_worker("pod-m", env={"WORKER_METRICS_PORT": str(port), "BIND_HOST": "127.0.0.1"})
    cluster.start_dispatcher()
    idle = _when(port, "an idle worker", lambda v: v.get("orchestrator_worker_emitter_running") == 1)
    assert idle["orchestrator_worker_busy"] == 0 and idle["orchestrator_worker_spool_backlog_events"] == 0
    run_id = create_hypothesis_and_run(cluster.db, "t", "idea", idea_json={"stage_s": 0.8}, pipeline="sleepy")[1]
    busy = _when(port, "a run in progress", lambda v: v.get("orchestrator_worker_busy") == 1)
    started = idle["process_start_time_seconds"]
    assert busy["process_start_time_seconds"] == started  # the same pool child
    cluster.wait_status(run_id, {"AWAITING_HUMAN"}, 60)
    # worker_max_tasks_per_child = 1: the child that ran it exits, and the next one serves
    after = _when(port, "the next pool child", lambda v: v.get("process_start_time_seconds", started) > started)
    assert after["orchestrator_worker_busy"] == 0, cluster.logs()
