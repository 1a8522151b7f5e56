"""The heartbeat thread of a running attempt: renews the lease, reports GPU telemetry, watches
for a cancel, and interrupts the pipeline when it does not stop in time.

It never raises into the run: a failing beat is logged and retried at the next interval. A
lease that is provably gone (the sweeper ended it) stops the run; so does one this worker could
not renew for most of `LEASE_S` (its `Fence`), before anyone else may take the run over.
"""

from __future__ import annotations

import contextvars
import ctypes
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from pymongo.database import Database
from pymongo.errors import PyMongoError

from orchestrator import claims, tracing
from orchestrator.errors import OrchestratorError
from pipeline.context import Canceled, Preempted, StepTimeout
from tasks.pod.fence import Fence
from tasks.pod.gpu import gpu_stats
from tasks.pod.metrics import DATABASE_ERROR, LEASE_GONE, lease_renew_failed
from tasks.pod.processes import end_this_process

log = logging.getLogger(__name__)


class LeaseLost(OrchestratorError):
    """The sweeper gave this attempt up; this worker must stop and write nothing more."""


def interrupt(thread_id: int, exc_type: type[BaseException]) -> bool:
    """Raise `exc_type` inside another thread at its next Python bytecode.

    Why: a step stuck in a loop without checkpoints must still stop after the grace period.
    A long call into C (a CUDA kernel, a blocking read) is interrupted only when it returns."""
    changed = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc_type))
    return changed == 1


class Heartbeat(threading.Thread):
    def __init__(
        self,
        db: Database,
        run_id: str,
        attempt: int,
        pod_id: str,
        *,
        interval_s: float,
        lease_s: float,
        grace_s: float,
        emit: Callable[..., None],
        target_thread: int,
        on_fence_deadline: Callable[[], None] = end_this_process,
        leased_at: float | None = None,
        on_stuck: Callable[[str], None] | None = None,
    ):
        super().__init__(name=f"heartbeat-{run_id}", daemon=True)
        self.db = db
        self.run_id = run_id
        self.attempt = attempt
        self.pod_id = pod_id
        self.interval_s = interval_s
        self.lease_s = lease_s
        self.grace_s = grace_s
        self.emit = emit
        self.target_thread = target_thread
        self.cancel_requested = threading.Event()
        self.lease_lost = threading.Event()
        self.cancel_info: dict[str, Any] = {}
        #: Set once the pod was told to stop (SIGTERM): the run goes back to the queue.
        self.preempted = threading.Event()
        self.preempt_reason = ""
        #: Set once the current step (or the attempt) ran past its wall-clock limit.
        self.timed_out = threading.Event()
        self.timeout_info = ""
        #: Called (with `timeout_info`) when a timed-out step ignored its interrupt for a grace
        #: period too: it is stuck in a call no exception reaches.
        self.on_stuck = on_stuck
        self._limit: tuple[float, str] | None = None
        self._stuck_at: float | None = None
        self._steps_over = False
        self._halt = threading.Event()
        self._stop_deadline: float | None = None
        self._interrupted = False
        self.fence = Fence(lease_s, grace_s, on_soft=self._fenced, on_hard=on_fence_deadline, leased_at=leased_at)
        self._context = contextvars.copy_context()

    def start(self) -> None:
        # A new thread starts in an empty context: this one beats in the attempt's, so its log
        # lines name the run and its trace as the attempt's own do.
        self._context = contextvars.copy_context()
        super().start()
        self.fence.start()

    def _fenced(self) -> None:
        """Most of the lease went by without a renewal: stop now, report nothing more."""
        self.lease_lost.set()
        if not self._interrupted and interrupt(self.target_thread, LeaseLost):
            self._interrupted = True

    def stop(self) -> None:
        self.fence.stop()
        self._halt.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(self.interval_s + 5)
        if self._interrupted:
            # An interrupt sent just as the step returned would otherwise surface later, in
            # the run's clean-up or in the next task of this process.
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.target_thread), None)

    def limit(self, at: float | None, what: str = "") -> None:
        """The monotonic time by which `what` (the current step, or the attempt) must end; None
        lifts the limit."""
        self._limit = None if at is None else (at, what)

    def preempt(self, reason: str) -> None:
        """The pod must stop: stop the step as a cancel would; a step that ignores its
        interrupt too is stuck (`on_stuck`)."""
        if self.preempted.is_set() or self._steps_over:
            return
        self.preempt_reason = reason
        self._begin_stop(self.preempted, watch_stuck=True)

    def steps_over(self) -> None:
        """The attempt left its steps: no limit, no interrupt from here on (its clean-up runs
        in the same thread and must not be cut short)."""
        self._steps_over = True
        self._limit = None
        self._stuck_at = None

    def check(self) -> None:
        """The pipeline's checkpoint: raise if the run must stop."""
        reason = self._why_stop()
        if reason is not None:
            raise reason

    def _why_stop(self) -> BaseException | None:
        """Why the step must stop, most pressing first: what the checkpoint raises, and what
        an overdue step is interrupted with."""
        if self.lease_lost.is_set():
            return LeaseLost(f"lease on {self.run_id}:{self.attempt} was taken over")
        if self.preempted.is_set():
            return Preempted(self.preempt_reason)
        if self.timed_out.is_set():
            return StepTimeout(self.timeout_info)
        if self.cancel_requested.is_set():
            return Canceled(self.cancel_info.get("reason") or "cancel requested")
        return None

    def run(self) -> None:
        self._context.run(self._beat_until_halted)

    def _beat_until_halted(self) -> None:
        while not self._halt.wait(self._next_wait()):
            self._watch_limit()
            if self._stop_deadline is not None and time.monotonic() >= self._stop_deadline:
                self._interrupt_if_overdue()
                continue
            try:
                with tracing.untraced():  # every few seconds for the whole run: no span each time
                    self.beat()
            except PyMongoError as exc:
                log.warning("heartbeat of %s could not reach MongoDB: %s", self.run_id, exc)
            except Exception:  # noqa: BLE001 - a heartbeat bug must not kill the run
                log.exception("unexpected failure in heartbeat of %s", self.run_id)
            self._interrupt_if_overdue()

    def _next_wait(self) -> float:
        """The beat interval, shortened so a limit or an overdue stop is enforced on time."""
        moments = [self._stuck_at, self._limit[0] if self._limit else None,
                   None if self._interrupted else self._stop_deadline]
        due = [m for m in moments if m is not None]
        if not due:
            return self.interval_s
        return max(min(self.interval_s, min(due) - time.monotonic()), 0.01)

    def _watch_limit(self) -> None:
        """Past the limit: stop the step as a cancel would (checkpoint, then interrupt after the
        grace period); a step still running a grace period after that is stuck."""
        now = time.monotonic()
        if self._limit is not None and now >= self._limit[0] and not self.timed_out.is_set():
            self.timeout_info = f"{self._limit[1]} ran past its wall-clock limit"
            log.error("run %s attempt %s: %s; stopping it", self.run_id, self.attempt, self.timeout_info)
            self._begin_stop(self.timed_out, watch_stuck=True)
        if self._stuck_at is not None and now >= self._stuck_at and not self._steps_over:
            self._stuck_at = None
            what = self.preempt_reason if self.preempted.is_set() else self.timeout_info
            log.critical("run %s attempt %s: %s, and the step did not stop when interrupted", self.run_id, self.attempt,
                         what)
            if self.on_stuck is not None:
                self.on_stuck(what)

    def beat(self) -> None:
        sent_at = time.monotonic()
        try:
            renewed = claims.renew_lease(self.db, self.run_id, self.attempt, self.pod_id, self.lease_s)
        except PyMongoError:
            lease_renew_failed(DATABASE_ERROR)
            raise
        if renewed:
            self.fence.renewed(sent_at)
        else:
            lease_renew_failed(LEASE_GONE)
            if not self.lease_lost.is_set():
                log.error("lease on %s attempt %s is gone (swept); stopping", self.run_id, self.attempt)
                self._begin_stop(self.lease_lost)
            return
        if self.lease_lost.is_set():
            return  # fenced: report nothing more
        self.emit("ai.run.heartbeat", **gpu_stats())
        if self.cancel_requested.is_set():
            return
        request = claims.cancel_requested(self.db, self.run_id, self.attempt)
        if request is not None:
            self.cancel_info = {"by": request.get("by"), "reason": request.get("reason")}
            log.warning("cancel requested for %s by %s; stopping at the next checkpoint", self.run_id, request.get("by"))
            self._begin_stop(self.cancel_requested)

    def _begin_stop(self, flag: threading.Event, watch_stuck: bool = False) -> None:
        """Raise at the next checkpoint, interrupt after the grace period; with `watch_stuck`
        (a timeout, a stopping pod), a step still running a grace period after that is stuck."""
        flag.set()
        now = time.monotonic()
        self._stop_deadline = now + self.grace_s
        if watch_stuck:
            self._stuck_at = now + 2 * self.grace_s

    def _interrupt_if_overdue(self) -> None:
        if self._stop_deadline is None or self._interrupted or self._steps_over or time.monotonic() < self._stop_deadline:
            return
        exc_type = type(self._why_stop() or Canceled())
        log.warning("%s did not reach a checkpoint within %.1fs; interrupting it", self.run_id, self.grace_s)
        if not interrupt(self.target_thread, exc_type):
            log.error("could not interrupt the pipeline thread of %s; it stops when its step returns", self.run_id)
        self._interrupted = True
