"""Helpers of the read-and-write API tests (mongomock and the real server alike)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from ingest_app import create_app
from orchestrator import run_days
from orchestrator.runs import new_run_document
from orchestrator.settings import Settings
from tests.helpers import OPERATOR_TOKEN, READER_TOKEN, bearer, make_settings

AUTH = bearer(OPERATOR_TOKEN)


PROBLEM = "application/problem+json"


T0 = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)



class ReaderClient(FlaskClient):
    """A test client that reads as a reader unless a request names its own Authorization: the
    read tests are about what the API returns; who may call it is test_roles.py's subject."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {READER_TOKEN}"


def build_app(db: Any, *, storage: Any = None, settings: Settings | None = None) -> Flask:
    """The ingest app over `db`, with `storage` wired in for download links; its test client
    reads as a reader (writes send `AUTH`, an operator's)."""
    app = create_app(settings or make_settings(), db=db)
    app.extensions["orchestrator"].storage = storage
    app.test_client_class = ReaderClient
    return app



def insert_run(db: Any, *, created: datetime | None = T0, status: str = "QUEUED", run_id: str | None = None, **fields: Any) -> str:
    """A run document as the frontend inserts it, with a chosen createdAt and status."""
    run = new_run_document("h-1", run_id=run_id)
    run.update(status=status, createdAt=created, **fields)
    if created is None:
        del run["createdAt"]
    del run[run_days.FIELD]  # a frontend does not set it
    db.runs.insert_one(run)
    if status != "QUEUED":
        run_days.stamp(db, run)  # past QUEUED: the dispatcher has seen it
    return run["_id"]



def insert_events(db: Any, run_id: str, seqs: list[int]) -> None:
    """Log events of `run_id` with these seqs, one second apart, in list order."""
    for n, seq in enumerate(seqs):
        db.events.insert_one({"_id": f"{run_id}-e{n:03d}", "runId": run_id, "source": "worker://p", "type": "ai.run.log",
                              "seq": seq, "time": T0 + timedelta(seconds=n), "data": {}, "receivedAt": T0})



def page_through(client: FlaskClient, query: str) -> list[list[str]]:
    """Follow nextCursor to the end; the run ids of each page."""
    pages: list[list[str]] = []
    cursor = ""
    while True:
        response = client.get(f"/api/runs?{query}{cursor}")
        assert response.status_code == 200, response.json
        pages.append([run["_id"] for run in response.json["runs"]])
        if response.json["nextCursor"] is None:
            return pages
        cursor = f"&cursor={response.json['nextCursor']}"



def assert_problem(response: Any, status: int, *words: str) -> dict[str, Any]:
    """The response is a problem+json of `status` whose text names every word."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM
    body = response.json
    assert body["status"] == status
    text = str(body)
    for word in words:
        assert word in text, f"{word!r} not in {text}"
    return body
