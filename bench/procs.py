"""The processes a benchmark drives, from `devtools.procs` (the same helpers the real-server
tests use), with failures as `BenchError` instead of pytest's skip or fail; plus /proc readers.
"""

from __future__ import annotations

from collections.abc import Callable

from devtools.procs import PYTHON, ROOT, Child, ServerUnavailable, free_port, process_env  # noqa: F401
from devtools.procs import wait_until as _wait_until
from devtools.wire_server import MongoServer as _MongoServer
from tasks.pod.processes import children_of  # noqa: F401 - the harness imports it from here


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
