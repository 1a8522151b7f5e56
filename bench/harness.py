"""What every benchmark shares: the server, a scratch directory, and the processes and databases
it starts, all released by `close` (called from a `finally`).

Each benchmark gets fresh databases: on FerretDB the cost of a query or update grows with the
size of the collection it scans (see BENCHMARKS.md), so figures must not depend on which
benchmark ran before.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymongo
import requests
from pymongo.database import Database

from bench.procs import PYTHON, Child, MongoServer, children_of, free_port, process_env, wait_until
from orchestrator import db as dbmod

log = logging.getLogger("bench")

TOKEN = "bench-worker-Hq3Zr8Lm1Vx6Kt9Pw2Nb5Jd7Fs4"
READER_TOKEN = "bench-reader-Gp2Yw7Kc4Rm9Tx1Lb6Nq3Vd8Hj5"
OPERATOR_TOKEN = "bench-operator-Wc5Nz8Qh2Lr7Ks4Jt1Mv9Xb3"
#: Signs the console's sessions (item 7 signs in).
SECRET_KEY = "bench-secret-Ty6Pk1Hm8Zq3Wn5Rc2Vd9Lx4"
#: gunicorn workers of the ingest app: "a few", as the Procfile's WEB_CONCURRENCY (4) on a 2-core box;
#: fewer on FerretDB (see `ingest_workers`).
INGEST_WORKERS = 3
#: Backend connections FerretDB pools, less a margin for the other clients: 50 for the whole server
#: on PostgreSQL (`pool_max_conns`, internal/backends/postgresql/metadata/pool/uri.go), 100 per
#: database on SQLite (`SetMaxOpenConns(100)`, .../sqlite/metadata/pool/opendb.go).
FERRETDB_POOL_HEADROOM = 40
#: gunicorn's worker timeout (s). The Procfile keeps gunicorn's 30 s; the flood's 1,000-event
#: batches may take longer on FerretDB, and a killed worker would end the measurement. The
#: longest request is reported instead.
INGEST_TIMEOUT_S = 300


@dataclass
class Ingest:
    """A gunicorn ingest app serving one database."""

    url: str
    child: Child
    database: str

    @property
    def batch_url(self) -> str:
        return f"{self.url}/api/ingest/events"

    @property
    def single_url(self) -> str:
        return f"{self.url}/api/ingest/event"

    def worker_pids(self) -> list[int]:
        return children_of(self.child.pid)


def ingest_workers(ferretdb: bool) -> int:
    """How many gunicorn workers can post at once without wedging the database.

    FerretDB v1.24 keeps every update of one `update` command holding a pooled backend
    connection until the command ends (`defer closer.Close()` inside the loop over updates,
    internal/handler/msg_update.go): update commands in flight that together hold the whole
    pool deadlock the server for good (seen: one command of 50 updates on PostgreSQL, 3 x 50
    on SQLite). Ingest sends at most `FERRETDB_UPDATES_PER_COMMAND` updates per command there,
    so only as many workers run as keep the total under the pool."""
    if not ferretdb:
        return INGEST_WORKERS
    from orchestrator.ingest import FERRETDB_UPDATES_PER_COMMAND

    return max(1, min(INGEST_WORKERS, FERRETDB_POOL_HEADROOM // FERRETDB_UPDATES_PER_COMMAND))


BATCH_HEADERS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/x-ndjson"}
SINGLE_HEADERS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/cloudevents+json"}


@dataclass
class Harness:
    server: MongoServer
    quick: bool
    #: Past runs to pre-fill for the growth benchmark, once per value (`--history N`).
    history: tuple[int, ...] = ()
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="bench-")))
    children: list[Child] = field(default_factory=list)
    _clients: list[Any] = field(default_factory=list)
    _databases: list[tuple[Any, str]] = field(default_factory=list)

    def database(self, purpose: str) -> Database:
        """A fresh database on the server with every index, dropped at `close`."""
        name = f"bench_{purpose}_{uuid.uuid4().hex[:6]}"
        # socketTimeoutMS: a wedged server (see `ingest_workers`) must fail a call, not hang the bench.
        client = pymongo.MongoClient(self.server.url(name), tz_aware=True, serverSelectionTimeoutMS=10_000,
                                     socketTimeoutMS=300_000)
        self._clients.append(client)
        self._databases.append((client, name))
        db = client[name]
        dbmod.ensure_indexes(db)
        return db

    def env(self, database: str, **extra: str) -> dict[str, str]:
        """The environment of our processes: deployment defaults, except where named here (the
        bench floods ingest from one address on purpose, so RATE_LIMIT is off)."""
        return process_env(
            MONGODB_URL=self.server.url(database), INGEST_TOKEN=TOKEN, READER_TOKEN=READER_TOKEN, RATE_LIMIT="off",
            OPERATOR_TOKEN=OPERATOR_TOKEN, SECRET_KEY=SECRET_KEY,
            ARTIFACT_DIR=str(self.tmp / "artifacts"),
            PIPELINE_MODULES="tests.pipelines_for_tests", SPOOL_DIR=str(self.tmp / f"spool-{uuid.uuid4().hex[:6]}"),
            WORK_DIR=str(self.tmp / "work"), **extra,
        )

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> Child:
        child = Child(name, argv, env, self.tmp)
        self.children.append(child)
        return child

    @property
    def ferretdb(self) -> bool:
        return self.server.external_url is None

    @property
    def ingest_workers(self) -> int:
        return ingest_workers(self.ferretdb)

    def start_ingest(self, database: str, workers: int | None = None, env: dict[str, str] | None = None) -> Ingest:
        workers = workers or self.ingest_workers
        port = free_port()
        child = self.start("gunicorn", [
            PYTHON, "-m", "gunicorn", "--workers", str(workers), "--bind", f"127.0.0.1:{port}",
            "--timeout", str(INGEST_TIMEOUT_S), "--graceful-timeout", "3", "ingest_app:create_app()",
        ], self.env(database, **(env or {})))
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: requests.get(f"{url}/healthz", timeout=1).ok, 30,
                   f"gunicorn to serve /healthz (log {child.log_path})")
        wait_until(lambda: len(children_of(child.pid)) >= workers, 30, "gunicorn's workers to start")
        return Ingest(url, child, database)

    def stop(self, child: Child) -> None:
        child.stop()
        if child in self.children:
            self.children.remove(child)

    def close(self) -> None:
        """Stop every process we started (newest first), drop our databases, remove the scratch."""
        for child in reversed(self.children):
            try:
                child.stop()
            except Exception:  # noqa: BLE001 - keep stopping the others
                log.exception("stopping %s failed", child.name)
        self.children.clear()
        for _client, name in self._databases:
            try:
                with pymongo.MongoClient(self.server.url(name), serverSelectionTimeoutMS=3000,
                                         socketTimeoutMS=10_000) as short:
                    short.drop_database(name)
            except pymongo.errors.PyMongoError as exc:
                log.warning("dropping %s failed: %s", name, exc)
        for client in self._clients:
            client.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def warm_up(ingest: Ingest, rounds: int = 12) -> None:
    """Touch every gunicorn worker with a read and a rejected batch, so imports, the first
    connection and the first index check are not in a figure."""
    with requests.Session() as session:
        for _ in range(rounds):
            session.get(f"{ingest.url}/readyz", timeout=30)
            session.post(ingest.batch_url, data=b'{"not":"an event"}\n', headers=BATCH_HEADERS, timeout=30)
    time.sleep(0.2)
