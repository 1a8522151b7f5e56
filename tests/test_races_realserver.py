"""Races on the real server. Claims rest on unique inserts, atomic on every MongoDB-wire server;
status-guarded updates are atomic on MongoDB only (FerretDB v1 applies findAndModify as read,
modify, write back), so those tests skip on FerretDB naming the missing feature."""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from orchestrator import claims
from orchestrator.dispatcher import dispatch_once
from orchestrator.runs import create_hypothesis_and_run


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


def test_two_dispatchers_racing_never_send_a_run_twice(real_server, real_db):
    if real_server.is_ferretdb:
        pytest.skip("needs an atomic findAndModify (FerretDB v1 reads, modifies and writes back, so two "
                    "dispatchers can both win; the worker's claim keeps the run from executing twice)")
    run_ids = [create_hypothesis_and_run(real_db, "t", "i")[1] for _ in range(30)]
    sent: list[tuple[str, int]] = []
    lock = threading.Lock()

    def send(run_id, attempt, **_):
        with lock:
            sent.append((run_id, attempt))
    _race(2, lambda i: dispatch_once(real_db, send))
    counts = Counter(sent)
    assert set(counts) == {(r, 1) for r in run_ids} and set(counts.values()) == {1}
