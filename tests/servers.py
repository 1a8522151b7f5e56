"""Real server processes for the integration lane: FerretDB (or MONGODB_TEST_URL), and helpers
to run our own processes (gunicorn, celery workers, the moto S3 server) as OS processes.

Fixtures skip locally with a reason when a server cannot start, and fail under CI (CI=true),
so a broken integration lane can never pass as "skipped".
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
from pathlib import Path
from typing import Callable

import pymongo
import pytest

ROOT = Path(__file__).resolve().parent.parent
FERRETDB_BIN = ROOT / "devtools" / "ferretdb" / "bin" / "ferretdb-test"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str) -> None:
    """Skip locally, fail under CI."""
    if IN_CI:
        pytest.fail(f"real-server lane cannot run under CI: {reason}", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05) -> object:
    """Poll `predicate` until it returns something truthy; fail naming `what` on timeout."""
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


class MongoServer:
    """A MongoDB-wire server for the tests: our FerretDB process, or an external one."""

    def __init__(self, external_url: str | None = None):
        self.external_url = external_url
        self.port = free_port()
        self.datadir = Path(tempfile.mkdtemp(prefix="ferretdb-"))
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.datadir / "ferretdb.log"

    @property
    def is_ferretdb(self) -> bool:
        return self.external_url is None

    def url(self, database: str) -> str:
        if self.external_url:
            base = self.external_url.rstrip("/")
            head, _, query = base.partition("?")
            scheme, _, rest = head.partition("://")
            host = rest.split("/", 1)[0]
            return f"{scheme}://{host}/{database}" + (f"?{query}" if query else "")
        return f"mongodb://127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        if self.external_url:
            if not ping(self.external_url, 3000):
                unavailable(f"MONGODB_TEST_URL={self.external_url} does not answer")
            return
        if not FERRETDB_BIN.exists():
            unavailable(f"{FERRETDB_BIN} is not built; run devtools/ferretdb/build.sh (needs Go)")
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [str(FERRETDB_BIN), "-listen", f"127.0.0.1:{self.port}", "-dir", str(self.datadir / "data"), "-log-level", "error"],
            stdout=log, stderr=log,
        )
        try:
            wait_until(lambda: ping(self.url("admin")), 20, "FerretDB to answer")
        except TimeoutError as exc:
            self.stop()
            unavailable(f"FerretDB did not start: {exc}; log: {self.log_path.read_text()[-2000:]}")

    def stop(self) -> None:
        """Stop the server (the outage tests call this mid-run, then `start` again)."""
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


def process_env(**overrides: str) -> dict[str, str]:
    """The environment for a child process of ours: this one, with the repo importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(overrides)
    return env


class Child:
    """One of our own processes (gunicorn, a celery worker), with its output kept in a file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], cwd: Path | None = None):
        self.name = name
        self.log_path = Path(tempfile.mkstemp(prefix=f"{name}-", suffix=".log")[1])
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            argv, env=env, cwd=str(cwd or ROOT), stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (a celery worker's pool children too)."""
        if self.alive():
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, timeout: float = 15) -> None:
        if self.alive():
            self.kill(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
                self.process.wait()
        self._log.close()


PYTHON = sys.executable


class S3Server:
    """moto's S3 API server (`moto_server`) as a separate OS process on loopback: a real S3 HTTP
    endpoint the `minio` client talks to, standing in for MinIO, which is not installable here."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"127.0.0.1:{self.port}"
        self.child: Child | None = None

    def start(self) -> None:
        executable = shutil.which("moto_server")
        if executable is None:
            unavailable("moto_server is not installed; pip install 'moto[server]'")
        self.child = Child("moto-s3", [executable, "-H", "127.0.0.1", "-p", str(self.port)], process_env())
        try:
            wait_until(self._answers, 30, "moto_server to answer")
        except TimeoutError as exc:
            output = self.child.output()[-2000:]
            self.stop()
            unavailable(f"moto_server did not start: {exc}; output: {output}")

    def _answers(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
            conn.sendall(b"GET /moto-api/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            return conn.recv(12).startswith(b"HTTP/1.")

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()
            self.child = None
