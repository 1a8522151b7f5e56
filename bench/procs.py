"""The processes a benchmark drives: the MongoDB-wire server, and our own processes (gunicorn,
Celery workers, dispatchers, the stub ingest), each with its output in a log file.

Bench-local on purpose: `tests/servers.py` skips or fails through pytest, which a command-line
harness must not do. Same binary, same flags as the real-server lane.
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

ROOT = Path(__file__).resolve().parent.parent
FERRETDB_BIN = ROOT / "devtools" / "ferretdb" / "bin" / "ferretdb-test"
PYTHON = sys.executable


class BenchError(RuntimeError):
    """The harness cannot run: a server or process did not start. The message says which and why."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05) -> object:
    """Poll `predicate` until it returns something truthy; BenchError naming `what` on timeout."""
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
    raise BenchError(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_error})" if last_error else ""))


def _ping(url: str, timeout_ms: int = 500) -> bool:
    client = pymongo.MongoClient(url, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms)
    try:
        client.admin.command("ping")
        return True
    finally:
        client.close()


class MongoServer:
    """The real-server lane's server: `MONGODB_TEST_URL` when set, else our FerretDB binary
    on a loopback port with its data in a temporary directory."""

    def __init__(self, external_url: str | None = None):
        self.external_url = external_url
        self.port = free_port()
        self.datadir = Path(tempfile.mkdtemp(prefix="bench-ferretdb-"))
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.datadir / "ferretdb.log"

    def url(self, database: str) -> str:
        if self.external_url:
            head, _, query = self.external_url.rstrip("/").partition("?")
            scheme, _, rest = head.partition("://")
            host = rest.split("/", 1)[0]
            return f"{scheme}://{host}/{database}" + (f"?{query}" if query else "")
        return f"mongodb://127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        if self.external_url:
            if not _ping(self.external_url, 3000):
                raise BenchError(f"MONGODB_TEST_URL={self.external_url} does not answer a ping")
            return
        if not FERRETDB_BIN.exists():
            raise BenchError(f"{FERRETDB_BIN} is not built; run `bash devtools/ferretdb/build.sh` (needs Go >= 1.22), "
                             "or set MONGODB_TEST_URL to a MongoDB server")
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [str(FERRETDB_BIN), "-listen", f"127.0.0.1:{self.port}", "-dir", str(self.datadir / "data"),
             "-log-level", "error"],
            stdout=log, stderr=log, start_new_session=True,
        )
        log.close()
        try:
            wait_until(lambda: _ping(self.url("admin")), 20, "FerretDB to answer")
        except BenchError as exc:
            self.close()
            raise BenchError(f"FerretDB did not start: {exc}; log: {self.log_path.read_text()[-2000:]}") from None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def close(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
        shutil.rmtree(self.datadir, ignore_errors=True)


def process_env(**overrides: str) -> dict[str, str]:
    """This process's environment with the repository importable, plus `overrides`."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(overrides)
    return env


class Child:
    """One of our processes in its own process group (so a Celery worker's pool children are
    signalled with it), output kept in `log_path`."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path):
        self.name = name
        self.log_path = log_dir / f"{name}-{os.getpid()}-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(argv, env=env, cwd=str(ROOT), stdout=self._log, stderr=subprocess.STDOUT,
                                        start_new_session=True)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self, tail: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-tail:]

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM to the group, SIGKILL after `timeout` seconds."""
        if self.alive():
            self._signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.process.wait()
        else:
            self._signal(signal.SIGKILL)  # reap pool children the leader left behind
        self._log.close()

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def children_of(pid: int) -> list[int]:
    """Direct children of `pid` (gunicorn's workers), from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: fields follow the last ')'.
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            found.append(int(entry))
    return sorted(found)


def memory_kib(pid: int | str = "self") -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process in KiB, from /proc/<pid>/status; {} if it is gone."""
    values: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name in ("VmRSS", "VmHWM"):
                    values[name] = int(rest.split()[0])
    except OSError:
        return {}
    return values
