"""Read API on the real server (FerretDB or MONGODB_TEST_URL), in-process: the queries the unit
lane runs on mongomock ($or over dates and ids, compound sorts, guarded updates) must mean the
same on a real server."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.api_helpers import AUTH, T0, assert_problem, build_app, insert_events, insert_run, page_through
from tests.fakes import FakeStorage


@pytest.fixture(scope="module")
def app(real_db: Any) -> Flask:
    """One app per module: create_app builds the indexes, which takes a while on FerretDB."""
    return build_app(real_db, storage=FakeStorage())


@pytest.fixture
def client(app: Flask, real_db: Any) -> Iterator[FlaskClient]:
    """A client over the module's database, emptied first so each test sees only its own runs."""
    for name in ("runs", "hypotheses", "events", "artifacts", "stages", "validations"):
        real_db[name].delete_many({})
    with app.test_client() as test_client:
        yield test_client


def test_pages_cover_every_run_once_on_the_real_server(client: FlaskClient, real_db: Any) -> None:
    ids = [insert_run(real_db, created=T0 + timedelta(seconds=i // 3)) for i in range(17)]
    undated = [insert_run(real_db, created=None, run_id=f"u{i}") for i in range(3)]
    pages = page_through(client, "limit=4")
    assert [len(page) for page in pages] == [4, 4, 4, 4, 4]
    expected = sorted(ids, key=lambda i: (ids.index(i) // 3, i), reverse=True) + undated[::-1]
    assert [run_id for page in pages for run_id in page] == expected


def test_status_filter_pages_on_the_real_server(client: FlaskClient, real_db: Any) -> None:
    running = [insert_run(real_db, status="RUNNING", created=T0 + timedelta(seconds=i)) for i in range(5)]
    insert_run(real_db, status="QUEUED", created=T0 + timedelta(seconds=10))
    pages = page_through(client, "status=RUNNING,FAILED&limit=2")
    assert [run_id for page in pages for run_id in page] == running[::-1]
    assert client.get("/api/runs/nope").status_code == 404


def test_create_cancel_and_retry_on_the_real_server(client: FlaskClient, real_db: Any) -> None:
    created = client.post("/api/hypotheses", headers=AUTH, json={"title": "t", "idea": "i", "priority": 7})
    assert created.status_code == 201, created.json
    run_id = created.json["runId"]
    canceled = client.post(f"/api/runs/{run_id}/cancel", headers=AUTH, json={"by": "ops"})
    assert (canceled.status_code, canceled.json["status"]) == (200, "CANCELED")
    assert_problem(client.post(f"/api/runs/{run_id}/cancel", headers=AUTH), 409, "nothing to cancel")
    retried = client.post(f"/api/runs/{run_id}/retry", headers=AUTH, json={"by": "ops", "reason": "fixed"})
    assert (retried.status_code, retried.json["status"]) == (200, "QUEUED")
    assert_problem(client.post(f"/api/runs/{run_id}/retry", headers=AUTH), 409, "QUEUED")
    history = client.get(f"/api/runs/{run_id}/events").json
    assert [e["type"] for e in history["events"]] == ["ai.run.log", "ai.run.log"]
    assert [e["data"]["kv"]["by"] for e in history["events"]] == ["ops", "ops"]
    assert history["status"] == "QUEUED"


def test_one_run_and_its_history_on_the_real_server(client: FlaskClient, real_db: Any) -> None:
    run_id = insert_run(real_db, status="RUNNING")
    for name, index in (("Stage_1", 1), ("ideation", 0)):
        real_db.stages.insert_one({"_id": f"{run_id}:{name}", "runId": run_id, "index": index, "name": name})
    real_db.validations.insert_many([
        {"runId": run_id, "verdict": "fail", "createdAt": T0},
        {"runId": run_id, "verdict": "pass", "createdAt": T0 + timedelta(minutes=1)},
    ])
    body = client.get(f"/api/runs/{run_id}").json
    assert [s["name"] for s in body["stages"]] == ["ideation", "Stage_1"]
    assert body["validation"]["verdict"] == "pass"
    insert_events(real_db, run_id, [2, 0, 1, 1, 3])
    first = client.get(f"/api/runs/{run_id}/events?limit=3").json
    assert ([e["seq"] for e in first["events"]], first["lastSeq"], first["hasMore"]) == ([0, 1, 1], 1, True)
    rest = client.get(f"/api/runs/{run_id}/events?after_seq=1").json
    assert ([e["seq"] for e in rest["events"]], rest["hasMore"], rest["status"]) == ([2, 3], False, "RUNNING")
