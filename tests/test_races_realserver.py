"""Races on the real server, decided by unique inserts (atomic on every MongoDB-wire server, where
status-guarded updates are not on FerretDB v1): pods racing for a claim, dispatchers racing for
a dispatch, and a late outcome racing a dispatcher for the next attempt."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta

from orchestrator import claims, dispatches, status_history
from orchestrator.dispatcher import dispatch_once
from orchestrator.ingest import Item, ingest
from orchestrator.runs import create_hypothesis_and_run
from orchestrator.sweeper import sweep_once
from orchestrator.utc import utcnow
from tests.helpers import make_settings, start_attempt
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
    start_attempt(db, run_id, 1, "pod-a")
    db.claims.update_one({"_id": f"{run_id}:1"}, {"$set": {"leaseExpiresAt": utcnow() - timedelta(hours=1)}})
    sweep_once(db, make_settings(), lambda *a, **k: None)
    return run_id


def test_a_late_outcome_and_a_dispatcher_racing_for_the_next_attempt_never_both_win(real_db):
    """Each order once, then twelve races: whichever takes the slot of attempt 2 decides, and the
    run shows only the winner's effect."""
    def dispatcher(run_id, sent):
        return dispatch_once(real_db, lambda _r, attempt, **_: sent.append(attempt))

    def late_outcome(run_id, sent):
        outcome = Worker(run_id).event("ai.validation.auto_completed", verdict="pass")
        return ingest(real_db, [Item(0, outcome)], bucket="b", default_max_attempts=3, seen_lookup=False)

    wins = Counter()
    for order in ("dispatcher first", "outcome first", *["race"] * 12):
        run_id, sent = _presumed_lost(real_db), []
        if order == "race":
            _race(2, lambda i, run_id=run_id, sent=sent: (dispatcher, late_outcome)[i](run_id, sent))
        else:
            first, second = (dispatcher, late_outcome) if order == "dispatcher first" else (late_outcome, dispatcher)
            first(run_id, sent)
            second(run_id, sent)
        kind = dispatches.get(real_db, run_id, 2)["kind"]
        wins[kind] += 1
        run = real_db.runs.find_one({"_id": run_id})
        applied = [c for c in status_history.of_run(real_db, run_id) if c["to"] == "AWAITING_HUMAN"]
        if kind == dispatches.DISPATCH:
            assert sent == [2] and applied == [], "the dispatcher won: the outcome stays in the history"
            assert (run["status"], run["attempt"]) == ("SCHEDULED", 2), order
        else:
            assert sent == [] and (run["status"], run["attempt"]) == ("AWAITING_HUMAN", 1), order
        if order != "race":
            assert kind == (dispatches.DISPATCH if order == "dispatcher first" else dispatches.OUTCOME)
    assert sum(wins.values()) == 14 and min(wins.values()) >= 1, wins
