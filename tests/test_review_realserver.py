"""The review on the real server: two reviewers racing get one decision, and the API's review
route through gunicorn."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
import requests

from orchestrator.errors import TransitionError
from orchestrator.runs import review_run
from tests.console_helpers import run_with_history
from tests.helpers import OPERATOR_TOKEN, READER_TOKEN, WORKER_TOKEN, bearer
from tests.servers import gunicorn, process_env

pytestmark = pytest.mark.realserver


def _reviewer(db: Any, run_id: str, decision: str, who: str, start: threading.Barrier, outcomes: list[str]) -> None:
    start.wait()
    try:
        review_run(db, run_id, decision, by=who, notes="n")
        outcomes.append(f"won:{who}")
    except TransitionError:
        outcomes.append(f"lost:{who}")


def test_two_reviewers_racing_get_exactly_one_decision(real_db: Any) -> None:
    for _ in range(5):
        run_id = run_with_history(real_db)
        outcomes: list[str] = []
        start = threading.Barrier(2)
        threads = [threading.Thread(target=_reviewer, args=(real_db, run_id, d, w, start, outcomes))
                   for d, w in (("accept", "ann"), ("reject", "ben"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        winners = [o.split(":")[1] for o in outcomes if o.startswith("won")]
        assert len(winners) == 1, outcomes
        run = real_db.runs.find_one({"_id": run_id})
        assert run["review"]["by"] == winners[0]
        assert run["status"] == {"ann": "HUMAN_VALIDATED", "ben": "HUMAN_REJECTED"}[winners[0]]
        assert real_db.status_history.count_documents({"runId": run_id, "to": run["status"]}) == 1


def test_the_review_route_through_gunicorn(real_server: Any, real_db: Any) -> None:
    run_id = run_with_history(real_db)
    env = process_env(MONGODB_URL=real_server.url(real_db.name), INGEST_TOKEN=WORKER_TOKEN, READER_TOKEN=READER_TOKEN,
                      OPERATOR_TOKEN=f"fay:{OPERATOR_TOKEN}")
    with gunicorn(f"review-{uuid.uuid4().hex[:6]}", env) as base:
        url = f"{base}/api/runs/{run_id}/review"
        assert requests.post(url, json={"decision": "accept"}, headers=bearer(READER_TOKEN), timeout=10).status_code == 403
        bad = requests.post(url, json={"decision": "reject"}, headers=bearer(OPERATOR_TOKEN), timeout=10)
        assert bad.status_code == 422 and "notes" in bad.json()["errors"]
        done = requests.post(url, json={"decision": "reject", "notes": "no ablation"}, headers=bearer(OPERATOR_TOKEN), timeout=10)
        assert done.status_code == 200 and done.json()["status"] == "HUMAN_REJECTED"
        assert done.json()["review"]["by"] == "fay"
        again = requests.post(url, json={"decision": "accept"}, headers=bearer(OPERATOR_TOKEN), timeout=10)
        assert again.status_code == 409
