"""Fixtures for both lanes. Unit lane: `mock_db` (mongomock), `cli_db` (the CLI's embedded database). Integration lane: `real_server`
(one FerretDB process per session, or MONGODB_TEST_URL) and `real_db` (a fresh database per
test module)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import mongomock
import pymongo
import pytest

from orchestrator import db as dbmod
from tests.fakes import FakeIngest
from tests.helpers import WORKER_TOKEN
from tests.servers import MongoServer, S3Server
from tests.tracing_helpers import spans  # noqa: F401 - a fixture: the SDK with an in-memory exporter


@pytest.fixture(scope="session", autouse=True)
def _close_cached_clients() -> Iterator[None]:
    """Close the process-wide clients `orchestrator.db` caches, so none is left unclosed."""
    yield
    dbmod.forget_clients()


@pytest.fixture
def mock_db() -> Iterator[pymongo.database.Database]:
    """A fresh mongomock database with every index created."""
    database = mongomock.MongoClient(tz_aware=True)["unit"]
    dbmod.ensure_indexes(database)
    yield database


@pytest.fixture
def cli_db(monkeypatch: pytest.MonkeyPatch) -> pymongo.database.Database:
    """The embedded database `manage-runs` uses when a test invokes it in this process (click's
    test runner): MONGODB_URL points at a fresh one."""
    name = f"cli_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("MONGODB_URL", f"mongomock://localhost/{name}")
    monkeypatch.setenv("INGEST_TOKEN", WORKER_TOKEN)
    return dbmod.embedded_client()[name]


@pytest.fixture(scope="session")
def real_server() -> Iterator[MongoServer]:
    server = MongoServer(os.environ.get("MONGODB_TEST_URL") or None)
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def real_db(real_server: MongoServer, request: pytest.FixtureRequest) -> Iterator[pymongo.database.Database]:
    """A fresh database on the real server for one test module, dropped afterwards."""
    name = f"t_{request.module.__name__.rsplit('.', 1)[-1][:30]}_{uuid.uuid4().hex[:6]}"
    client = pymongo.MongoClient(real_server.url(name), tz_aware=True, serverSelectionTimeoutMS=5000)
    database = client[name]
    dbmod.ensure_indexes(database)
    yield database
    try:
        client.drop_database(name)
    except pymongo.errors.PyMongoError:
        pass
    client.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that uses the real server carries the `realserver` marker, so
    `pytest -m realserver` and `-m "not realserver"` select the two lanes."""
    for item in items:
        if "real_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.realserver)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Report each lane's count on its own line, so a silently skipped lane shows."""
    counts: dict[str, dict[str, int]] = {"unit": {}, "integration": {}}
    for outcome in ("passed", "failed", "skipped", "error"):
        for report in terminalreporter.stats.get(outcome, []):
            if getattr(report, "when", "call") not in ("call", "setup") or (outcome == "passed" and report.when != "call"):
                continue
            lane = "integration" if "realserver" in getattr(report, "keywords", {}) else "unit"
            counts[lane][outcome] = counts[lane].get(outcome, 0) + 1
    for lane, by_outcome in counts.items():
        text = ", ".join(f"{n} {o}" for o, n in sorted(by_outcome.items())) or "no tests"
        terminalreporter.write_line(f"{lane} lane: {text}")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One moto S3 server process for the session (`S3Server.endpoint` is host:port)."""
    server = S3Server()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def ingest() -> Iterator[FakeIngest]:
    """An ingest stand-in in a thread of this process (`tests.fakes.FakeIngest`), for the
    emitter's tests and the worker metrics' (files with a real-server `ingest` fixture override it)."""
    fake = FakeIngest()
    yield fake
    fake.stop()
