"""`manage-runs demo`: the whole system on one machine, one hypothesis, end to end.

With no services configured it runs on the embedded database (mongomock://), the ingest app on
a loopback port in a thread, a Celery worker on kombu's MongoDB transport in a thread, the
dispatcher and sweeper in a thread, and a local artifact folder. Whatever is configured in the
environment (MONGODB_URL, INGEST_URL, MINIO_*) is used instead of its embedded stand-in.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from celery.contrib.testing.worker import start_worker
from rich.console import Console
from rich.table import Table
from rich.text import Text
from werkzeug.serving import WSGIRequestHandler, make_server

from ingest_app import create_app
from ops.live import SETTLED, follow, number, result_rows, run_results
from ops.terminal import shown
from orchestrator import queries
from orchestrator.credentials import new_token
from orchestrator.db import get_db
from orchestrator.dispatcher import Dispatcher
from orchestrator.errors import TransitionError
from orchestrator.preflight import warn_unreachable
from orchestrator.runs import cancel_run, create_hypothesis_and_run
from orchestrator.settings import DEFAULT_PIPELINE, Settings, read_log_format
from orchestrator.sweeper import Sweeper
from tasks.celery import app
from tasks.pod.runtime import shutdown_runtime
from tasks.sender import celery_sender
from telemetry import logs

log = logging.getLogger(__name__)

DEFAULT_TITLE = "Standardised inputs make a linear classifier learn faster and generalise better"
DEFAULT_IDEA = (
    "Our sensors report features on wildly different scales. We hypothesise that standardising "
    "each input feature (zero mean, unit variance) before training improves the validation "
    "accuracy of a logistic-regression classifier trained with gradient descent, compared with "
    "the same model trained on raw features."
)


def _quiet_logging() -> None:
    """Warnings and errors only, on stderr: the demo's story is its live view and summary, not the
    ingest app's settings or an access-log line per event batch (the processes of a real
    deployment still log at INFO)."""
    handler = logs.stderr_handler(read_log_format(), process="cli", text_format="%(levelname)s %(name)s: %(message)s")
    handler.setLevel(logging.WARNING)
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(handler)
    for name in ("ingest_app", "werkzeug", "orchestrator", "tasks", "pipeline", "celery"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _embedded_defaults(output: Path) -> None:
    """Fill in the environment for whatever the user did not configure."""
    if not os.environ.get("MONGODB_URL") and not os.environ.get("SPOOL_DIR"):
        # Events a killed demo left in its spool belong to an embedded database that died with
        # it: replayed, ingest would refuse every one of them for a run it never heard of.
        shutil.rmtree(output / "spool", ignore_errors=True)
    os.environ.setdefault("MONGODB_URL", "mongomock://localhost/ai_scientist_demo")
    os.environ.setdefault("SPOOL_DIR", str(output / "spool"))
    os.environ.setdefault("WORK_DIR", str(output / "work"))
    os.environ.setdefault("ARTIFACT_DIR", str(output / "artifacts"))
    os.environ.setdefault("HEARTBEAT_INTERVAL_S", "1")
    os.environ.setdefault("LEASE_S", "30")
    os.environ.setdefault("POD_ID", "demo-pod")


@contextmanager
def _ingest_server(settings: Settings, port: int = 0) -> Iterator[str]:
    """The ingest app (and with it the web console) on a loopback port in this process (`port`,
    or a free one when it is 0 or taken); yields its base URL."""
    app = create_app(settings)
    try:
        server = make_server("127.0.0.1", port, app, threaded=True, request_handler=_QuietHandler)
    except OSError:
        server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="demo-ingest", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(5)


class _QuietHandler(WSGIRequestHandler):
    """No access-log line per request (werkzeug writes them past logging's levels)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


def demo_queue() -> str:
    """A queue of the demo's own, so its worker takes its run and nobody else's, and nobody
    else's worker takes its run, even on a shared database."""
    return f"demo-{uuid.uuid4().hex[:12]}"


@contextmanager
def _worker(queue: str) -> Iterator[None]:
    """A Celery worker consuming `queue` in a thread of this process (solo pool)."""
    with start_worker(app, pool="solo", concurrency=1, queues=[queue], perform_ping_check=False,
                      loglevel="WARNING", shutdown_timeout=30):
        try:
            yield
        finally:
            shutdown_runtime()


@contextmanager
def _dispatcher(db: Any, settings: Settings, queue: str, sweep: bool) -> Iterator[None]:
    """The dispatcher of the demo's queue only; with `sweep`, the sweeper too (on the embedded
    database only: on a shared one, sweeping is the deployment's own dispatcher's job, with its
    settings, not the demo's short lease)."""
    sweeper = Sweeper(db, settings, celery_sender)
    dispatcher = Dispatcher(db, celery_sender, interval_s=0.1, use_change_stream=False,
                            sweep=sweeper if sweep else None, on_database_error=sweeper.disconnected,
                            connected_for=sweeper.connected_for, queue=queue)
    thread = threading.Thread(target=dispatcher.run_forever, name="demo-dispatcher", daemon=True)
    thread.start()
    try:
        yield
    finally:
        dispatcher.stop()
        thread.join(5)


def summary(run: dict[str, Any], settings: Settings) -> Table:
    """What the demo prints at the end: what it tested, status, verdict, the results (per arm mean ±
    standard error and n, the test statistic), the reviewer's scores, each metric's last logged
    value and where the files are. Results, scores and metrics are separate sections, so a t
    statistic never reads as a score nor a last logged value as the result."""
    table = Table(title="demo run summary", show_header=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    validation = run.get("autoValidation") or run.get("validation") or {}
    table.add_row("run", shown(run["_id"]))
    if run.get("ideaMapping"):
        table.add_row("experiment", shown(run["ideaMapping"], "yellow"))
    table.add_row("status", shown(run["status"]))
    table.add_row("verdict", shown(validation.get("verdict", "-")))
    results = run_results(run)
    if results:
        table.add_row("results", shown(f"{results.get('metric')}, mean ± standard error over n replicates"))
        for label, value in result_rows(run):
            table.add_row(shown(f"  {label}"), shown(value))
    if validation.get("scores"):
        table.add_row("scores", shown(f"the reviewer's marks ({validation.get('model') or 'auto-validation'})"))
    for name, score in sorted((validation.get("scores") or {}).items()):
        table.add_row(shown(f"  score {name}"), shown(number(score)))
    if run.get("metrics"):
        table.add_row("metrics", "last logged value of each, not the result")
    for name, value in sorted((run.get("metrics") or {}).items()):
        table.add_row(shown(f"  metric {name}"), shown(number(value)))
    for artifact in run.get("artifacts") or []:
        where = (Path(settings.artifact_dir) / artifact["key"]) if not settings.minio_endpoint else f"s3://{artifact.get('bucket')}/{artifact['key']}"
        table.add_row(shown(f"  {artifact.get('kind')}"), shown(where))
    return table


class DemoOutcome(NamedTuple):
    run: dict[str, Any]
    settings: Settings
    #: The run had not settled when the demo's timeout passed (it was then canceled).
    timed_out: bool


def run_demo(*, title: str | None, idea: str | None, seed: int, timeout: float, output: str, as_json: bool,
             console: Console, pipeline: str = DEFAULT_PIPELINE,
             serve: Callable[[Settings, str, str | None], None] | None = None,
             port: int = 0) -> DemoOutcome:
    """Start what is not configured, queue one hypothesis, follow it until it settles or
    `timeout` passes; return the final run detail and the settings used. `serve`, when given,
    is called with the settings, the run id and the operator token the demo made for its console
    (None when it made none: a token the user configured is never printed) once the run settled,
    while the ingest app (and its console, on `port`) still serves: `keep_serving` waits there
    for Ctrl-C. A run that has not settled when `timeout` passes is canceled."""
    out = Path(output).resolve()
    out.mkdir(parents=True, exist_ok=True)
    _quiet_logging()
    shared = bool(os.environ.get("MONGODB_URL"))
    _embedded_defaults(out)
    made_token: str | None = None
    queue = demo_queue()
    with ExitStack() as stack:
        if not os.environ.get("INGEST_URL"):
            os.environ.setdefault("INGEST_TOKEN", new_token())
            if not os.environ.get("OPERATOR_TOKEN"):  # printed only with --serve, for its console
                made_token = os.environ["OPERATOR_TOKEN"] = new_token()
            os.environ.setdefault("SECRET_KEY", new_token())  # the console of --serve signs its cookies
            ingest_url = stack.enter_context(_ingest_server(Settings.from_env(), port))
            os.environ["INGEST_URL"] = ingest_url
        settings = Settings.from_env()
        db = get_db(settings)
        where = (f": database {settings.redacted()['mongodb_url']}, ingest {settings.ingest_url}, "
                 f"artifacts {settings.minio_endpoint or settings.artifact_dir}, queue {queue}")
        console.print(Text("demo", "bold") + shown(where), soft_wrap=True)
        warn_unreachable(settings, logger=log)  # a warning on stderr each, naming its variable
        stack.enter_context(_worker(queue))
        stack.enter_context(_dispatcher(db, settings, queue, sweep=not shared))
        _, run_id = create_hypothesis_and_run(db, title or DEFAULT_TITLE, idea or DEFAULT_IDEA, pipeline=pipeline,
                                              queue=queue, max_attempts=settings.max_attempts, seed=seed)
        run = follow(db, run_id, interval=0.25, timeout=timeout, as_json=as_json, console=console)
        timed_out = run["status"] not in SETTLED
        if timed_out:
            run = _cancel_and_wait(db, run_id, settings, f"the demo timed out after {timeout:g} s")
        elif serve is not None:
            serve(settings, run_id, made_token)
    return DemoOutcome(run, settings, timed_out)


def _cancel_and_wait(db: Any, run_id: str, settings: Settings, reason: str) -> dict[str, Any]:
    """Cancel the demo's run and give its worker the cancel grace to stop at a checkpoint, so
    the worker thread can shut down instead of being abandoned mid-step."""
    try:
        cancel_run(db, run_id, by="demo", reason=reason)
    except TransitionError:  # it settled between the last poll and now
        pass
    deadline = time.monotonic() + settings.cancel_grace_s + 5
    run = queries.run_detail(db, run_id)
    while run["status"] not in SETTLED and time.monotonic() < deadline:
        time.sleep(0.25)
        run = queries.run_detail(db, run_id)
    return run


def keep_serving(console: Console) -> Callable[[Settings, str, str | None], None]:
    """What `manage-runs demo --serve` does once the run settled: print where the console is and
    the token to sign in with (the one the demo made; else which variable holds it), then serve
    until Ctrl-C."""
    def serve(settings: Settings, run_id: str, made_token: str | None) -> None:
        lines = [f"console: {settings.ingest_url}/runs/{run_id}"]
        if made_token is not None and settings.ingest_auth != "disabled":
            lines.append(f"sign in with the operator token: {made_token}")
        elif settings.ingest_auth != "disabled":
            lines.append("sign in with your OPERATOR_TOKEN or READER_TOKEN")
        lines.append("serving until Ctrl-C")
        for line in lines:
            console.print(Text("demo", "bold") + " " + shown(line), soft_wrap=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            console.print(Text("demo", "bold") + " stopped")
    return serve
