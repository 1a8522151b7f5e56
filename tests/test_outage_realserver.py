"""What a client process of ours sees while the server is down, for each process that can die:
FerretDB itself (connection refused), or PostgreSQL behind a FerretDB that stays up and answers
every command with an InternalError. Both must read as "the database is unavailable, try
again", never as a bug."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
import requests
from pymongo.database import Database

from tests.console_helpers import SECRET_KEY
from tests.helpers import READER_TOKEN, WORKER_TOKEN, bearer
from tests.servers import PYTHON, MongoServer, gunicorn, process_env, wait_until

TOKEN = WORKER_TOKEN
AUTH = bearer(READER_TOKEN)


def _take_down(real_server: MongoServer, process: str, crash: bool) -> None:
    if process not in real_server.processes():
        pytest.skip(f"{real_server.description} has no {process} process of ours to stop")
    real_server.take_down(process, crash=crash)


@pytest.fixture(scope="module")
def ingest(real_server: MongoServer, real_db: Database) -> Iterator[str]:
    env = process_env(MONGODB_URL=real_server.url(real_db.name), INGEST_TOKEN=TOKEN, READER_TOKEN=READER_TOKEN, MONGODB_TIMEOUT_S="1",
                      SECRET_KEY=SECRET_KEY)
    with gunicorn("gunicorn-outage", env) as url:
        yield url


def _cli(real_server: MongoServer, real_db: Database, *args: str) -> subprocess.CompletedProcess[str]:
    env = process_env(MONGODB_URL=real_server.url(real_db.name), MONGODB_TIMEOUT_S="1", INGEST_TOKEN=TOKEN)
    return subprocess.run([PYTHON, "-c", "from ops.cli import main; main()", *args], env=env, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize(("process", "crash"), [("ferretdb", True), ("postgresql", True), ("postgresql", False)],
                         ids=["ferretdb-killed", "postgresql-crashed", "postgresql-stopped"])
def test_every_client_reads_an_outage_as_unavailable_and_recovers(
    real_server: MongoServer, real_db: Database, ingest: str, process: str, crash: bool
) -> None:
    assert _cli(real_server, real_db, "list").returncode == 0
    browser = requests.Session()  # a person with the console open
    browser.post(f"{ingest}/signin", data={"token": READER_TOKEN}, timeout=10).raise_for_status()
    _take_down(real_server, process, crash)
    try:
        ready = requests.get(f"{ingest}/readyz", timeout=5)
        listed = _cli(real_server, real_db, "list")
        runs = requests.get(f"{ingest}/api/runs", headers=AUTH, timeout=10)
        page = browser.get(f"{ingest}/", headers={"Accept": "text/html"}, timeout=10)
    finally:
        real_server.start()
    assert page.status_code == 503 and page.headers["Retry-After"] and "Database unreachable" in page.text, page.text[:300]
    assert ready.status_code == 503 and ready.headers["Retry-After"], ready.text
    assert listed.returncode == 5, listed.stdout + listed.stderr
    assert "unreachable" in listed.stderr + listed.stdout and "Traceback" not in listed.stderr
    assert runs.status_code == 503 and runs.headers["Content-Type"] == "application/problem+json", runs.text
    wait_until(lambda: requests.get(f"{ingest}/readyz", timeout=5).ok, 20, "ingest to be ready again")
    assert requests.get(f"{ingest}/api/runs", headers=AUTH, timeout=10).status_code == 200
    assert _cli(real_server, real_db, "list").returncode == 0
    assert browser.get(f"{ingest}/", headers={"Accept": "text/html"}, timeout=10).status_code == 200
