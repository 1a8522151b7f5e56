"""The event workload of the ingest benchmarks: what 100 runs of the real pipeline report.

Each run reports one attempt the way `tasks/experiment.py` and `WorkerContext` do: started,
ideation, four experiment stages with progress ticks, metrics, logs, heartbeats and an artifact
each, plots, paper and auto-validation; a few runs fail in Stage_3 or are canceled, and a few
are resumed by a second attempt that reports the first one's verdict. Every one of the 17
catalogue types occurs. 100 pods report at once, each joined at a random point of a run
(seeded), so the POSTs of the runs interleave and any stretch of them holds every phase.

Everything here is built before any clock starts: ids, times and JSON encoding are not part of a
measured figure.
"""

from __future__ import annotations

import copy
import json
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.database import Database

from orchestrator import mappers
from orchestrator.events import EVENT_TYPES, EXPERIMENT_STAGES, STAGES, make_event, seq_for, validate_event
from orchestrator.runs import new_run_document

#: Events per POST: the emitter's default `max_batch`.
BATCH = 50
#: Bucket name given to the mappers when building the stored shape (the ingest app's default).
BUCKET = "ai-scientist"
_T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
_SHA = "ab" * 32
_DESCRIPTIONS = dict(STAGES)


@dataclass(frozen=True)
class Workload:
    """Runs to create first, and their events as the POSTs that carry them, in arrival order."""

    run_ids: list[str]
    hypothesis_ids: list[str]
    batches: list[list[dict[str, Any]]]

    @property
    def events(self) -> list[dict[str, Any]]:
        return [event for batch in self.batches for event in batch]

    def ndjson_bodies(self) -> list[bytes]:
        return [ndjson(batch) for batch in self.batches]

    def type_counts(self, batches: int | None = None) -> dict[str, int]:
        counts = {t: 0 for t in EVENT_TYPES}
        for batch in self.batches[:batches]:
            for event in batch:
                counts[event["type"]] += 1
        return counts


def ndjson(events: list[dict[str, Any]]) -> bytes:
    """One compact JSON object a line, as the emitter's spool holds them."""
    return "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in events).encode()


class _RunReporter:
    """Builds one attempt's events with consecutive seqs and times one second apart."""

    def __init__(self, run_id: str, pod: str, attempt: int = 1):
        self.run_id = run_id
        self.source = f"worker://{pod}"
        self.attempt = attempt
        self.n = 0
        self.events: list[dict[str, Any]] = []

    def __call__(self, event_type: str, **data: Any) -> None:
        self.n += 1
        moment = _T0 + timedelta(seconds=self.n)
        time = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        self.events.append(make_event(event_type, self.run_id, seq_for(self.attempt, self.n), self.source,
                                      {k: v for k, v in data.items() if v is not None}, time=time))


def run_events(run_id: str, hypothesis_id: str, pod: str, ticks: int, ending: str, rng: random.Random,
               multiple_of: int = 1) -> list[dict[str, Any]]:
    """One attempt's events. `ticks` progress reports per experiment stage (each with a metric
    every second tick, a log every third and a heartbeat every fourth); `ending` is "done",
    "failed" (in Stage_3) or "canceled" (in Stage_2). Log lines before the last event make the
    count a multiple of `multiple_of`, so the run's batches are all full."""
    emit = _RunReporter(run_id, pod)
    emit("ai.run.enqueued", hypothesis_id=hypothesis_id, priority=5)
    emit("ai.run.started", pod_id=pod, attempt=1, gpu="NVIDIA H100 80GB HBM3", region="eu-west", image="ai-scientist:1.4")
    emit("ai.run.stage_started", stage="ideation", desc=_DESCRIPTIONS["ideation"])
    emit("ai.ideation.generated", count=20, top_k=5)
    emit("ai.run.stage_completed", stage="ideation", duration_s=41.5, summary={"ideas": 20, "chosen": "idea-3"})
    for stage in EXPERIMENT_STAGES:
        emit("ai.run.stage_started", stage=stage, desc=_DESCRIPTIONS[stage])
        for tick in range(ticks):
            progress = round((tick + 1) / (ticks + 1), 4)
            emit("ai.run.stage_progress", stage=stage, progress=progress, eta_s=round(600 * (1 - progress), 1))
            if tick % 2 == 0:
                emit("ai.run.stage_metric", stage=stage, name="val_loss", value=round(rng.uniform(0.1, 2.0), 5), step=tick)
            if tick % 3 == 0:
                emit("ai.run.log", level="info", message=f"{stage}: node {tick} evaluated", kv={"node": tick, "buggy": False})
            if tick % 4 == 0:
                emit("ai.run.heartbeat", gpu_util=round(rng.uniform(60, 99), 1), mem_gb=61.2, temp_c=71.0)
        if ending == "canceled" and stage == "Stage_2":
            _pad(emit, multiple_of)
            emit("ai.run.canceled", by="researcher@example.org", reason="wrong dataset")
            return emit.events
        if ending == "failed" and stage == "Stage_3":
            _pad(emit, multiple_of)
            emit("ai.run.failed", stage=stage, code="CUDAOutOfMemory", message="CUDA out of memory",
                 traceback="Traceback (most recent call last):\n  ...\nRuntimeError: CUDA out of memory", retryable=False)
            return emit.events
        emit("ai.artifact.registered", key=f"runs/{run_id}/1/{stage}/best_node.json", bytes=4821, sha256=_SHA,
             content_type="application/json", kind="data")
        emit("ai.run.stage_completed", stage=stage, duration_s=round(rng.uniform(300, 3600), 1),
             summary={"best_node": f"{stage}-n{ticks}", "val_loss": 0.42})
    emit("ai.run.stage_started", stage="plots", desc=_DESCRIPTIONS["plots"])
    emit("ai.artifact.registered", key=f"runs/{run_id}/1/figures/loss.png", bytes=88211, sha256=_SHA,
         content_type="image/png", kind="figure")
    if rng.random() < 0.3:
        emit("ai.artifact.failed", key=f"runs/{run_id}/1/figures/ablation.png", code="UploadFailed", message="timed out")
    emit("ai.run.stage_completed", stage="plots", duration_s=12.0, summary={"figures": 3})
    emit("ai.run.stage_started", stage="paper", desc=_DESCRIPTIONS["paper"])
    emit("ai.artifact.registered", key=f"runs/{run_id}/1/paper.pdf", bytes=412_004, sha256=_SHA,
         content_type="application/pdf", kind="paper")
    emit("ai.paper.generated", artifact_key=f"runs/{run_id}/1/paper.pdf", word_count=5210)
    emit("ai.run.stage_completed", stage="paper", duration_s=240.0, summary={"pages": 8})
    emit("ai.run.stage_started", stage="auto_validation", desc=_DESCRIPTIONS["auto_validation"])
    emit("ai.validation.auto_started", model="gpt-4o-2024-11-20", rubric_version="2")
    emit("ai.validation.auto_completed", verdict="pass" if rng.random() < 0.7 else "fail",
         scores={"soundness": 3.0, "novelty": 2.5, "overall": 6.0}, notes="reviewed by the bench")
    _pad(emit, multiple_of)
    emit("ai.run.stage_completed", stage="auto_validation", duration_s=30.0, summary={"verdict": "recorded"})
    if ending == "resumed":
        return emit.events + _resumed(run_id, pod, multiple_of)
    return emit.events


def _resumed(run_id: str, pod: str, multiple_of: int) -> list[dict[str, Any]]:
    """A second attempt that found every step done (the first was presumed lost after its
    events arrived): it reports the first attempt's verdict and nothing else of substance."""
    emit = _RunReporter(run_id, pod, attempt=2)
    emit("ai.run.started", pod_id=pod, attempt=2, gpu="NVIDIA H100 80GB HBM3", region="eu-west", image="ai-scientist:1.4")
    _pad(emit, multiple_of)
    emit("ai.run.completed", verdict="pass", validation_id=f"{run_id}-verdict", from_attempt=1)
    return emit.events


def _pad(emit: _RunReporter, multiple_of: int) -> None:
    """Log lines until one more event makes the count a multiple of `multiple_of`."""
    while (emit.n + 1) % multiple_of:
        emit("ai.run.log", level="debug", message="writing checkpoint shard", kv={"shard": emit.n})


def build(pods: int = 100, runs_per_pod: int = 2, ticks: int = 8, seed: int = 1, prefix: str = "bench",
          batch: int = BATCH) -> Workload:
    """A steady state of `pods` pods, each running `runs_per_pod` runs one after another.

    Every pod joins at a random point of its first run (the batches it sent before count as
    sent before the measurement), so any stretch of the arrival order holds every phase of a
    run. A pod's emitter sends its run's events in order, `batch` a POST, one run a POST (as
    `Emitter._send_round` does when a backlog is waiting); pods report at the same pace, so
    their POSTs interleave by the time each batch's last event was emitted."""
    rng = random.Random(seed)
    run_ids: list[str] = []
    hypothesis_ids: list[str] = []
    timed: list[tuple[float, list[dict[str, Any]]]] = []
    for p in range(pods):
        pod = f"{prefix}-pod-{p:03d}"
        clock = -rng.uniform(0, 100)  # the pod's position, in events, relative to the window's start
        for _ in range(runs_per_pod):
            i = len(run_ids)
            run_id = f"{prefix}-run-{i:03d}-{uuid.UUID(int=rng.getrandbits(128)).hex[:8]}"
            run_ids.append(run_id)
            hypothesis_ids.append(f"{prefix}-hyp-{i:03d}")
            ending = "failed" if i % 12 == 5 else "canceled" if i % 25 == 7 else "resumed" if i % 20 == 3 else "done"
            events = run_events(run_id, hypothesis_ids[-1], pod, ticks, ending, rng, multiple_of=batch)
            for start in range(0, len(events), batch):
                if clock + start + batch > 0:  # batches the pod sent before the window are left out
                    timed.append((clock + start + batch + rng.random(), events[start:start + batch]))
            clock += len(events)
    timed.sort(key=lambda pair: pair[0])
    return Workload(run_ids, hypothesis_ids, [chunk for _, chunk in timed])


def log_flood(run_ids: list[str], total: int, batch: int, prefix: str = "flood") -> list[bytes]:
    """`total` `ai.run.log` events of the given runs, `batch` a POST, as NDJSON bodies: a run's
    captured output replayed after an outage, each line carrying about 2 KB of it. Encoded as
    they are built, so only the bodies are held."""
    bodies = []
    per_run: dict[str, int] = {}
    output = "".join(f"step {i:04d} | loss 0.{i * 7919 % 10000:04d} | grad-norm {i % 97}.{i % 89:02d}\n" for i in range(48))
    for start in range(0, total, batch):
        run_id = run_ids[(start // batch) % len(run_ids)]
        events = []
        for _ in range(min(batch, total - start)):
            n = per_run[run_id] = per_run.get(run_id, 0) + 1
            events.append(make_event("ai.run.log", run_id, seq_for(1, n), f"worker://{prefix}-pod", {
                "level": "info", "message": f"experiment stdout, chunk {n}:\n{output}",
                "kv": {"chunk": n, "node": n % 17, "stream": "stdout"}}))
        bodies.append(ndjson(events))
    return bodies


def create_runs(db: Database, workload: Workload, *, status: str = "RUNNING") -> None:
    """The hypotheses and runs the events belong to, as dispatched and started (attempt 1):
    ingest rejects events of unknown runs."""
    now = datetime.now(UTC).replace(microsecond=0)
    db.hypotheses.insert_many([
        {"_id": h, "title": f"bench hypothesis {h}", "idea": "measure", "ideaJson": None, "createdAt": now}
        for h in workload.hypothesis_ids
    ])
    runs = []
    for run_id, hypothesis_id in zip(workload.run_ids, workload.hypothesis_ids, strict=True):
        run = new_run_document(hypothesis_id, run_id=run_id, pipeline="noop")
        run.update(status=status, attempt=1, createdAt=now, updatedAt=now)
        runs.append(run)
    db.runs.insert_many(runs)


def stored_documents(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The documents ingest stores in `events` for these events (the mappers' history record),
    for the raw-insert baseline."""
    received = datetime.now(UTC).replace(microsecond=0)
    documents = []
    for event in events:
        valid = validate_event(copy.deepcopy(event))
        run = {"_id": valid["data"]["run_id"], "maxAttempts": 3}
        history = mappers.writes_for(valid, run, received_at=received, bucket=BUCKET, default_max_attempts=3)[0]
        documents.append(history.document)
    return documents
