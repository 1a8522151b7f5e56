"""`manage-runs demo` against a database others use: it runs its own run and nobody else's."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from orchestrator.runs import create_hypothesis_and_run
from tests.servers import PYTHON, ROOT, process_env

pytestmark = pytest.mark.realserver


def test_the_demo_on_a_shared_database_leaves_another_queued_run_queued(real_db: Any, real_server: Any,
                                                                         tmp_path: Any) -> None:
    _, theirs = create_hypothesis_and_run(real_db, "Someone else's idea", "Label smoothing calibrates better.")
    env = process_env()
    for name in ("INGEST_URL", "INGEST_TOKEN", "MINIO_ENDPOINT", "SPOOL_DIR", "WORK_DIR", "ARTIFACT_DIR"):
        env.pop(name, None)
    env["MONGODB_URL"] = real_server.url(real_db.name)
    done = subprocess.run([PYTHON, "-m", "ops.cli", "--json", "demo", "--output", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-4000:]
    mine = json.loads(done.stdout.strip().splitlines()[-1])
    assert mine["status"] == "AWAITING_HUMAN"
    assert mine["queue"].startswith("demo-"), "the demo's run travels on a queue of its own"
    other = real_db.runs.find_one({"_id": theirs})
    assert other["status"] == "QUEUED" and int(other.get("attempt") or 0) == 0
    assert real_db.dispatches.count_documents({"runId": theirs}) == 0
    assert real_db.messages.count_documents({"queue": "gpu"}) == 0, "nothing was sent to the shared gpu queue"
