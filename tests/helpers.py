"""Helpers every kind of test uses."""

from __future__ import annotations

import uuid
from typing import Any

from orchestrator.runs import create_hypothesis_and_run
from orchestrator.settings import DEFAULT_PRIORITY, Settings

#: One token per role, as a deployment has (`orchestrator.credentials`).
WORKER_TOKEN = "worker-Qx7Lm2Vb9Rt4Kp8Zs3Nd6Hf1Jc5Wy0"
READER_TOKEN = "reader-Ab3Cd5Ef7Gh9Ij2Kl4Mn6Op8Qr0St"
OPERATOR_TOKEN = "operator-Zy9Xw7Vu5Ts3Rq1Po8Nm6Lk4Ji2"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def make_settings(**env: str) -> Settings:
    """Settings for a test: embedded database and short intervals unless overridden."""
    base = {
        "MONGODB_URL": f"mongomock://localhost/test_{uuid.uuid4().hex[:8]}",
        "INGEST_TOKEN": WORKER_TOKEN,
        "READER_TOKEN": READER_TOKEN,
        "OPERATOR_TOKEN": OPERATOR_TOKEN,
        "POD_ID": "pod-test",
        "HEARTBEAT_INTERVAL_S": "0.2",
        "LEASE_S": "2",
        "CANCEL_GRACE_S": "1",
        "MONGODB_TIMEOUT_S": "2",
    }
    base.update(env)
    return Settings.from_env(base)


def start_attempt(db: Any, run_id: str, attempt: int, pod_id: str) -> None:
    """A claimed attempt's start as the system records it: the worker writes no run document,
    and ingest applies its `ai.run.started` (SCHEDULED -> STARTING)."""
    from orchestrator.events import make_event, seq_for
    from orchestrator.ingest import ACCEPTED, Item, ingest

    event = make_event("ai.run.started", run_id, seq_for(attempt, 1), f"worker://{pod_id}",
                       {"pod_id": pod_id, "attempt": attempt})
    [outcome] = ingest(db, [Item(0, event)], bucket="b", default_max_attempts=3)
    assert outcome.status == ACCEPTED, outcome


def queued_run(db: Any, priority: int = DEFAULT_PRIORITY, **kw: Any) -> str:
    """A hypothesis and its QUEUED run, as the frontend inserts them; returns the run id."""
    return create_hypothesis_and_run(db, "t", "idea", priority=priority, **kw)[1]


def status_chain(db: Any, wait_s: float = 10.0) -> Any:
    """Checks a run's status history: each change starts where the one before ended, from
    QUEUED, and the last ends at the run's status. Returns the changes. An entry is written
    just after its status (ingest: after the batch's updates), so a reader may see the status
    first: the last link is waited for up to `wait_s` seconds."""
    import time

    from orchestrator import status_history

    def check(run_id: str) -> list[dict[str, Any]]:
        deadline = time.monotonic() + wait_s
        while True:
            changes = status_history.of_run(db, run_id)
            status = db.runs.find_one({"_id": run_id})["status"]
            previous = "QUEUED"
            for change in changes:
                assert change["from"] == previous, (previous, changes)
                assert change["by"] and change["reason"] and isinstance(change["attempt"], int), change
                previous = change["to"]
            if previous == status:
                return changes
            assert time.monotonic() < deadline, (status, changes)
            time.sleep(0.1)
    return check
