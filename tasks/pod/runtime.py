"""What a worker process holds across tasks: settings, database, event emitter, artifact store,
the presence thread.

Created lazily in the process that runs tasks (a prefork child), never in the parent before the
fork: a MongoClient and the emitter's thread must not cross a fork. `tasks.hooks` starts and
stops it from Celery's worker signals.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from pymongo.database import Database

import pipeline
from orchestrator.db import ensure_indexes, get_db
from orchestrator.settings import Settings
from orchestrator.storage import Storage, storage_from_settings
from tasks.pod.emitter import Emitter
from tasks.pod.presence import Presence

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    db: Database
    emitter: Emitter
    storage: Storage
    #: Optional pod facts for `ai.run.started`, from the pod's environment.
    region: str | None = None
    image: str | None = None
    #: The attempt running now (an `Attempt`), so the except hooks can report into its run.
    current: Any = None
    #: What a fenced attempt's deadline does when its step did not stop (default: end this
    #: process, `tasks.pod.fence.end_this_process`); tests running in-process replace it.
    on_fence_deadline: Callable[[], None] | None = None
    #: This process's presence thread (`tasks.pod.presence`), started by `runtime()`.
    presence: Presence | None = None

    def set_current(self, attempt: Any) -> None:
        """The attempt running now (None: none); the presence record says so at once."""
        self.current = attempt
        if self.presence is not None:
            self.presence.poke()

    def on_run(self) -> tuple[str, int] | None:
        """(run id, attempt) of the attempt running now, for the presence record."""
        attempt = self.current
        return (attempt.run_id, attempt.attempt) if attempt is not None else None

    def start_presence(self) -> Presence:
        self.presence = Presence(self.db, self.settings.pod_id, interval_s=self.settings.presence_interval_s,
                                 current=self.on_run)
        self.presence.start()
        return self.presence

    def close(self) -> None:
        """Presence first: its record goes with one quick delete, before the flush (up to a
        heartbeat interval), so a second stop signal or the parent's exit, either of which ends
        this process at once, rarely leaves the record behind (it would show as gone)."""
        try:
            if self.presence is not None:
                self.presence.stop()
                self.presence = None
        finally:
            self.emitter.close(timeout=self.settings.heartbeat_interval_s)


_runtime: Runtime | None = None
_pid: int | None = None
_lock = threading.Lock()


def runtime(settings: Settings | None = None) -> Runtime:
    """The runtime of this process, created on first use (again after a fork)."""
    global _runtime, _pid
    with _lock:
        if _runtime is None or _pid != os.getpid():
            settings = settings or Settings.from_env()
            db = get_db(settings)
            ensure_indexes(db)
            _runtime = Runtime(
                settings=settings, db=db, emitter=Emitter(settings), storage=storage_from_settings(settings),
                region=os.environ.get("POD_REGION"), image=os.environ.get("POD_IMAGE"),
            )
            _pid = os.getpid()
            pipeline.load_modules(settings.pipeline_modules)
            _install_excepthooks()
            _runtime.start_presence()
        return _runtime


def current_runtime() -> Runtime | None:
    """This process's runtime if it has one, never creating it: a metrics scrape must not
    connect to the database, nor start an emitter in a process that runs no tasks."""
    with _lock:
        return _runtime if _pid == os.getpid() else None


_stop_reason: str | None = None


def request_stop(reason: str) -> None:
    """This process must stop soon (its worker got SIGTERM): the attempt running now, and any
    that would start, hand their run back to the queue. Safe in a signal handler: it only sets
    flags (the heartbeat thread does the rest)."""
    global _stop_reason
    _stop_reason = reason
    attempt = _current_attempt()
    if attempt is not None:
        attempt.preempt(reason)


def stop_reason() -> str | None:
    """Why this process must stop, or None."""
    return _stop_reason


def shutdown_runtime() -> None:
    """Flush events still queued, stop the emitter's thread and the presence thread, whose
    record goes (process exit, tests)."""
    global _runtime
    with _lock:
        if _runtime is not None and _pid == os.getpid():
            _runtime.close()
        _runtime = None


def _current_attempt() -> Any:
    return _runtime.current if _runtime is not None else None


def _install_excepthooks() -> None:
    """Report anything that escapes a thread or the main loop, so no failure is silent.

    An exception that ends the process fails the current run (once: `report_failure` does
    nothing if the run's failure was already reported). One that ends some other thread (a
    data loader, a library's helper) goes into the run's history at level error: the run may
    well go on, so it is not a failure of the run."""
    previous_sys, previous_thread = sys.excepthook, threading.excepthook

    def sys_hook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        log.critical("uncaught %s in worker process: %s", kind.__name__, exc, exc_info=(kind, exc, tb))
        attempt = _current_attempt()
        if attempt is not None and isinstance(exc, Exception):
            attempt.report_failure(exc, None)
        previous_sys(kind, exc, tb)

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        name = args.thread.name if args.thread else "?"
        log.critical("uncaught %s in thread %s: %s", args.exc_type.__name__, name, args.exc_value,
                     exc_info=args.exc_value)
        attempt = _current_attempt()
        if attempt is not None and args.exc_value is not None:
            attempt.emit("ai.run.log", level="error",
                         message=f"uncaught {args.exc_type.__name__} in thread {name}: {args.exc_value}")
        previous_thread(args)

    sys.excepthook = sys_hook
    threading.excepthook = thread_hook
