"""Helpers of the ingest tests: a worker-like event builder, a run to apply events to, document
snapshots for comparison, and an ingest app with a client. test_ingest_mappers.py keeps them honest."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from pymongo.database import Database

from ingest_app import create_app
from orchestrator import db as dbmod
from orchestrator import run_days
from orchestrator.events import make_event, seq_for
from orchestrator.ingest import Item, Outcome, fast_path_pays, ingest, updates_per_command
from orchestrator.runs import new_run_document
from orchestrator.settings import Settings
from tests.helpers import WORKER_TOKEN, make_settings

TOKEN = WORKER_TOKEN
AUTH = {"Authorization": f"Bearer {TOKEN}"}
STRUCTURED = {**AUTH, "Content-Type": "application/cloudevents+json"}
NDJSON = {**AUTH, "Content-Type": "application/x-ndjson"}
BATCH_JSON = {**AUTH, "Content-Type": "application/cloudevents-batch+json"}
PROBLEM = "application/problem+json"
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
SHA = "ab" * 32
BUCKET = "ai-scientist"
#: Fields that record when we received or wrote something, not what happened.
RECEIPT_FIELDS = ("receivedAt", "updatedAt", "processedAt")


def rfc3339(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Worker:
    """Builds one attempt's events the way the worker does: seq from the attempt's block,
    one second apart, ids derived from the run, attempt and position (stable for a test)."""

    run_id: str
    attempt: int = 1
    source: str = "worker://pod-a"
    n: int = 0
    start: datetime = T0

    def event(self, event_type: str, **data: Any) -> dict[str, Any]:
        self.n += 1
        moment = self.start + timedelta(hours=self.attempt, seconds=self.n)
        return make_event(
            event_type, self.run_id, seq_for(self.attempt, self.n), self.source,
            {k: v for k, v in data.items() if v is not None},
            time=rfc3339(moment), event_id=f"{self.run_id}-a{self.attempt}-{self.n:04d}",
        )


def insert_run(
    db: Database, *, status: str = "STARTING", attempt: int = 1, max_attempts: int = 3,
    run_id: str | None = None, hypothesis_id: str | None = None, **fields: Any,
) -> str:
    """A hypothesis and its run, as dispatched and claimed: the state events arrive into."""
    hypothesis_id = hypothesis_id or f"h-{uuid.uuid4().hex[:8]}"
    db.hypotheses.insert_one({"_id": hypothesis_id, "title": "t", "idea": "i", "ideaJson": None, "createdAt": T0})
    run = new_run_document(hypothesis_id, max_attempts=max_attempts, run_id=run_id or f"r-{uuid.uuid4().hex[:8]}")
    run.update(status=status, attempt=attempt, createdAt=T0, updatedAt=T0, createdDay=run_days.day_of(T0), **fields)
    run_days.register(db, run["createdDay"])  # as `runs.create_hypothesis_and_run` does
    db.runs.insert_one(run)
    return run["_id"]


_FEATURES: dict[int, dbmod.ServerFeatures] = {}


def _features(db: Database) -> dbmod.ServerFeatures:
    """Probed once per client, as the route does."""
    key = id(db.client)
    if key not in _FEATURES:
        _FEATURES[key] = dbmod.probe_features(db)
    return _FEATURES[key]


def apply(db: Database, events: Sequence[dict[str, Any]], *, batch_sizes: Iterable[int] | None = None) -> list[Outcome]:
    """Ingest `events` in batches (all in one by default), as the route does, without HTTP."""
    sizes = list(batch_sizes or [max(len(events), 1)])
    outcomes: list[Outcome] = []
    position = 0
    while position < len(events):
        size = sizes.pop(0) if sizes else len(events) - position
        batch = [copy.deepcopy(e) for e in events[position:position + size]]
        items = [Item(i, e) for i, e in enumerate(batch)]
        features = _features(db)
        outcomes += ingest(db, items, bucket=BUCKET, default_max_attempts=3, seen_lookup=fast_path_pays(features),
                           per_command=updates_per_command(features))
        position += size
    return outcomes


def _clean(doc: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in doc.items() if k not in RECEIPT_FIELDS}
    if isinstance(out.get("attempts"), list):
        # $addToSet keeps arrival order; the set itself is what must not depend on it.
        out["attempts"] = sorted(out["attempts"], key=lambda a: json.dumps(a, sort_keys=True, default=str))
    return out


def documents(db: Database, run_id: str) -> dict[str, list[dict[str, Any]]]:
    """Everything ingest wrote for one run, receipt times removed, in a stable order."""
    run = db.runs.find_one({"_id": run_id})
    hypothesis = db.hypotheses.find_one({"_id": run["hypothesisId"]}) if run else None
    out: dict[str, list[dict[str, Any]]] = {
        "runs": [_clean(run)] if run else [],
        "hypotheses": [_clean(hypothesis)] if hypothesis else [],
    }
    for name in ("stages", "artifacts", "validations", "events"):
        out[name] = [_clean(d) for d in db[name].find({"runId": run_id}).sort("_id", 1)]
    seen = db.events_seen.find({"runId": run_id}, {"_id": 0, "source": 1, "eventId": 1, "runId": 1})
    out["events_seen"] = sorted((_clean(d) for d in seen), key=lambda d: (d["source"], d["eventId"]))
    return out


def ingest_app(db: Database, settings: Settings | None = None) -> Flask:
    app = create_app(settings or make_settings(), db=db)
    app.testing = True
    return app


def post_ndjson(client: FlaskClient, events: Sequence[Any], headers: dict[str, str] | None = None) -> Any:
    body = "\n".join(e if isinstance(e, str) else json.dumps(e) for e in events) + "\n"
    return client.post("/api/ingest/events", data=body, headers=headers or NDJSON)


def full_run(worker: Worker, *, outcome: str = "success") -> list[dict[str, Any]]:
    """A small but complete attempt: every event type but `ai.run.completed` at least once when
    `outcome` is success (that one: `outcome="reused"`, an attempt that found every step done)."""
    w = worker
    if outcome == "reused":
        return [w.event("ai.run.started", pod_id="pod-b", attempt=w.attempt),
                w.event("ai.run.log", level="info", message="auto_validation completed in an earlier attempt"),
                w.event("ai.run.completed", verdict="pass", validation_id="v-1", from_attempt=max(w.attempt - 1, 1))]
    events = [
        w.event("ai.run.enqueued", hypothesis_id="h"),
        w.event("ai.run.started", pod_id="pod-a", attempt=w.attempt, gpu="A100", region="eu", image="img:1"),
        w.event("ai.run.stage_started", stage="ideation"),
        w.event("ai.ideation.generated", count=7, top_k=3),
        w.event("ai.run.stage_completed", stage="ideation", duration_s=1.5, summary={"idea": "x", "score": 0.9}),
        w.event("ai.run.stage_started", stage="Stage_1"),
        w.event("ai.run.heartbeat", gpu_util=88.0, mem_gb=30.5, temp_c=70.0),
        w.event("ai.run.stage_progress", stage="Stage_1", progress=0.5, eta_s=10.0),
        w.event("ai.run.stage_metric", stage="Stage_1", name="val_loss", value=0.7, step=1),
        w.event("ai.run.stage_metric", stage="Stage_1", name="val_loss", value=0.4, step=2),
        w.event("ai.run.log", level="info", message="halfway", kv={"k": 1}),
        w.event("ai.artifact.registered", key=f"runs/{w.run_id}/{w.attempt}/fig.png", bytes=10, sha256=SHA, content_type="image/png", kind="figure"),
        w.event("ai.artifact.failed", key=f"runs/{w.run_id}/{w.attempt}/bad.png", code="UploadFailed", message="boom"),
    ]
    if outcome == "failure":
        return events + [w.event("ai.run.failed", stage="Stage_1", code="CudaOutOfMemory", message="oom",
                                 traceback="tb", retryable=True)]
    if outcome == "cancel":
        return events + [w.event("ai.run.canceled", by="alice", reason="enough")]
    return events + [
        w.event("ai.run.stage_completed", stage="Stage_1", duration_s=3.0, summary={"curve": {"loss": [0.7, 0.4]}}),
        w.event("ai.run.stage_started", stage="paper"),
        w.event("ai.paper.generated", artifact_key=f"runs/{w.run_id}/{w.attempt}/paper.pdf", word_count=1200),
        w.event("ai.run.stage_completed", stage="paper", duration_s=2.0, summary={"key": "runs/x/paper.pdf"}),
        w.event("ai.run.stage_started", stage="auto_validation"),
        w.event("ai.validation.auto_started", model="reviewer-1", rubric_version="v2"),
        w.event("ai.validation.auto_completed", verdict="pass", scores={"soundness": 4.0}, notes="ok"),
        w.event("ai.run.stage_completed", stage="auto_validation", duration_s=1.0, summary={"verdict": "pass"}),
    ]


# --- the helpers' own tests -----------------------------------------------------------------------


