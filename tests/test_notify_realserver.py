"""Run notifications on the real server (FerretDB on PostgreSQL): a run that reaches
AWAITING_HUMAN gets exactly one signed POST however many notifiers run, also through a
receiver's 503, and the dispatcher process sends it when NOTIFY_URL is set."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo.database import Database

from orchestrator import notify
from orchestrator.notify import Notifier, Policy
from tests.cluster import Cluster, cluster_on
from tests.helpers import make_settings
from tests.ingest_helpers import Worker, apply, full_run, insert_run
from tests.notify_helpers import Answer, receiving
from tests.servers import MongoServer, wait_until

SECRET = "whsec_" + base64.b64encode(b"realserver-notify-secret-32bytes").decode()
FAST = Policy(first_retry_s=0.2, timeout_s=2.0, max_tries=4, hold_s=60)


def _awaiting(db: Database) -> str:
    run_id = insert_run(db, status="STARTING")
    apply(db, full_run(Worker(run_id)))
    assert db.runs.find_one({"_id": run_id})["status"] == "AWAITING_HUMAN"
    return run_id


def _notifiers(db: Database, url: str, count: int) -> list[Notifier]:
    settings = make_settings(NOTIFY_URL=url, NOTIFY_SECRET=SECRET)
    return [Notifier(db, settings, policy=FAST) for _ in range(count)]


def _passes(notifiers: list[Notifier], rounds: int) -> None:
    """Every notifier passes `rounds` times, all at once, as several dispatcher processes would."""
    def work(notifier: Notifier) -> None:
        for _ in range(rounds):
            notifier.run_once()
            time.sleep(0.05)

    threads = [threading.Thread(target=work, args=(n,)) for n in notifiers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)


def _mine(received: list[Any], run_id: str) -> list[Any]:
    return [r for r in received if r.json()["runId"] == run_id]


def test_a_run_that_reaches_awaiting_human_gets_exactly_one_signed_post_from_three_notifiers(real_db: Database) -> None:
    run_id = _awaiting(real_db)
    with receiving() as receiver:
        _passes(_notifiers(real_db, receiver.url, 3), rounds=4)
        time.sleep(0.3)
        [request] = _mine(receiver.received, run_id)
    request.verify(SECRET)
    assert request.json()["type"] == "run.awaiting_human" and request.json()["title"] == "t"
    [doc] = list(real_db.notifications.find({"runId": run_id}))
    assert (doc["state"], doc["attempts"], doc["_id"]) == ("sent", 1, request.headers["webhook-id"])


def test_a_receiver_that_first_answers_503_gets_the_notification_once_on_the_retry(real_db: Database) -> None:
    run_id = _awaiting(real_db)
    with receiving(Answer(503, body="starting up")) as receiver:
        notifiers = _notifiers(real_db, receiver.url, 2)
        deadline = time.monotonic() + 20
        while real_db.notifications.find_one({"runId": run_id, "state": "sent"}) is None:
            assert time.monotonic() < deadline, list(real_db.notifications.find({"runId": run_id}))
            _passes(notifiers, rounds=1)
        time.sleep(0.3)
        first, second = _mine(receiver.received, run_id)
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    first.verify(SECRET)
    second.verify(SECRET)
    [doc] = list(real_db.notifications.find({"runId": run_id}))
    assert (doc["state"], doc["attempts"], doc["lastError"]) == ("sent", 2, None)
    assert notify.counts(real_db)["pending"] == 0 and notify.recent(real_db, 1)[0]["runId"] == run_id


@pytest.fixture
def cluster(real_server: MongoServer, tmp_path: Path) -> Iterator[Cluster]:
    with cluster_on(real_server, tmp_path, "n") as c:
        yield c


def test_the_dispatcher_process_sends_a_signed_notification_when_notify_url_is_set_and_stops_on_sigterm(
        cluster: Cluster) -> None:
    with receiving(Answer(503)) as receiver:
        cluster.base_env.update(NOTIFY_URL=receiver.url, NOTIFY_SECRET=SECRET, CONSOLE_URL="https://console.example.org")
        dispatcher = cluster.start_dispatcher()
        wait_until(lambda: "notifier started" in dispatcher.output(), 30, "the notifier to start")
        run_id = _awaiting(cluster.db)
        try:
            first, second = receiver.wait_for(2, timeout_s=30)
        except AssertionError:
            pytest.fail(cluster.logs())
        time.sleep(1.0)
        assert len(receiver.received) == 2, "sent once after the 503, never again"
        second.verify(SECRET)
        assert second.json()["runId"] == run_id and second.json()["url"] == f"https://console.example.org/runs/{run_id}"
        assert first.headers["webhook-id"] == second.headers["webhook-id"]
        started = time.monotonic()
        dispatcher.stop(timeout=15)
    assert dispatcher.process.returncode == 0 and time.monotonic() - started < 10, cluster.logs()
    assert "notifier stopped" in dispatcher.output()
    assert "/hooks/runs" not in dispatcher.output(), "the receiver's path is a credential"
