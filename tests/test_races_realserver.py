"""Races on the real server, decided by unique inserts (atomic on every MongoDB-wire server, where
status-guarded updates are not on FerretDB v1): pods racing for a claim, dispatchers racing for
a dispatch, and a late outcome racing a dispatcher for the next attempt."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta

from orchestrator import claims, dispatches, runs, status_history
from orchestrator.db import utcnow
from orchestrator.dispatcher import dispatch_once
from orchestrator.ingest import Item, ingest
from orchestrator.runs import create_hypothesis_and_run
from orchestrator.sweeper import sweep_once
from tests.helpers import make_settings
from tests.ingest_helpers import Worker


def _race(n: int, target) -> list:
    results: list = [None] * n
    barrier = threading.Barrier(n)

    def run(i: int) -> None:
        barrier.wait()
        results[i] = target(i)
    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def test_eight_pods_racing_for_one_attempt_give_exactly_one_claim(real_db):
    for attempt in range(1, 6):
        wins = _race(8, lambda i, attempt=attempt: claims.claim_attempt(real_db, "race-run", attempt, f"pod-{i}", 90))
        assert sum(w is not None for w in wins) == 1, f"attempt {attempt}: {wins}"


def test_two_dispatchers_racing_never_send_a_run_twice(real_db):
    run_ids = [create_hypothesis_and_run(real_db, "t", "i")[1] for _ in range(30)]
    sent: list[tuple[str, int]] = []
    lock = threading.Lock()

    def send(run_id, attempt, **_):
        with lock:
            sent.append((run_id, attempt))
    _race(2, lambda i: dispatch_once(real_db, send))
    counts = Counter(sent)
    assert set(counts) == {(r, 1) for r in run_ids} and set(counts.values()) == {1}


def _presumed_lost(db) -> str:
    run_id = create_hypothesis_and_run(db, "t", "i")[1]
    dispatch_once(db, lambda *a, **k: None)
    claims.claim_attempt(db, run_id, 1, "pod-a", 1)
    runs.start(db, run_id, 1, "pod-a")
    db.claims.update_one({"_id": f"{run_id}:1"}, {"$set": {"leaseExpiresAt": utcnow() - timedelta(hours=1)}})
    sweep_once(db, make_settings(), lambda *a, **k: None)
    return run_id


def test_a_late_outcome_and_a_dispatcher_racing_for_the_next_attempt_never_both_win(real_db):
    wins = Counter()
    for _ in range(12):
        run_id = _presumed_lost(real_db)
        assert real_db.runs.find_one({"_id": run_id})["status"] == "QUEUED"
        outcome = Worker(run_id).event("ai.validation.auto_completed", verdict="pass")
        sent: list[int] = []

        def contender(i: int, run_id=run_id, outcome=outcome, sent=sent):
            if i == 0:
                return dispatch_once(real_db, lambda _r, attempt, **_: sent.append(attempt))
            return ingest(real_db, [Item(0, outcome)], bucket="b", default_max_attempts=3, seen_lookup=False)
        _race(2, contender)
        decision = dispatches.get(real_db, run_id, 2)
        wins[decision["kind"]] += 1
        applied = [c for c in status_history.of_run(real_db, run_id) if c["to"] == "AWAITING_HUMAN"]
        if decision["kind"] == dispatches.DISPATCH:
            assert sent == [2] and applied == [], "the dispatcher won: the outcome stays in the history"
        else:
            run = real_db.runs.find_one({"_id": run_id})
            assert sent == [] and (run["status"], run["attempt"]) == ("AWAITING_HUMAN", 1)
    assert sum(wins.values()) == 12, wins
