"""Real server processes for the integration lane: FerretDB on PostgreSQL (or on SQLite, or
MONGODB_TEST_URL; see `devtools.wire_server`), and helpers
to run our own processes (gunicorn, celery workers, the moto S3 server) as OS processes.

Fixtures skip locally with a reason when a server cannot start, and fail under CI (CI=true),
so a broken integration lane can never pass as "skipped".
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
from collections.abc import Iterator

import pytest

from devtools.procs import (  # noqa: F401 - the tests import these from here
    PYTHON,
    ROOT,
    Child,
    ServerUnavailable,
    free_port,
    ping,
    process_env,
    wait_until,
)
from devtools.wire_server import MongoServer as _MongoServer

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str) -> None:
    """Skip locally, fail under CI."""
    if IN_CI:
        pytest.fail(f"real-server lane cannot run under CI: {reason}", pytrace=False)
    pytest.skip(reason)


class MongoServer(_MongoServer):
    """The test server: one that cannot start skips the lane locally and fails it under CI."""

    def start(self) -> None:
        try:
            super().start()
        except ServerUnavailable as exc:
            unavailable(str(exc))


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


@contextlib.contextmanager
def gunicorn(name: str, env: dict[str, str], workers: int = 1) -> Iterator[str]:
    """The ingest app under gunicorn on a free port, as the Procfile runs it; yields its URL once
    /readyz answers, and stops it afterwards."""
    import requests

    port = free_port()
    child = Child(name, [PYTHON, "-m", "gunicorn", "--workers", str(workers), "--bind", f"127.0.0.1:{port}",
                         "ingest_app:create_app()"], env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: requests.get(f"{url}/readyz", timeout=1).ok, 30, "gunicorn to be ready")
        yield url
    finally:
        child.stop()
