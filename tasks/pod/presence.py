"""The presence thread of a worker process: every `PRESENCE_INTERVAL_S`, and at once when an
attempt starts or ends (`poke`), it writes this process's record (`orchestrator.pods.beat`):
last seen, the run it is on, GPU telemetry. At a clean exit it deletes it (`pods.leave`).

Owned by the pod runtime (`tasks.pod.runtime`): started with it in the process that runs tasks,
stopped at `shutdown_runtime`. It never raises into the worker: a failing beat is logged and
retried at the next interval.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

from pymongo.database import Database
from pymongo.errors import PyMongoError

from orchestrator import pods
from orchestrator.utc import utcnow
from tasks.pod.gpu import gpu_stats

log = logging.getLogger(__name__)

#: The queues this worker consumes, when its entry point knows them (`tasks.hooks` sets it in
#: the worker's main process; pool children inherit it through the fork).
_queues: tuple[str, ...] = ()


def announce_queues(queues: tuple[str, ...] | list[str]) -> None:
    global _queues
    _queues = tuple(sorted(queues))


def slot() -> str:
    """This process's slot on its pod: host and pid (read at each call: a fork is a new slot)."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Presence(threading.Thread):
    def __init__(self, db: Database, pod_id: str, *, interval_s: float,
                 current: Callable[[], tuple[str, int] | None],
                 gpu: Callable[[], dict[str, Any]] = gpu_stats):
        super().__init__(name=f"presence-{pod_id}", daemon=True)
        self.db = db
        self.pod_id = pod_id
        self.interval_s = interval_s
        self.current = current
        self.gpu = gpu
        self.slot = slot()
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.started_at = utcnow()
        self.queues = _queues
        self._wake = threading.Event()
        self._halt = threading.Event()
        self._failures = 0

    def poke(self) -> None:
        """Beat now: the attempt this process runs has changed."""
        self._wake.set()

    def run(self) -> None:
        while not self._halt.is_set():
            self._wake.clear()
            self.beat()
            self._wake.wait(self.interval_s)

    def beat(self) -> bool:
        """One presence write; False (logged, never raised) when it failed."""
        try:
            on = self.current()
            pods.beat(self.db, self.pod_id, self.slot, run_id=on[0] if on else None, attempt=on[1] if on else None,
                      gpu=self.gpu(), interval_s=self.interval_s, host=self.host, pid=self.pid,
                      started_at=self.started_at, queues=self.queues)
        except PyMongoError as exc:
            self._failures += 1
            if self._failures == 1 or self._failures % 30 == 0:
                log.warning("presence of %s could not be written (%s, %d in a row); retried every %.1f s",
                            self.slot, exc, self._failures, self.interval_s)
            return False
        except Exception:  # noqa: BLE001 - presence must never take the worker down
            log.exception("unexpected failure writing the presence of %s", self.slot)
            return False
        if self._failures:
            log.info("presence of %s written again after %d failures", self.slot, self._failures)
            self._failures = 0
        return True

    def stop(self, timeout: float = 5.0) -> None:
        """Stop beating and delete this process's record (a clean exit); a database error is
        logged: the record then shows as gone and the sweeper prunes it."""
        self._halt.set()
        self._wake.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)
        try:
            pods.leave(self.db, self.pod_id, self.slot)
        except PyMongoError as exc:
            log.warning("presence of %s not removed at exit (%s); it shows as gone until pruned", self.slot, exc)
