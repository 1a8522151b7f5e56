"""The hostile inputs on the real server, where the database refuses what mongomock takes (NUL,
lone surrogates, dotted keys, arrays in arrays): still a 4xx naming the field, the batch's other
events applied, and nothing of a refused hypothesis stored."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pymongo.database import Database

from tests.api_helpers import AUTH, build_app
from tests.hostile import HOSTILE, HOSTILE_HYPOTHESES, log_event
from tests.ingest_helpers import NDJSON, STRUCTURED, Worker, ingest_app, insert_run

pytestmark = pytest.mark.realserver


def _text(event: dict[str, Any]) -> str:
    return json.dumps(event)


def test_every_hostile_event_alone_is_a_422_and_in_a_batch_only_its_own_line(real_db: Database) -> None:
    client = ingest_app(real_db).test_client()
    worker = Worker(insert_run(real_db, status="RUNNING"))
    for what, build, field in HOSTILE:
        single = client.post("/api/ingest/event", data=_text(build(worker)).encode("utf-8", "surrogatepass"),
                             headers=STRUCTURED)
        assert single.status_code == 422 and field in single.json["errors"], (what, single.get_data(as_text=True))
    lines = []
    for _, build, _ in HOSTILE:
        lines += [_text(log_event(worker)), _text(build(worker))]
    batch = client.post("/api/ingest/events", data="\n".join(lines).encode("utf-8", "surrogatepass"), headers=NDJSON)
    assert batch.status_code == 200, batch.get_data(as_text=True)
    assert [r["status"] for r in batch.json["results"]] == ["accepted", "invalid"] * len(HOSTILE)
    assert real_db.events.count_documents({"runId": worker.run_id}) == len(HOSTILE)


def test_every_hostile_hypothesis_is_refused_and_stores_nothing(real_db: Database) -> None:
    client = build_app(real_db).test_client()
    before = (real_db.hypotheses.count_documents({}), real_db.runs.count_documents({}))
    for extra, status, field, _ in HOSTILE_HYPOTHESES:
        response = client.post("/api/hypotheses", data='{"title": "t", "idea": "i", ' + extra + "}",
                               headers={**AUTH, "Content-Type": "application/json"})
        assert response.status_code == status and field in response.json["errors"], (extra[:60], response.json)
    assert (real_db.hypotheses.count_documents({}), real_db.runs.count_documents({})) == before
    stored = client.post("/api/hypotheses", json={"title": "t", "idea": "i", "ideaJson": {"a": [1, {"b": None}], "é": 1.5}},
                         headers=AUTH)
    assert stored.status_code == 201
    assert client.get(f"/api/runs/{stored.json['runId']}").json["hypothesis"]["ideaJson"] == {"a": [1, {"b": None}], "é": 1.5}
