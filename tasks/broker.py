"""kombu's MongoDB transport, which stops polling as soon as the worker's shutdown begins.

Why: kombu's MongoDB transport is a polling transport, so Celery runs the worker's consumer in
`synloop` (celery/worker/loops.py), not in the event hub. Each turn of that loop calls
`connection.drain_events(timeout=2.0)`, and kombu's virtual transport (`Transport.drain_events`,
kombu/transport/virtual/base.py) polls an empty queue for the whole 2 s, one find-and-delete
per `polling_interval`. The stop flag a SIGTERM sets (`celery.worker.state.should_stop`) is read
only between turns, and the loop runs one more turn after reading it (`try:
state.maybe_shutdown() finally: _loop_cycle()`). So an idle worker kept polling for 2 to 4 s
after "Warm shutdown" before it began to close its pool, and exited 5.7 to 7 s after SIGTERM,
past the 5 s honcho waits before SIGKILL (measured: DEBUG logs, tracebacks of the main process).

Here each poll first checks the flags `maybe_shutdown` checks. Once one is set the poll takes
no message (nothing is fetched, so nothing can be lost between the fetch and the pool) and
raises `socket.timeout` (`TimeoutError`), which is how an empty `drain_events` ends: `synloop`
carries on, raises `WorkerShutdown` at its next check, and its last turn returns at once.
Messages already handed to the pool are not touched; the pool's children still hand their runs
back (`tasks.hooks`). Used for `mongodb://` broker URLs through `broker_transport` in
`celeryconfig.py`, and by the embedded transport (`tasks.embedded_broker`).
"""

from __future__ import annotations

from typing import Any

from celery.worker import state
from kombu.transport import mongodb


def shutdown_requested() -> bool:
    """True once this process's worker was told to stop, warm or cold (the test of
    `celery.worker.state.maybe_shutdown`: the flag holds the exit code, which may be 0)."""
    return any(flag is not None and flag is not False for flag in (state.should_stop, state.should_terminate))


class StopPollingAtShutdown:
    """For a kombu virtual transport: no poll of the broker once the worker is stopping."""

    def _drain_channel(self, channel: Any, callback: Any, timeout: float | None = None) -> Any:
        if shutdown_requested():
            raise TimeoutError("the worker is shutting down: no more messages taken")
        return super()._drain_channel(channel, callback, timeout=timeout)  # type: ignore[misc]


class Transport(StopPollingAtShutdown, mongodb.Transport):
    pass
