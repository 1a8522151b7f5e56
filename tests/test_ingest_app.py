"""The app factory: what it wires together, and the hooks every request goes through."""

from __future__ import annotations

import logging
from typing import Any

import mongomock
import pytest
from pymongo.errors import ServerSelectionTimeoutError

from ingest_app import create_app
from ingest_app.metrics import IngestMetrics
from ingest_app.state import AppState
from orchestrator import db as dbmod
from orchestrator.storage import LocalStorage
from tests.helpers import WORKER_TOKEN, make_settings
from tests.ingest_helpers import NDJSON, PROBLEM, Worker, ingest_app, insert_run, post_ndjson


def test_create_app_stores_the_shared_state_and_registers_every_blueprint(mock_db: Any) -> None:
    settings = make_settings()
    app = create_app(settings, db=mock_db)
    state = app.extensions["orchestrator"]
    assert isinstance(state, AppState) and state.settings is settings and state.db is mock_db
    assert isinstance(state.metrics, IngestMetrics)
    assert isinstance(state.storage, LocalStorage) and str(state.storage.root) == settings.artifact_dir
    assert {"ingest", "api", "probes"} <= set(app.blueprints)
    rules = {rule.rule for rule in app.url_map.iter_rules()}
    assert {"/api/ingest/event", "/api/ingest/events", "/healthz", "/readyz", "/metrics", "/api/runs"} <= rules


def test_create_app_reads_the_environment_and_opens_the_database_it_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MONGODB_URL", "mongomock://localhost/from_env")
    monkeypatch.setenv("INGEST_TOKEN", WORKER_TOKEN)
    try:
        app = create_app()
        db = app.extensions["orchestrator"].db
        assert db.name == "from_env"
        assert "source_eventId" in db.events_seen.index_information()
    finally:
        dbmod.forget_clients()


def test_indexes_are_created_at_start() -> None:
    database = mongomock.MongoClient(tz_aware=True)["fresh"]
    create_app(make_settings(), db=database)
    assert database.events_seen.index_information()["source_eventId"]["unique"] is True


def test_a_database_down_at_start_defers_the_indexes_to_the_first_ingest(
    mock_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Any] = []

    def down(db: Any) -> None:
        calls.append(db)
        if len(calls) == 1:
            raise ServerSelectionTimeoutError("no servers")

    monkeypatch.setattr(dbmod, "ensure_indexes", down)
    app = ingest_app(mock_db)
    run_id = insert_run(mock_db)
    assert post_ndjson(app.test_client(), [Worker(run_id).event("ai.run.log", level="info", message="m")]).json["accepted"] == 1
    assert len(calls) == 2


def test_start_up_logs_the_settings_redacted(mock_db: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="ingest_app"):
        ingest_app(mock_db, make_settings(INGEST_TOKEN="pod-a:very-secret-token-Qx7Lm2Vb9Rt4Kp8Zs3Nd6"))
    assert "'ingest_token': '***'" in caplog.text and "very-secret" not in caplog.text
    assert "worker:pod-a" in caplog.text


def test_request_latency_and_event_counts_reach_the_metrics(mock_db: Any) -> None:
    app = ingest_app(mock_db)
    client = app.test_client()
    run_id = insert_run(mock_db)
    event = Worker(run_id).event("ai.run.log", level="info", message="m")
    post_ndjson(client, [event, event, {"nope": 1}])
    metrics = app.extensions["orchestrator"].metrics
    registry = metrics.registry
    assert registry.get_sample_value("ingest_events_total", {"type": "ai.run.log", "outcome": "accepted"}) == 1
    assert registry.get_sample_value("ingest_events_total", {"type": "ai.run.log", "outcome": "duplicate"}) == 1
    assert registry.get_sample_value("ingest_events_total", {"type": "unknown", "outcome": "invalid"}) == 1
    assert registry.get_sample_value("ingest_batch_events_sum") == 3
    labels = {"endpoint": "/api/ingest/events", "method": "POST", "status": "200"}
    assert registry.get_sample_value("http_request_duration_seconds_count", labels) == 1
    client.get("/no/such/path")
    assert registry.get_sample_value(
        "http_request_duration_seconds_count", {"endpoint": "unmatched", "method": "GET", "status": "404"}
    ) == 1


def test_unknown_paths_and_unexpected_errors_are_problem_json(mock_db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator import ingest as ingest_module

    app = ingest_app(mock_db)
    app.testing = False  # let the 500 handler answer instead of re-raising
    client = app.test_client()
    missing = client.get("/nowhere")
    assert missing.status_code == 404 and missing.mimetype == PROBLEM

    def broken(*_: Any, **__: Any) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(ingest_module, "_validate", broken)
    batch_json = {**NDJSON, "Content-Type": "application/cloudevents-batch+json"}
    response = client.post("/api/ingest/events", data="[]", headers=batch_json)
    assert response.status_code == 500 and response.mimetype == PROBLEM
