"""Processes for the real-server tests and the benchmarks: the MongoDB-wire server (our FerretDB
binary, or `MONGODB_TEST_URL`) and our own processes (gunicorn, Celery workers, dispatchers),
each with its output in a log file.

Plain Python on purpose: `tests/servers.py` turns a server that cannot start into a pytest
skip or failure, `bench/procs.py` into a `BenchError`; both build on this one copy.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pymongo

ROOT = Path(__file__).resolve().parent.parent
FERRETDB_BIN = ROOT / "devtools" / "ferretdb" / "bin" / "ferretdb-test"
PYTHON = sys.executable


class ServerUnavailable(RuntimeError):
    """The server cannot be had; the message says why and how to fix it."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05) -> object:
    """Poll `predicate` until it returns something truthy; TimeoutError naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - keep polling, report the last error
            last_error = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_error})" if last_error else ""))


def ping(url: str, timeout_ms: int = 500) -> bool:
    client = pymongo.MongoClient(url, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms)
    try:
        client.admin.command("ping")
        return True
    finally:
        client.close()


def process_env(**overrides: str) -> dict[str, str]:
    """This process's environment with the repository importable, plus `overrides`."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(overrides)
    return env


class MongoServer:
    """`MONGODB_TEST_URL` when given, else our FerretDB binary on a free loopback port with its
    data in a temporary directory. `stop` then `start` restarts it on the same port and data
    (the outage tests do that)."""

    def __init__(self, external_url: str | None = None, prefix: str = "ferretdb-"):
        self.external_url = external_url
        self.port = free_port()
        self.datadir = Path(tempfile.mkdtemp(prefix=prefix))
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.datadir / "ferretdb.log"

    @property
    def is_ferretdb(self) -> bool:
        return self.external_url is None

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
        """Raises `ServerUnavailable` when the server does not answer."""
        if self.external_url:
            if not ping(self.external_url, 3000):
                raise ServerUnavailable(f"MONGODB_TEST_URL={self.external_url} does not answer a ping")
            return
        if not FERRETDB_BIN.exists():
            raise ServerUnavailable(f"{FERRETDB_BIN} is not built; run `bash devtools/ferretdb/build.sh` (needs Go "
                                    ">= 1.22), or set MONGODB_TEST_URL to a MongoDB server")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [str(FERRETDB_BIN), "-listen", f"127.0.0.1:{self.port}", "-dir", str(self.datadir / "data"),
                 "-log-level", "error"],
                stdout=log, stderr=log, start_new_session=True,
            )
        try:
            wait_until(lambda: ping(self.url("admin")), 20, "FerretDB to answer")
        except TimeoutError as exc:
            self.stop()
            raise ServerUnavailable(f"FerretDB did not start: {exc}; log: {self.log_path.read_text()[-2000:]}") from None

    def stop(self) -> None:
        """SIGTERM (FerretDB lets in-flight requests finish), SIGKILL after 10 s."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.datadir, ignore_errors=True)


class Child:
    """One of our processes in its own process group (so a Celery worker's pool children are
    signalled with it), its output kept in `log_path` (in `log_dir`, else the temp directory)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path | None = None,
                 cwd: Path | None = None):
        self.name = name
        fd, path = tempfile.mkstemp(prefix=f"{name}-", suffix=".log", dir=log_dir)
        os.close(fd)
        self.log_path = Path(path)
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(argv, env=env, cwd=str(cwd or ROOT), stdout=self._log,
                                        stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self, tail: int | None = None) -> str:
        text = self.log_path.read_text(errors="replace")
        return text[-tail:] if tail else text

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group."""
        try:
            os.killpg(self.process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM to the group, SIGKILL after `timeout` seconds; reaps pool children a dead
        leader left behind."""
        if self.alive():
            self.kill(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
                self.process.wait()
        else:
            self.kill(signal.SIGKILL)
        self._log.close()
