"""Celery's worker signals -> the pod runtime: prepare the database before the broker connects,
start the runtime (and with it the presence record) with each process that runs tasks, flush
and stop it at exit. Once the worker is ready, say in its log whether ingest and the artifact
store answer (`orchestrator.preflight`). The handlers Celery sets up write JSON lines with
LOG_FORMAT=json, else Celery's lines with a run's id at the end (`telemetry.logs`).

Listed in the app's `include`, so Celery imports it in a worker before `worker_init` fires.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from typing import Any

from celery import signals
from celery.utils.log import ColorFormatter, get_multiprocessing_logger
from pymongo.errors import PyMongoError

from orchestrator.db import prepare_database
from orchestrator.preflight import warn_unreachable
from orchestrator.settings import Settings, read_log_format
from tasks.pod.metrics import serve_worker_metrics
from tasks.pod.presence import announce_queues
from tasks.pod.processes import children_of
from tasks.pod.runtime import request_stop, runtime, shutdown_runtime
from telemetry import logs, traces

log = logging.getLogger(__name__)


#: Set by the main process when its warm shutdown begins. Made at `worker_init`, before the pool
#: forks, so every pool child shares it (`listen_for_stop` reads it).
_shutting_down: Any = None


@signals.celeryd_init.connect
def _on_worker_program_start(**_: Any) -> None:
    """`celery worker` starts, before Celery sets its logging up: with LOG_FORMAT=json what it
    says until then (its warning about running as root, a Python warning) is a JSON line too.
    Celery replaces this handler with its own (`worker_hijack_root_logger`)."""
    if read_log_format() == "json":
        logging.captureWarnings(True)
        logs.configure_logging("json", process="worker", level=logging.WARNING)


@signals.after_setup_logger.connect
def _on_logging_set_up(logger: Any = None, **_: Any) -> None:
    """Celery configures the worker's logging itself (`--loglevel`, its handlers on stderr, the
    stdout it redirects into the log); its handlers, of the root logger and of billiard's pool
    logger, keep their levels and streams, and format as LOG_FORMAT says."""
    for configured in (logger, get_multiprocessing_logger()):
        if configured is not None:
            _format_as_asked(configured)


@signals.after_setup_task_logger.connect
def _on_task_logging_set_up(logger: Any = None, **_: Any) -> None:
    """The same for the task logger (`celery.task`), which has handlers of its own."""
    if logger is not None:
        _format_as_asked(logger)


def _format_as_asked(logger: logging.Logger) -> None:
    """json: JSON lines. text: Celery's own lines, a run's ending in ` run=<id>/<attempt>`; only
    Celery's handlers, so a host's own (pytest's, around an in-process worker) are left alone."""
    if read_log_format() == "json":
        logs.use_json(logger, process="worker")
        return
    for handler in logger.handlers:
        if isinstance(handler.formatter, ColorFormatter):
            logs.use_run_suffix(handler)


@signals.worker_init.connect
def _on_worker_init(sender: Any = None, **_: Any) -> None:
    """Indexes and kombu's broadcast collection exist before the broker connects. The queues
    this worker consumes (`-Q`) go into each pool child's presence record."""
    global _shutting_down
    _shutting_down = multiprocessing.Event()
    prepare_database(Settings.from_env())
    try:
        announce_queues(list(sender.app.amqp.queues.consume_from))
    except Exception:  # noqa: BLE001 - the queues are a courtesy of the presence record
        log.info("the worker's queues are not known; presence records list none")


@signals.worker_process_init.connect
def _on_child_start(**_: Any) -> None:
    """Start the emitter as soon as a pool child exists, not at its first task: a backlog an
    earlier child left in the spool (ingest was down when it exited) is sent right away. With
    the database down this is left to the first task, which needs it anyway.

    `STOP_SIGNAL` is ignored until a task starts (`listen_for_stop`): billiard would otherwise
    make it a terminate signal of the child, so a warm shutdown killed every idle child (exit
    code 70), the pool forked a fresh one, and an idle worker took 6 s to stop, past honcho's
    5 s before SIGKILL."""
    signal.signal(STOP_SIGNAL, signal.SIG_IGN)
    traces.configure("worker")  # after the fork, as the SDK's processor thread must be
    serve_worker_metrics()  # WORKER_METRICS_PORT: served where the tasks run (tasks.pod.metrics)
    try:
        runtime()
    except PyMongoError as exc:
        log.warning("pod runtime not started with this pool child (%s); the first task starts it", exc)


#: What a worker's main process sends each pool child at a warm shutdown (SIGTERM): the child's
#: run is handed back to the queue instead of being waited for (billiard leaves it unhandled).
STOP_SIGNAL = signal.SIGUSR2


@signals.worker_shutting_down.connect
def _on_shutting_down(sig: Any = None, how: Any = None, **_: Any) -> None:
    """A pod told to stop (Kubernetes sends SIGTERM to the worker's main process; a spot
    preemption does too) does not wait for its run, which may take hours: each pool child
    hands its run back at the next checkpoint and the worker exits in bounded time. The main
    process marks itself stopping too, so a pool child forked from now on (the consumer may
    still hand it one more message) inherits the mark and gives that message back."""
    request_stop(f"the worker is shutting down ({sig or 'SIGTERM'})")
    if _shutting_down is not None:
        _shutting_down.set()
    for pid in children_of(os.getpid()):
        try:
            os.kill(pid, STOP_SIGNAL)
        except OSError:
            pass


def _on_stop_signal(signum: int, frame: Any) -> None:
    request_stop(f"the worker is shutting down ({signal.Signals(signum).name} from its main process)")


def listen_for_stop() -> None:
    """Take `STOP_SIGNAL` in this process (a pool child, when its task starts), then check
    whether the worker's warm shutdown began while it was idle and ignoring the signal: a task
    the pool handed it after that is given back like one the signal interrupts."""
    try:
        signal.signal(STOP_SIGNAL, _on_stop_signal)
    except ValueError:
        pass  # not the main thread (a threads pool): tasks there stop with the worker's own SIGTERM
    if _shutting_down is not None and _shutting_down.is_set():
        request_stop("the worker is shutting down (it began before this task started)")


#: How long the start-up check keeps asking before it warns: `honcho start` starts the web
#: process with the worker, and gunicorn may still be booting when the worker is ready.
SERVICES_PATIENCE_S = 20.0


@signals.worker_ready.connect
def _on_worker_ready(sender: Any = None, **_: Any) -> None:
    """Start the runtime and the metrics for pools that run tasks in the main process (solo,
    threads); a prefork parent must not, since the emitter's spool lock belongs to the child that
    runs tasks. Check ingest and the artifact store in a thread: a warning in the log, never a
    delay or a refusal."""
    settings = Settings.from_env()
    threading.Thread(target=warn_unreachable, args=(settings,), kwargs={"logger": log, "patience_s": SERVICES_PATIENCE_S},
                     name="preflight", daemon=True).start()
    pool = getattr(sender, "pool", None)
    if pool is not None and type(pool).__module__.rsplit(".", 1)[-1] in ("solo", "thread"):
        traces.configure("worker")
        serve_worker_metrics(settings)
        runtime()


@signals.worker_process_shutdown.connect
def _on_child_exit(**_: Any) -> None:
    shutdown_runtime()
    traces.flush()  # a pool child ends without the interpreter's exit handlers


@signals.worker_shutdown.connect
def _on_worker_exit(**_: Any) -> None:
    shutdown_runtime()
    traces.flush()
