"""The MongoDB-wire server of the real-server tests and the benchmarks: `MONGODB_TEST_URL` when
given, else our FerretDB binary on a free loopback port, backed by a throwaway PostgreSQL
cluster (the default, production-like) or by SQLite files (`FERRETDB_BACKEND=sqlite`, for a
machine without PostgreSQL; it scans every collection in Go, so only small data is fast).

Which process dies in a fault test is explicit: `stop()` / `stop(kill=True)` is FerretDB, the
wire server the clients talk to; `postgres.stop()` / `postgres.crash()` is the database behind it.
`start()` brings back whatever is down, on the same ports and data.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from devtools.postgres import PostgresServer
from devtools.procs import ROOT, ServerUnavailable, free_port, ping, wait_until

FERRETDB_BIN = ROOT / "devtools" / "ferretdb" / "bin" / "ferretdb-test"
BACKENDS = ("postgresql", "sqlite")
#: Idle time after which FerretDB's PostgreSQL pool checks a connection before use (pgxpool).
POOL_PING_IDLE_S = 1.1


def backend_from_env() -> str:
    """`FERRETDB_BACKEND`: postgresql (default) or sqlite."""
    backend = os.environ.get("FERRETDB_BACKEND", "").strip().lower() or "postgresql"
    if backend not in BACKENDS:
        raise ServerUnavailable(f"FERRETDB_BACKEND={backend!r}: expected one of {', '.join(BACKENDS)}")
    return backend


def pg_indexes_from_env() -> bool:
    """`FERRETDB_PG_INDEXES`: 1 (default) installs `orchestrator.index_plan`'s GIN indexes in the
    test cluster, as a deployment does; 0 leaves FerretDB's tables as it makes them."""
    value = os.environ.get("FERRETDB_PG_INDEXES", "").strip() or "1"
    if value not in ("0", "1"):
        raise ServerUnavailable(f"FERRETDB_PG_INDEXES={value!r}: expected 1 or 0")
    return value == "1"


class MongoServer:
    """One server for a test session or a bench run; `close` removes its data."""

    def __init__(self, external_url: str | None = None, prefix: str = "ferretdb-", durable: bool = False):
        self.external_url = external_url
        self.backend = "external" if external_url else backend_from_env()
        self.port = free_port()
        self.datadir = Path(tempfile.mkdtemp(prefix=prefix))
        self.log_path = self.datadir / "ferretdb.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.postgres = (PostgresServer(f"{prefix}pg-", durable, gin_indexes=pg_indexes_from_env())
                         if self.backend == "postgresql" else None)
        self._down_at = 0.0

    @property
    def is_ferretdb(self) -> bool:
        return self.external_url is None

    @property
    def description(self) -> str:
        """What a report names: "FerretDB on PostgreSQL", "FerretDB on SQLite" or the URL's server."""
        return {"postgresql": "FerretDB on PostgreSQL", "sqlite": "FerretDB on SQLite"}.get(self.backend, "MONGODB_TEST_URL")

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def url(self, database: str) -> str:
        if self.external_url:
            head, _, query = self.external_url.rstrip("/").partition("?")
            scheme, _, rest = head.partition("://")
            host = rest.split("/", 1)[0]
            return f"{scheme}://{host}/{database}" + (f"?{query}" if query else "")
        return f"mongodb://127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """Start whatever is down (PostgreSQL first). Raises `ServerUnavailable` when the server
        cannot be had, saying why and how to fix it."""
        if self.external_url:
            if not ping(self.external_url, 3000):
                raise ServerUnavailable(f"MONGODB_TEST_URL={self.external_url} does not answer a ping")
            return
        if not FERRETDB_BIN.exists():
            raise ServerUnavailable(f"{FERRETDB_BIN} is not built; run `bash devtools/setup.sh` (needs Go >= 1.22), "
                                    "or set MONGODB_TEST_URL to a MongoDB server")
        if self.postgres is not None and not self.postgres.running():
            # FerretDB's pool (pgxpool) pings a connection idle over 1 s before handing it out and
            # replaces it when broken; after a shorter outage each pooled connection fails one
            # command. Our processes treat that as "unavailable", a test's own client would not.
            time.sleep(max(0.0, self._down_at + POOL_PING_IDLE_S - time.monotonic()))
            self.postgres.start()
        if self.process is None:
            self._start_ferretdb()

    def _start_ferretdb(self) -> None:
        if self.postgres is not None:
            backend_args = ["-postgresql-url", self.postgres.url()]
        else:
            backend_args = ["-dir", str(self.datadir / "data")]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [str(FERRETDB_BIN), "-listen", f"127.0.0.1:{self.port}", *backend_args, "-log-level", "error"],
                stdout=log, stderr=log, start_new_session=True,
            )
        try:
            wait_until(lambda: ping(self.url("admin")), 30, "FerretDB to answer")
        except TimeoutError as exc:
            self.stop()
            raise ServerUnavailable(f"FerretDB did not start: {exc}; log: {self.log_path.read_text()[-2000:]}") from None

    def stop(self, kill: bool = False) -> None:
        """Stop FerretDB: SIGTERM lets the requests in flight finish (SIGKILL after 10 s);
        `kill=True` is a crash in the middle of whatever it was doing."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def take_down(self, process: str, crash: bool = False) -> None:
        """Stop one process of the server, as a fault test names it: "ferretdb" (the wire server
        the clients talk to) or "postgresql" (the database behind it). `crash` kills it in the
        middle of its work instead of a clean shutdown. `start()` brings it back."""
        if process == "ferretdb" and self.is_ferretdb:
            self.stop(kill=crash)
        elif process == "postgresql" and self.postgres is not None:
            self.postgres.crash() if crash else self.postgres.stop()
            self._down_at = time.monotonic()
        else:
            raise ServerUnavailable(f"cannot take down {process!r}: this server is {self.description}")

    def processes(self) -> tuple[str, ...]:
        """The processes `take_down` can stop on this server."""
        return ("ferretdb", "postgresql")[: {"postgresql": 2, "sqlite": 1}.get(self.backend, 0)]

    def close(self) -> None:
        self.stop()
        if self.postgres is not None:
            self.postgres.close()
        shutil.rmtree(self.datadir, ignore_errors=True)
