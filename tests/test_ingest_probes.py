"""Probes on the unit lane: liveness without the database, readiness with it, Prometheus text."""

from __future__ import annotations

import time
from typing import Any

import pymongo
from prometheus_client import CONTENT_TYPE_LATEST

from ingest_app import probes
from ingest_app.problem import RETRY_AFTER_S
from tests.api_helpers import assert_problem, build_app
from tests.fakes import DownDb
from tests.servers import free_port


def test_healthz_is_ok_without_asking_the_database() -> None:
    response = build_app(DownDb()).test_client().get("/healthz")
    assert (response.status_code, response.json) == (200, {"status": "ok"})


def test_readyz_is_ok_when_the_database_answers(mock_db: Any) -> None:
    response = build_app(mock_db).test_client().get("/readyz")
    assert (response.status_code, response.json) == (200, {"status": "ready"})


def test_readyz_is_a_503_problem_when_the_ping_fails() -> None:
    response = build_app(DownDb()).test_client().get("/readyz")
    assert_problem(response, 503, "ServerSelectionTimeoutError")
    assert response.headers["Retry-After"] == str(RETRY_AFTER_S)


def test_readyz_answers_within_its_own_timeout_when_no_server_listens(mock_db: Any) -> None:
    """The client would wait 30 s for a server; the probe must not."""
    app = build_app(mock_db)
    client = pymongo.MongoClient(f"mongodb://127.0.0.1:{free_port()}/x", serverSelectionTimeoutMS=30_000, connect=False)
    app.extensions["orchestrator"].db = client["x"]
    try:
        started = time.monotonic()
        response = app.test_client().get("/readyz")
        elapsed = time.monotonic() - started
    finally:
        client.close()
    assert_problem(response, 503)
    assert elapsed < probes.READY_PING_TIMEOUT_S + 1.0


def test_metrics_are_prometheus_text_with_the_ingest_counters(mock_db: Any) -> None:
    app = build_app(mock_db)
    app.extensions["orchestrator"].metrics.events.labels(type="ai.run.log", outcome="accepted").inc()
    app.test_client().get("/healthz")
    response = app.test_client().get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
    text = response.get_data(as_text=True)
    assert 'ingest_events_total{outcome="accepted",type="ai.run.log"} 1.0' in text
    assert "ingest_batch_events_bucket" in text
    assert 'http_request_duration_seconds_count{endpoint="/healthz",method="GET",status="200"}' in text
