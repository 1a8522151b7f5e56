"""Counters and once-only ids on the real server, shared by every process: the failed sign-in
throttle, the per-credential rate limit and webhook ids, across gunicorn workers, and the
counters under concurrent writers (FerretDB's updates are not atomic)."""

from __future__ import annotations

import base64
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import requests
from pymongo.database import Database
from standardwebhooks.webhooks import Webhook

from orchestrator import expiring
from orchestrator.events import make_event, seq_for
from tests.helpers import READER_TOKEN, WORKER_TOKEN, bearer
from tests.servers import PYTHON, MongoServer, gunicorn, process_env

pytestmark = pytest.mark.realserver

SECRET = "whsec_" + base64.b64encode(b"realserver-webhook-secret-32byte").decode()
WORKERS = 3


@pytest.fixture(scope="module")
def ingest(real_server: MongoServer, real_db: Database) -> Iterator[str]:
    """gunicorn with several workers behind one (simulated) proxy: each request may land on any
    worker, and each test is its own client address (X-Forwarded-For)."""
    env = process_env(MONGODB_URL=real_server.url(real_db.name), INGEST_TOKEN=WORKER_TOKEN, READER_TOKEN=READER_TOKEN,
                      INGEST_WEBHOOK_SECRET=SECRET, AUTH_FAILURE_LIMIT="5/hour", RATE_LIMIT="20/hour",
                      TRUSTED_PROXIES="1")
    with gunicorn("gunicorn-roles", env, workers=WORKERS) as url:
        yield url


def _fresh_sessions(count: int) -> list[requests.Session]:
    """New connections, so gunicorn spreads the requests over its workers."""
    return [requests.Session() for _ in range(count)]


def test_a_webhook_id_is_accepted_once_by_the_whole_service(ingest: str, real_db: Database) -> None:
    real_db.runs.insert_one({"_id": "r-webhook", "status": "RUNNING", "attempt": 1, "maxAttempts": 3})
    event = make_event("ai.run.log", "r-webhook", seq_for(1, 1), "worker://p", {"level": "info", "message": "m"})
    body = (requests.models.complexjson.dumps(event) + "\n").encode()
    now = datetime.now(UTC)
    headers = {"Content-Type": "application/x-ndjson", "X-Forwarded-For": "198.51.100.20", "webhook-id": "msg-realserver", "webhook-signature":
               Webhook(SECRET).sign("msg-realserver", now, body.decode()), "webhook-timestamp": str(int(now.timestamp()))}
    codes = []
    for session in _fresh_sessions(4):
        with session:
            codes.append(session.post(f"{ingest}/api/ingest/events", data=body, headers=headers, timeout=10).status_code)
    assert codes.count(200) == 1 and codes.count(403) == 3, codes
    assert real_db.events.count_documents({"runId": "r-webhook"}) == 1


def test_concurrent_first_time_claims_have_one_winner(real_db: Database) -> None:
    wins: list[bool] = []
    barrier = threading.Barrier(8)

    def claim() -> None:
        barrier.wait()
        wins.append(expiring.first_time(real_db, "race-id", 60))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wins.count(True) == 1


def test_counters_under_concurrent_threads(real_db: Database) -> None:
    """Every hit is counted while threads of one process race on one window (8 x 25)."""
    barrier = threading.Barrier(8)

    def hit() -> None:
        barrier.wait()
        for _ in range(25):
            expiring.count(real_db, "race-counter", 3600)

    threads = [threading.Thread(target=hit) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert expiring.current(real_db, "race-counter")[0] == 200


_HIT_SCRIPT = """
import sys, time, pymongo
from orchestrator import expiring
db = pymongo.MongoClient(sys.argv[1])[sys.argv[2]]
while time.time() < float(sys.argv[3]):
    time.sleep(0.001)
for _ in range(25):
    expiring.count(db, "process-race", 3600)
"""


def test_counters_under_concurrent_processes(real_server: MongoServer, real_db: Database) -> None:
    """Every hit is counted while 4 processes race on one window (4 x 25), as gunicorn workers do."""
    go = str(time.time() + 2)
    procs = [subprocess.Popen([PYTHON, "-c", _HIT_SCRIPT, real_server.url(real_db.name), real_db.name, go],
                              env=process_env()) for _ in range(4)]
    assert [p.wait(timeout=60) for p in procs] == [0] * 4
    assert expiring.current(real_db, "process-race")[0] == 100


def test_failed_sign_ins_are_counted_across_every_worker(ingest: str) -> None:
    client = {"X-Forwarded-For": "198.51.100.10"}
    wrong = {**bearer("z" * 40 + "wrong-token"), **client}
    answers = []
    for session in _fresh_sessions(8):
        with session:
            answers.append(session.get(f"{ingest}/api/runs", headers=wrong, timeout=10).status_code)
    assert answers[:5] == [403] * 5 and set(answers[5:]) == {429}, answers
    blocked = requests.get(f"{ingest}/api/runs", headers={**bearer(READER_TOKEN), **client}, timeout=10)
    assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) > 0
    elsewhere = requests.get(f"{ingest}/api/runs", headers={**bearer(READER_TOKEN), "X-Forwarded-For": "198.51.100.11"},
                             timeout=10)
    assert elsewhere.status_code == 200


def test_the_rate_limit_of_a_credential_holds_across_every_worker(ingest: str) -> None:
    reader = {**bearer(READER_TOKEN), "X-Forwarded-For": "198.51.100.30"}
    codes = []
    for session in _fresh_sessions(24):
        with session:
            codes.append(session.get(f"{ingest}/api/runs", headers=reader, timeout=10).status_code)
    # The earlier tests' reads used up some of the reader's 20 an hour; none passes beyond it.
    assert codes.count(200) <= 20 and codes[-4:] == [429] * 4, codes
