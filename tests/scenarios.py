"""Generated event streams for the order-independence properties (mongomock and the real server)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import mongomock
from hypothesis import strategies as st
from pymongo.database import Database

from orchestrator import db as dbmod
from orchestrator.events import STAGE_NAMES
from orchestrator.ingest import ACCEPTED, DUPLICATE
from tests.ingest_helpers import SHA, Worker, apply, documents, insert_run

Step = tuple[str, dict[str, Any]]


_values = st.floats(min_value=-10, max_value=10, allow_nan=False, allow_infinity=False)


MAX_ATTEMPTS = 3


#: What the status must be once everything is applied, by the last attempt's outcome.
FINAL_STATUS = {"success": "AWAITING_HUMAN", "failure": "FAILED", "retry": "QUEUED", "cancel": "CANCELED"}



@dataclass(frozen=True)
class Scenario:
    """A run's history as (type, data) steps per attempt, and how to deliver it."""

    attempts: tuple[tuple[Step, ...], ...]
    outcome: str
    #: Indices into the flattened event list: a permutation of all of them plus repeats.
    delivery: tuple[int, ...]
    in_order_batches: tuple[int, ...]
    shuffled_batches: tuple[int, ...]

    def events(self, run_id: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for attempt, steps in enumerate(self.attempts, start=1):
            worker = Worker(run_id, attempt=attempt, source=f"worker://pod-{attempt}")
            out += [worker.event(event_type, **_in_run(data, run_id)) for event_type, data in steps]
        return out


def _in_run(data: dict[str, Any], run_id: str) -> dict[str, Any]:
    """Artifact keys are drawn as `runs/{run}/...`: an event's key lies in its own run's folder."""
    return {k: v.format(run=run_id) if k in ("key", "artifact_key") else v for k, v in data.items()}



@st.composite
def _stage_steps(draw: st.DrawFn, stage: str, *, complete: bool) -> list[Step]:
    steps: list[Step] = [("ai.run.stage_started", {"stage": stage, "desc": stage})]
    extras: list[Step] = []
    for progress in sorted(draw(st.lists(st.floats(0, 1), max_size=3))):
        extras.append(("ai.run.stage_progress", {"stage": stage, "progress": progress}))
    for name in draw(st.lists(st.sampled_from(["loss", "acc"]), max_size=3)):
        extras.append(("ai.run.stage_metric", {"stage": stage, "name": name, "value": draw(_values)}))
    if draw(st.booleans()):
        extras.append(("ai.run.heartbeat", {"gpu_util": draw(st.floats(0, 100)), "mem_gb": 8.0, "temp_c": 60.0}))
    if draw(st.booleans()):
        extras.append(("ai.artifact.registered", {
            "key": f"runs/{{run}}/{stage}-{len(extras)}.png", "bytes": draw(st.integers(0, 10**6)),
            "sha256": SHA, "content_type": "image/png", "kind": "figure",
        }))
    if draw(st.booleans()):
        extras.append(("ai.artifact.failed", {"key": f"runs/{{run}}/{stage}.bin", "code": "UploadFailed", "message": "503"}))
    if draw(st.booleans()):
        extras.append(("ai.run.log", {"level": "info", "message": f"in {stage}", "kv": {"n": len(extras)}}))
    steps += draw(st.permutations(extras))
    if stage == "ideation":
        steps.append(("ai.ideation.generated", {"count": draw(st.integers(0, 20)), "top_k": 3}))
    if stage == "paper" and complete:
        steps.append(("ai.paper.generated", {"artifact_key": "runs/{run}/paper.pdf", "word_count": draw(st.integers(0, 5000))}))
    if stage == "auto_validation" and complete:
        steps.append(("ai.validation.auto_started", {"model": "reviewer-1", "rubric_version": "v1"}))
        steps.append(("ai.validation.auto_completed", {"verdict": draw(st.sampled_from(["pass", "fail"])),
                                                       "scores": {"overall": draw(_values)}, "notes": "n"}))
    if complete:
        steps.append(("ai.run.stage_completed", {"stage": stage, "duration_s": 1.0,
                                                 "summary": {"stage": stage, "values": draw(st.lists(_values, max_size=3))}}))
    return steps



def _ending(outcome: str, stage: str) -> list[Step]:
    if outcome in ("failure", "retry"):
        failure = {"stage": stage, "code": "E", "message": "m", "traceback": "tb", "retryable": outcome == "retry"}
        return [("ai.run.failed", failure)]
    if outcome == "cancel":
        return [("ai.run.canceled", {"by": "alice", "reason": "r"})]
    return []  # "lost": the worker died and said nothing more



@st.composite
def scenarios(draw: st.DrawFn, attempts: tuple[int, ...] = (1, 2), batch_sizes: tuple[int, int] = (1, 25)) -> Scenario:
    count = draw(st.sampled_from(attempts))
    done = 0
    attempts: list[tuple[Step, ...]] = []
    outcome = "success"
    for attempt in range(1, count + 1):
        last = attempt == count
        outcome = draw(st.sampled_from(["success", "failure", "retry", "cancel"] if last else ["retry", "lost"]))
        stop = len(STAGE_NAMES) if outcome == "success" else draw(st.integers(done, len(STAGE_NAMES) - 1))
        steps: list[Step] = [("ai.run.started", {"pod_id": f"pod-{attempt}", "attempt": attempt, "gpu": "A100"})]
        steps += [("ai.run.log", {"level": "info", "message": f"{s} reused"}) for s in STAGE_NAMES[:done]]
        for stage in STAGE_NAMES[done:stop]:
            steps += draw(_stage_steps(stage, complete=True))
        if outcome != "success":
            steps += draw(_stage_steps(STAGE_NAMES[stop], complete=False)) + _ending(outcome, STAGE_NAMES[stop])
        attempts.append(tuple(steps))
        done = stop
    total = sum(len(a) for a in attempts)
    repeats = draw(st.lists(st.integers(0, total - 1), max_size=12))
    delivery = draw(st.permutations(list(range(total)) + repeats))
    batches = st.lists(st.integers(*batch_sizes), min_size=1, max_size=40)
    return Scenario(tuple(attempts), outcome, tuple(delivery), tuple(draw(batches)), tuple(draw(batches)))



def check_order_independence(in_order_db: Database, shuffled_db: Database, scenario: Scenario) -> None:
    """Apply `scenario` both ways on two databases and compare everything ingest wrote."""
    last_attempt = len(scenario.attempts)
    run_id, hypothesis_id = f"r-{uuid.uuid4().hex[:12]}", f"h-{uuid.uuid4().hex[:12]}"
    for database in (in_order_db, shuffled_db):
        insert_run(database, attempt=last_attempt, max_attempts=MAX_ATTEMPTS, run_id=run_id, hypothesis_id=hypothesis_id)
    events = scenario.events(run_id)
    outcomes = apply(in_order_db, events, batch_sizes=scenario.in_order_batches)
    assert {o.status for o in outcomes} == {ACCEPTED}, [o.error for o in outcomes if o.status != ACCEPTED]
    delivered = [events[i] for i in scenario.delivery]
    shuffled = apply(shuffled_db, delivered, batch_sizes=scenario.shuffled_batches)
    assert sum(o.status == ACCEPTED for o in shuffled) == len(events)
    assert sum(o.status == DUPLICATE for o in shuffled) == len(delivered) - len(events)

    expected = documents(in_order_db, run_id)
    assert documents(shuffled_db, run_id) == expected
    run = expected["runs"][0]
    assert run["status"] == FINAL_STATUS[scenario.outcome]
    assert len(expected["events"]) == len(events) == len(expected["events_seen"])
    registered = sum(1 for e in events if e["type"].startswith("ai.artifact."))
    assert len(expected["artifacts"]) == registered



def fresh_mock_db() -> Database:
    database = mongomock.MongoClient(tz_aware=True)["prop"]
    dbmod.ensure_indexes(database)
    # mongomock honours TTL indexes by scanning for expired documents on every access, which
    # doubles the cost of an example; expiry plays no part in this property.
    database.events_seen.drop_index("processedAt_ttl")
    return database
