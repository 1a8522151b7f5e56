"""The processes a benchmark drives, from `devtools.procs` (the same helpers the real-server
tests use), with failures as `BenchError` instead of pytest's skip or fail; plus /proc readers.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from devtools.procs import PYTHON, ROOT, Child, ServerUnavailable, free_port, process_env  # noqa: F401
from devtools.procs import wait_until as _wait_until
from devtools.wire_server import MongoServer as _MongoServer
from tasks.pod.processes import children_of, descendants  # noqa: F401 - the harness imports children_of from here


class BenchError(RuntimeError):
    """The harness cannot run: a server or process did not start. The message says which and why."""


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05) -> object:
    """`devtools.procs.wait_until`, failing with a BenchError the command line reports."""
    try:
        return _wait_until(predicate, timeout, what, interval)
    except TimeoutError as exc:
        raise BenchError(str(exc)) from None


class MongoServer(_MongoServer):
    """The real-server lane's server; one that cannot start is a BenchError."""

    def __init__(self, external_url: str | None = None):
        super().__init__(external_url, prefix="bench-ferretdb-", durable=True)

    def start(self) -> None:
        try:
            super().start()
        except ServerUnavailable as exc:
            raise BenchError(str(exc)) from None


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


def cpu_ticks(stat: str) -> int:
    """Clock ticks a process and its reaped children spent on CPU (utime + stime + cutime +
    cstime), from the text of /proc/<pid>/stat. The fields are counted after the command name's
    closing parenthesis, since the name itself may hold spaces or parentheses."""
    fields = stat[stat.rindex(")") + 2:].split()
    return sum(int(value) for value in fields[11:15])  # fields 14-17 of proc(5), from field 3 on


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of `pid` and every process below it, reaped ones included (each counted once:
    a reaped child's time is in its parent's cutime, a live one's only in its own stat)."""
    ticks = 0
    for member in [pid, *descendants(pid)]:
        try:
            ticks += cpu_ticks(Path(f"/proc/{member}/stat").read_text())
        except (OSError, ValueError):
            continue  # it ended between the listing and the read
    return ticks / os.sysconf("SC_CLK_TCK")


def server_cpu_s(server: MongoServer) -> float | None:
    """CPU seconds the wire server has used so far: FerretDB and, on the PostgreSQL backend, every
    PostgreSQL process (the postmaster's pid is the first line of its postmaster.pid). None for a
    server at MONGODB_TEST_URL, whose processes are not ours to read."""
    if not server.is_ferretdb or server.pid is None:
        return None
    total = tree_cpu_s(server.pid)
    if server.postgres is not None:
        try:
            postmaster = int((server.postgres.datadir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        total += tree_cpu_s(postmaster)
    return total
