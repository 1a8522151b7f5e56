"""`manage-runs`: the operator's command line.

Human output uses rich tables; `--json` on every command prints machine-readable JSON instead.
Exit codes: 0 done, 1 unexpected error, 2 usage error, 3 unknown id, 4 illegal action for the
run's status, 5 database unreachable, 6 the demo run failed, was canceled or timed out.
"""

from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import click
from pymongo.errors import PyMongoError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ops.live import follow, run_view
from ops.terminal import shown
from orchestrator import operations, queries, schema
from orchestrator.credentials import OPERATOR, new_token, parse
from orchestrator.db import ensure_indexes, get_db, is_unavailable, utcnow
from orchestrator.errors import NotFound, SettingsError, TransitionError
from orchestrator.runs import ACCEPT, REJECT, cancel_run, create_hypothesis_and_run, retry_run, review_run
from orchestrator.serialize import jsonable
from orchestrator.settings import DEFAULT_PIPELINE, DEFAULT_PRIORITY, DEFAULT_QUEUE, Settings
from orchestrator.statuses import RunStatus
from orchestrator.sweeper import sweep_once
from tasks.sender import celery_sender

EXIT_NOT_FOUND, EXIT_ILLEGAL, EXIT_NO_DATABASE, EXIT_RUN_DID_NOT_FINISH = 3, 4, 5, 6

console = Console()
errors = Console(stderr=True, soft_wrap=True)


class Ctx:
    def __init__(self, as_json: bool):
        self.as_json = as_json
        self._db: Any = None
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = Settings.from_env()
        return self._settings

    @property
    def db(self) -> Any:
        if self._db is None:
            self._db = get_db(self.settings)
            ensure_indexes(self._db)
        return self._db

    def out(self, data: Any, human: Callable[[], Any]) -> None:
        if self.as_json:
            click.echo(json.dumps(jsonable(data), indent=2, sort_keys=True))
        else:
            rendered = human()
            if rendered is not None:
                console.print(rendered)


def _fail(message: str, code: int) -> None:
    errors.print(Text.assemble(("error:", "red"), " ", shown(message)))
    sys.exit(code)


class Group(click.Group):
    """Turns the project's errors into one clear line and a meaningful exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except NotFound as exc:
            _fail(str(exc), EXIT_NOT_FOUND)
        except TransitionError as exc:
            _fail(str(exc), EXIT_ILLEGAL)
        except SettingsError as exc:
            _fail(str(exc), 2)
        except PyMongoError as exc:
            if not is_unavailable(exc):
                raise
            url = Settings.from_env().redacted()["mongodb_url"]
            _fail(f"MongoDB at {url} is unreachable ({type(exc).__name__}); check MONGODB_URL and that the server is up",
                  EXIT_NO_DATABASE)


@click.group(cls=Group)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.pass_context
def main(ctx: click.Context, as_json: bool) -> None:
    """Operate AI-Scientist runs: list, inspect, follow, enqueue, cancel, retry, review, sweep, demo."""
    ctx.obj = Ctx(as_json)


@main.command("list")
@click.option("--status", type=click.Choice([s.value for s in RunStatus]), help="Only runs in this status.")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.pass_obj
def list_runs(obj: Ctx, status: str | None, limit: int) -> None:
    """Newest runs first."""
    query = {"status": status} if status else {}
    runs = list(obj.db.runs.find(query).sort([("createdAt", -1), ("_id", -1)]).limit(limit))

    def table() -> Table:
        t = Table(title=f"runs{f' ({status})' if status else ''}")
        for column in ("run", "status", "attempt", "stage", "pod", "created"):
            t.add_column(column)
        for run in runs:
            stage = run.get("currentStage") or {}
            t.add_row(shown(run["_id"]), shown(run["status"]), shown(run.get("attempt", 0)),
                      shown(f"{stage.get('name', '')} {_percent(stage.get('progress'))}" if stage else ""),
                      shown(run.get("claimedBy") or ""), shown(jsonable(run.get("createdAt"))))
        return t

    obj.out(runs, table)


def _percent(progress: Any) -> str:
    """A stage's progress as 42%; a value that is no number (bad data) as it is."""
    return f"{progress or 0:.0%}" if isinstance(progress, (int, float)) else str(progress)


@main.command()
@click.argument("run_id")
@click.pass_obj
def show(obj: Ctx, run_id: str) -> None:
    """Status, attempt, pod, stages, metrics, last events, artifacts and error of one run."""
    run = queries.run_detail(obj.db, run_id)
    obj.out(run, lambda: run_view(run))


@main.command()
@click.argument("run_id")
@click.option("--interval", type=float, default=0.5, show_default=True, help="Seconds between polls.")
@click.option("--timeout", type=float, default=0, help="Give up after this many seconds (0: never).")
@click.pass_obj
def tail(obj: Ctx, run_id: str, interval: float, timeout: float) -> None:
    """Follow a run live until it ends. With --json, print each new event as one JSON line."""
    follow(obj.db, run_id, interval=interval, timeout=timeout, as_json=obj.as_json, console=console)


@main.command()
@click.option("--title", required=True)
@click.option("--idea", required=True, help="The hypothesis text the pipeline works from.")
@click.option("--priority", type=click.IntRange(0, 9), default=DEFAULT_PRIORITY, show_default=True)
@click.option("--pipeline", default=DEFAULT_PIPELINE, show_default=True)
@click.option("--queue", default=DEFAULT_QUEUE, show_default=True)
@click.option("--max-attempts", type=click.IntRange(1, 100), default=None, help="Default: MAX_ATTEMPTS.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Wall-clock limit of each attempt's steps together, in seconds (default: the pipeline's).")
@click.option("--step-timeout", "step_timeouts", multiple=True, metavar="STEP=SECONDS",
              help="Wall-clock limit of one step, e.g. Stage_2=7200; repeatable (default: the pipeline's).")
@click.pass_obj
def enqueue(obj: Ctx, title: str, idea: str, priority: int, pipeline: str, queue: str, max_attempts: int | None,
            timeout_s: float | None, step_timeouts: tuple[str, ...]) -> None:
    """Insert a hypothesis and its QUEUED run, as the frontend does."""
    limits: dict[str, Any] = {"runS": timeout_s} if timeout_s else {}
    for given in step_timeouts:
        name, _, value = given.partition("=")
        try:
            limits.setdefault("stepS", {})[name.strip()] = float(value)
        except ValueError:
            raise click.BadParameter(f"{given!r}: expected STEP=SECONDS, e.g. Stage_2=7200",
                                     param_hint="--step-timeout") from None
    try:
        hypothesis_id, run_id = create_hypothesis_and_run(
            obj.db, title, idea, priority=priority, pipeline=pipeline, queue=queue,
            max_attempts=max_attempts or obj.settings.max_attempts, limits=limits or None,
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--timeout/--step-timeout") from None
    obj.out({"hypothesisId": hypothesis_id, "runId": run_id}, lambda: shown(f"queued run {run_id} (hypothesis {hypothesis_id})"))


@main.command()
@click.argument("run_id")
@click.option("--reason", default=None)
@click.pass_obj
def cancel(obj: Ctx, run_id: str, reason: str | None) -> None:
    """Cancel now if not started; else ask the worker to stop at its next checkpoint."""
    run = cancel_run(obj.db, run_id, by="manage-runs", reason=reason)
    message = "canceled" if run["status"] == "CANCELED" else "cancel requested; the worker stops at its next checkpoint"
    obj.out(run, lambda: shown(f"run {run_id}: {message}"))


@main.command()
@click.argument("run_id")
@click.pass_obj
def retry(obj: Ctx, run_id: str) -> None:
    """FAILED or CANCELED -> QUEUED (the dispatcher sends the next attempt)."""
    run = retry_run(obj.db, run_id, by="manage-runs")
    obj.out(run, lambda: shown(f"run {run_id} queued again (next attempt {int(run.get('attempt', 0)) + 1})"))


@main.command()
@click.argument("run_id")
@click.option("--accept", "decision", flag_value=ACCEPT, help="The result holds: HUMAN_VALIDATED.")
@click.option("--reject", "decision", flag_value=REJECT, help="The result does not hold: HUMAN_REJECTED (needs --notes).")
@click.option("--notes", default=None, help="What the reviewer found; kept on the run.")
@click.option("--by", default=None, help="Who reviews (default: the login name).")
@click.pass_obj
def review(obj: Ctx, run_id: str, decision: str | None, notes: str | None, by: str | None) -> None:
    """Accept or reject the result of a run in AWAITING_HUMAN."""
    if decision is None:
        raise click.UsageError("say --accept or --reject")
    notes = (notes or "").strip() or None
    if decision == REJECT and notes is None:
        raise click.BadParameter("say why the result is rejected", param_hint="--notes")
    run = review_run(obj.db, run_id, decision, by=by or _login_name(), notes=notes)
    obj.out(run, lambda: shown(f"run {run_id} {run['status']} (review by {run['review']['by']})"))


def _login_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's arbitrary uid)
        return "manage-runs"


@main.command("stats")
@click.pass_obj
def show_stats(obj: Ctx) -> None:
    """Runs per status, queue depth, age of the oldest queued run, pods busy, idle and gone (from
    their presence records), events accepted, duplicate and rejected by ingest in the last hour,
    dead letters. With --json: the operations overview (every pod, ingest counts per minute) and
    podsSeenLastMinute (pods with a run heartbeat in the last minute)."""
    now = utcnow()
    data = {**operations.overview(obj.db, now), "podsSeenLastMinute": queries.pods_seen_last_minute(obj.db, now)}

    def table() -> Table:
        t = Table(title="orchestrator")
        t.add_column("what")
        t.add_column("value", justify="right")
        for status, n in data["runsByStatus"].items():
            t.add_row(Text("runs ") + shown(status), shown(n))
        for queue, n in sorted(data["queueDepth"].items()):
            t.add_row(Text("messages in queue ") + shown(queue), shown(n))
        t.add_row("oldest queued run (s)", str(data["oldestQueuedAgeS"] if data["oldestQueuedAgeS"] is not None else "-"))
        for state in ("busy", "idle", "gone"):
            names = sorted({str(p["podId"]) for p in data["pods"] if p["state"] == state})
            t.add_row(f"pods {state}", Text.assemble(shown(data[f"pods{state.title()}"]),
                                                     " (" if names else "", shown(", ".join(names)), ")" if names else ""))
        t.add_row("pods seen in the last minute (run heartbeat)",
                  shown(", ".join(map(str, data["podsSeenLastMinute"])) or "-"))
        ingest = data["ingest"]
        for what, label in (("accepted", "events accepted"), ("duplicates", "duplicate events"), ("rejected", "events rejected")):
            t.add_row(f"{label} by ingest, last hour", shown(ingest[f"{what}LastHour"]))
        t.add_row("events accepted per second, last 5 minutes", shown(ingest["eventsPerSecond"]))
        t.add_row("dead letters", shown(data["deadLetters"]["total"]))
        return t

    obj.out(data, table)


@main.command()
@click.pass_obj
def sweep(obj: Ctx) -> None:
    """One sweeper pass (for cron): resend lost dispatches, recover runs whose worker died, prune
    old pod presence records."""
    result = sweep_once(obj.db, obj.settings, celery_sender)
    obj.out(result, lambda: f"redispatched {result['redispatched']}, recovered {result['recovered']}, "
                            f"dropped {result['eventQueuesDropped']} orphaned event queues, "
                            f"pruned {result['podsPruned']} presence records")


@main.command("prune-seen")
@click.option("--days", type=click.IntRange(1, 3650), default=7, show_default=True)
@click.pass_obj
def prune_seen(obj: Ctx, days: int) -> None:
    """Delete dedup records older than DAYS, where the server has no TTL expiry (FerretDB)."""
    deleted = obj.db.events_seen.delete_many({"processedAt": {"$lt": utcnow() - timedelta(days=days)}}).deleted_count
    obj.out({"deleted": deleted}, lambda: f"deleted {deleted} dedup records older than {days} days")


@main.command()
@click.pass_obj
def migrate(obj: Ctx) -> None:
    """Bring the database's documents to this release's schema (docs/operations.md, "Upgrading").

    Safe to run while the system works, to interrupt and to run again: each record is copied
    under its new key before the old one is deleted, and the version is stamped at the end."""
    before = schema.stored_version(obj.db)

    def progress(collection: str, moved: int) -> None:
        if not obj.as_json:
            errors.print(f"  {collection}: {moved} records moved", highlight=False)

    moved = schema.migrate(obj.db, progress)
    result = {"from": before, "to": schema.SCHEMA_VERSION, "moved": moved}
    obj.out(result, lambda: f"schema {before or 1} -> {schema.SCHEMA_VERSION}: moved "
                            + ", ".join(f"{count} {name}" for name, count in moved.items()))


@main.command()
@click.option("--name", default=None, help="Who will hold it: printed as NAME:TOKEN, and NAME becomes `by` on what it changes.")
@click.pass_obj
def token(obj: Ctx, name: str | None) -> None:
    """Print a fresh random token for INGEST_TOKEN, READER_TOKEN, OPERATOR_TOKEN or METRICS_TOKEN.

    Needs no database and no settings. To rotate a token, append the new one to the variable's
    comma-separated list, move the clients over, then remove the old one."""
    fresh = new_token()
    entry = f"{name}:{fresh}" if name else fresh
    parse("--name", OPERATOR, entry)  # the same check the servers make at start
    obj.out({"token": entry}, lambda: entry)


@main.command()
@click.option("--title", default=None, help="Hypothesis title (default: an embedded example).")
@click.option("--idea", default=None, help="Hypothesis text (default: an embedded example).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the demo pipeline: same seed and hypothesis, same numbers.")
@click.option("--timeout", type=float, default=300, show_default=True)
@click.option("--output", default="demo-output", show_default=True, help="Folder for artifacts, spool and work files.")
@click.option("--pipeline", default=DEFAULT_PIPELINE, show_default=True,
              help="The pipeline to run, e.g. ai_scientist once AI-Scientist-v2 is installed (see the README).")
@click.option("--serve", is_flag=True,
              help="Afterwards keep the web console serving (URL and sign-in token printed) until Ctrl-C.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="The console's port with --serve (a free one if it is taken).")
@click.pass_context
def demo(click_ctx: click.Context, title: str | None, idea: str | None, seed: int, timeout: float, output: str,
         pipeline: str, serve: bool, port: int) -> None:
    """Run the whole system end to end on one machine and print the run's summary.

    With no MONGODB_URL it uses the embedded database, an in-process ingest app and worker, and
    a local artifact folder; with MONGODB_URL, INGEST_URL and MINIO_* set it drives those."""
    # Imported here, not at the top: the demo brings the ingest app, a Celery worker and the
    # pipeline with numpy and matplotlib, which no other command needs.
    from ops.demo import keep_serving, run_demo, summary

    obj: Ctx = click_ctx.obj

    def show_then_serve(settings: Settings, run_id: str, made_token: str | None) -> None:
        console.line()
        console.print(summary(queries.run_detail(get_db(settings), run_id), settings))
        keep_serving(console)(settings, run_id, made_token)

    run, settings, timed_out = run_demo(title=title, idea=idea, seed=seed, timeout=timeout, output=output,
                             as_json=obj.as_json, console=console, pipeline=pipeline,
                             serve=show_then_serve if serve else None, port=port if serve else 0)
    if obj.as_json:  # one line, after the event lines `follow` printed
        click.echo(json.dumps(jsonable(run), sort_keys=True))
    elif not serve:  # --serve printed it before it served
        console.line()  # the live view's last frame may not end its line when output is redirected
        console.print(summary(run, settings))
    if run["status"] != RunStatus.AWAITING_HUMAN.value:
        _fail(_unfinished(run, timeout if timed_out else None), EXIT_RUN_DID_NOT_FINISH)


def _unfinished(run: dict[str, Any], timed_out_after: float | None) -> str:
    """Why a run the demo waited for did not reach AWAITING_HUMAN, in one line."""
    if timed_out_after is not None:
        return f"timed out after {timed_out_after:g} s; run {run['_id']} is {run['status']}"
    error = run.get("error") or {}
    why = f": {error.get('code')}: {error.get('message')}" if error else ""
    return f"run {run['_id']} ended {run['status']}{why}"


if __name__ == "__main__":
    main()
