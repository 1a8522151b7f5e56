"""The worker's side of lease fencing: an attempt that cannot renew its lease stops before the
lease can end, so the sweeper's next attempt never runs beside it.

Its own thread, because the heartbeat thread may be blocked in a call to an unreachable
database exactly when the deadline passes. Two steps, on this process's monotonic clock:
- soft (`SOFT_LEAD` before the deadline, at most a quarter of the lease): the attempt is
  fenced; its checkpoint raises, the pipeline thread gets an asynchronous `LeaseLost`, and it
  reports nothing further;
- hard (the deadline, `claims.fence_deadline`): the attempt did not stop (a step in a C call, an
  LLM request that never returns), so this process ends, and every process it started with it.
  In a Celery prefork pool that is the pool child; the master starts a new one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from orchestrator.claims import fence_deadline
from tasks.pod.processes import end_this_process

log = logging.getLogger(__name__)

class Fence(threading.Thread):
    """Watches one attempt's lease deadline; `renewed` moves it on after each renewal."""

    def __init__(self, lease_s: float, grace_s: float, *, on_soft: Callable[[], None],
                 on_hard: Callable[[], None] = end_this_process, leased_at: float | None = None,
                 clock: Callable[[], float] = time.monotonic):
        super().__init__(name="lease-fence", daemon=True)
        self.lease_s = lease_s
        self.soft_lead_s = min(grace_s, lease_s / 4)
        self.on_soft = on_soft
        self.on_hard = on_hard
        self.clock = clock
        self.fenced = threading.Event()
        # `leased_at`: when the claim's insert was sent (its lease counts from then).
        self._deadline = fence_deadline(clock() if leased_at is None else leased_at, lease_s)
        self._lock = threading.Lock()
        self._halt = threading.Event()

    @property
    def deadline(self) -> float:
        with self._lock:
            return self._deadline

    def renewed(self, sent_at: float) -> None:
        """A renewal sent at `sent_at` (this clock) succeeded."""
        with self._lock:
            self._deadline = max(self._deadline, fence_deadline(sent_at, self.lease_s))

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        while not self._halt.is_set():
            deadline = self.deadline
            now = self.clock()
            if not self.fenced.is_set() and now >= deadline - self.soft_lead_s:
                self.fenced.set()
                log.error("lease not renewed for %.1fs: stopping this attempt before its lease can end",
                          now - (deadline - self.lease_s))
                self.on_soft()
                continue
            if self.fenced.is_set() and now >= deadline:
                log.critical("the fenced attempt did not stop by its deadline: ending this process")
                self.on_hard()
                return
            target = deadline if self.fenced.is_set() else deadline - self.soft_lead_s
            self._halt.wait(max(0.01, min(target - now, 1.0)))
