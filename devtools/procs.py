"""Process helpers for the real-server tests and the benchmarks: free ports, polling, the
environment of a child, and `Child`, one of our processes (gunicorn, Celery workers,
dispatchers) with its output in a log file. The servers are in `devtools.wire_server`.

Plain Python on purpose: `tests/servers.py` turns a server that cannot start into a pytest
skip or failure, `bench/procs.py` into a `BenchError`; both build on this one copy.
"""

from __future__ import annotations

import os
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
PYTHON = sys.executable


class ServerUnavailable(RuntimeError):
    """The server cannot be had; the message says why and how to fix it."""


#: Fields of /proc/PID/stat after the command name: the process group and the session.
_STAT_FIELD = {"group": 2, "session": 3}


def alive_in(ids: set[int], *, by: str) -> list[str]:
    """Live processes (zombies skipped: killed, only waiting for whoever adopted them to reap
    them) whose process `group` or `session` is one of `ids`, as "pid: stat" lines, from /proc."""
    alive = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[_STAT_FIELD[by]]) in ids:
            alive.append(f"{entry}: {stat[:80]}")
    return alive


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


class Child:
    """One of our processes in its own process group (so a Celery worker's pool children are
    signalled with it), its output kept in `log_path` (in `log_dir`, else the temp directory);
    with `stderr_apart`, its stderr in `stderr_path` instead (`errors()`), for a test of what
    the process logs there."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path | None = None,
                 cwd: Path | None = None, stderr_apart: bool = False):
        self.name = name
        fd, path = tempfile.mkstemp(prefix=f"{name}-", suffix=".log", dir=log_dir)
        os.close(fd)
        self.log_path = Path(path)
        self._log = open(self.log_path, "ab")
        self.stderr_path = self.log_path.with_suffix(".stderr") if stderr_apart else None
        self._errors = open(self.stderr_path, "ab") if self.stderr_path is not None else None
        self.process = subprocess.Popen(argv, env=env, cwd=str(cwd or ROOT), stdout=self._log,
                                        stderr=self._errors or subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self, tail: int | None = None) -> str:
        text = self.log_path.read_text(errors="replace") + self.errors()
        return text[-tail:] if tail else text

    def errors(self) -> str:
        """What the process wrote to stderr, when kept apart ("" otherwise: see `output`)."""
        return self.stderr_path.read_text(errors="replace") if self.stderr_path is not None else ""

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
        if self._errors is not None:
            self._errors.close()
