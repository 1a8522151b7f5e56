"""`manage-runs`: the operator's command line.

Human output uses rich tables; `--json`, before or after the command's name, prints
machine-readable JSON instead. Wherever a command takes a run id (show, tail, cancel, retry,
review) an unambiguous prefix of at least 4 characters will do (`orchestrator.run_ids`).

Exit codes:
  0  done (`tail`: the run reached AWAITING_HUMAN or HUMAN_VALIDATED)
  1  unexpected error
  2  usage error: a bad option or setting, fields `enqueue` refuses (all are named), a run id
     prefix that is too short or matches more than one run (the candidates are named)
  3  unknown run id
  4  the action is not allowed in the run's status
  5  the database is unreachable
  6  the run ended without a result: `tail` on FAILED, CANCELED or HUMAN_REJECTED; `demo`:
     the demo run failed, was canceled or timed out
  7  `tail --timeout` gave up while the run goes on (one line on stderr names its status)

Warnings about what the server cannot do (FerretDB: no TTL) are shown by `stats` and `migrate`
only; see `ops.cli_core.SERVER_WARNING_COMMANDS` for why.
"""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import Any

import click
from rich import box
from rich.table import Table
from rich.text import Text

from ops import cli_core
from ops.cli_core import (
    EXIT_GAVE_UP,
    EXIT_RUN_DID_NOT_FINISH,
    EXIT_USAGE,
    JSON_HELP,
    RUN_ID,
    SERVER_WARNING_COMMANDS,
    Ctx,
    Group,
    console,
    fail,
    stop,
)
from ops.commands_enqueue import enqueue, pipelines
from ops.commands_retention import archive, prune_seen
from ops.env_file import fill_empty
from ops.live import SETTLED, follow, run_view
from ops.terminal import shown, visible
from orchestrator import index_plan, operations, queries, run_list, schema
from orchestrator.credentials import OPERATOR, new_token, parse
from orchestrator.db import get_db
from orchestrator.runs import ACCEPT, REJECT, cancel_run, retry_run, review_run
from orchestrator.serialize import jsonable, to_rfc3339
from orchestrator.settings import DEFAULT_PIPELINE, Settings
from orchestrator.statuses import RunStatus
from orchestrator.sweeper import sweep_once
from orchestrator.utc import utcnow
from telemetry import traces

#: What `tail` exits with when the run ends without a result (0 for the other settled statuses).
DID_NOT_FINISH = frozenset({RunStatus.FAILED.value, RunStatus.CANCELED.value, RunStatus.HUMAN_REJECTED.value})


@click.group(cls=Group)
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@click.pass_context
def main(ctx: click.Context, as_json: bool) -> None:
    """Operate AI-Scientist runs: list, inspect, follow, enqueue, cancel, retry, review, sweep, demo.

    Every command takes --json (before or after its name); a RUN may be given by an unambiguous
    prefix of its id (at least 4 characters)."""
    cli_core.configure_logging()
    traces.configure("cli")
    ctx.obj = Ctx(as_json, server_warnings_shown=ctx.invoked_subcommand in SERVER_WARNING_COMMANDS)


main.add_command(enqueue)
main.add_command(pipelines)
main.add_command(archive)
main.add_command(prune_seen)


@main.command("list")
@click.option("--status", type=click.Choice([s.value for s in RunStatus]), help="Only runs in this status.")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.pass_obj
def list_runs(obj: Ctx, status: str | None, limit: int) -> None:
    """Newest runs first (the list the console and `GET /api/runs` show, read a day at a time)."""
    runs, _ = run_list.page(obj.db, run_list.RunFilter(statuses=(status,) if status else ()), None, limit)

    def table() -> Table:
        # The id is never cut (it is what the other commands take); the other columns fold.
        t = Table(title=f"runs{f' ({status})' if status else ''}", box=box.SIMPLE_HEAD, collapse_padding=True,
                  pad_edge=False)
        t.add_column("run", no_wrap=True, min_width=max((len(visible(r["_id"])) for r in runs), default=None))
        for column in ("status", "attempt", "stage", "pod", "created (UTC)"):
            t.add_column(column, overflow="fold")
        for run in runs:
            stage = run.get("currentStage") or {}
            t.add_row(shown(run["_id"]), shown(run["status"]), shown(run.get("attempt", 0)),
                      shown(f"{stage.get('name', '')} {_percent(stage.get('progress'))}" if stage else ""),
                      shown(run.get("claimedBy") or ""), shown(_minute(run.get("createdAt"))))
        return t

    obj.out(runs, table)


def _minute(value: Any) -> str:
    """A time as 2024-05-01 12:00 (UTC): short enough for an 80-column table (--json has it whole)."""
    return to_rfc3339(value)[:16].replace("T", " ") if hasattr(value, "isoformat") else str(value or "")


def _percent(progress: Any) -> str:
    """A stage's progress as 42%; a value that is no number (bad data) as it is."""
    return f"{progress or 0:.0%}" if isinstance(progress, (int, float)) else str(progress)


@main.command()
@click.argument("run_id", type=RUN_ID)
@click.pass_obj
def show(obj: Ctx, run_id: str) -> None:
    """Status, attempt, pod, stages, metrics, last events, artifacts and error of one run."""
    run = queries.run_detail(obj.db, run_id, trace_url_template=obj.settings.trace_url_template)
    obj.out(run, lambda: run_view(run))


@main.command()
@click.argument("run_id", type=RUN_ID)
@click.option("--interval", type=float, default=0.5, show_default=True, help="Seconds between polls.")
@click.option("--timeout", type=float, default=0, help="Give up after this many seconds (0: never; exit 7).")
@click.pass_obj
def tail(obj: Ctx, run_id: str, interval: float, timeout: float) -> None:
    """Follow a run live until it ends. With --json, print each new event as one JSON line.

    Exit 0 when the run reaches AWAITING_HUMAN or HUMAN_VALIDATED; 6 when it ends FAILED,
    CANCELED or HUMAN_REJECTED, 7 when --timeout passes first, each with one line on stderr
    saying which, so a script can wait on a run with `manage-runs tail RUN && ...`."""
    run = follow(obj.db, run_id, interval=interval, timeout=timeout, as_json=obj.as_json, console=console)
    status = str(run.get("status"))
    if status not in SETTLED:  # `follow` returns an unsettled run only when its timeout passed
        stop(shown(f"gave up after {timeout:g} s; run {run_id} is still {status}"), code=EXIT_GAVE_UP)
    if status in DID_NOT_FINISH:
        why = _why_ended(run)
        stop(shown(f"run {run_id} {status}" + (f": {why}" if why else "")), code=EXIT_RUN_DID_NOT_FINISH)


def _why_ended(run: dict[str, Any]) -> str:
    """The failure's code and message, the cancel's or the review's author and reason."""
    if run.get("status") == RunStatus.FAILED.value:
        error = run.get("error") or {}
        return ": ".join(str(part) for part in (error.get("code"), error.get("message")) if part)
    record = run.get("cancel") if run.get("status") == RunStatus.CANCELED.value else run.get("review")
    record = record if isinstance(record, dict) else {}
    by, why = record.get("by"), record.get("reason") or record.get("notes")
    return ": ".join(str(part) for part in (f"by {by}" if by else None, why) if part)


@main.command()
@click.argument("run_id", type=RUN_ID)
@click.option("--reason", default=None)
@click.pass_obj
def cancel(obj: Ctx, run_id: str, reason: str | None) -> None:
    """Cancel now if not started; else ask the worker to stop at its next checkpoint."""
    run = cancel_run(obj.db, run_id, by="manage-runs", reason=reason)
    message = "canceled" if run["status"] == "CANCELED" else "cancel requested; the worker stops at its next checkpoint"
    obj.out(run, lambda: shown(f"run {run_id}: {message}"))


@main.command()
@click.argument("run_id", type=RUN_ID)
@click.pass_obj
def retry(obj: Ctx, run_id: str) -> None:
    """FAILED or CANCELED -> QUEUED (the dispatcher sends the next attempt)."""
    run = retry_run(obj.db, run_id, by="manage-runs")
    obj.out(run, lambda: shown(f"run {run_id} queued again (next attempt {int(run.get('attempt', 0)) + 1})"))


@main.command()
@click.argument("run_id", type=RUN_ID)
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
    """Runs per status, queue depth (messages waiting in each queue: the GPU queue and each live
    pod's, 0 when empty), age of the oldest queued run, pods busy, idle and gone (from
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
        counted_s = max((now - data["terminalCountedAt"]).total_seconds(), 0.0)
        t.add_row("terminal statuses counted (s ago)", f"{counted_s:.0f}")
        for queue, n in sorted(data["queueDepth"].items()):  # the GPU queue and every live pod's, even at 0
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
    from tasks.sender import celery_sender  # Celery, imported by the one command that sends

    result = sweep_once(obj.db, obj.settings, celery_sender)
    obj.out(result, lambda: f"redispatched {result['redispatched']}, recovered {result['recovered']}, "
                            f"dropped {result['eventQueuesDropped']} orphaned event queues, "
                            f"pruned {result['podsPruned']} presence records")


@main.command("postgresql-indexes")
@click.pass_obj
def postgresql_indexes(obj: Ctx) -> None:
    """Print the SQL that gives FerretDB on PostgreSQL the indexes its queries can use.

    FerretDB v1 scans a whole table for every query, `_id` lookups included, unless these GIN
    indexes exist (docs/queries.md). Run it once per PostgreSQL cluster as a superuser; it covers
    the collections that exist and, through an event trigger, every one made later:
    `manage-runs postgresql-indexes | psql "postgres://postgres@HOST:5432/ferretdb"`. Idempotent.
    Needs no database connection; MongoDB needs none of it."""
    sql = index_plan.postgresql_sql()
    if obj.as_json:
        obj.out({"sql": sql}, lambda: sql)
    else:
        click.echo(sql, nl=False)  # verbatim, for psql: no wrapping to the terminal's width


@main.command()
@click.pass_obj
def migrate(obj: Ctx) -> None:
    """Bring the database's documents to this release's schema (docs/operations.md, "Upgrading").

    Safe to run while the system works, to interrupt and to run again: each record is copied
    under its new key before the old one is deleted, and the version is stamped at the end."""
    before = schema.stored_version(obj.db)

    def progress(collection: str, moved: int) -> None:
        if not obj.as_json:
            cli_core.errors.print(f"  {collection}: {moved} records moved", highlight=False)

    moved = schema.migrate(obj.db, progress)
    result = {"from": before, "to": schema.SCHEMA_VERSION, "moved": moved}
    obj.out(result, lambda: f"schema {before or 1} -> {schema.SCHEMA_VERSION}: moved "
                            + ", ".join(f"{count} {name}" for name, count in moved.items()))


@main.command()
@click.option("--name", default=None, help="Who will hold it: printed as NAME:TOKEN, and NAME becomes `by` on what it changes.")
@click.option("--fill", "env_file", type=click.Path(exists=True, dir_okay=False, writable=True, path_type=Path),
              default=None, help="Write a fresh token into each empty credential line of this .env file "
                                 "(INGEST_TOKEN=, OPERATOR_TOKEN=, READER_TOKEN=, SECRET_KEY=, ...) instead of printing one.")
@click.pass_obj
def token(obj: Ctx, name: str | None, env_file: Path | None) -> None:
    """Print a fresh random token for INGEST_TOKEN, READER_TOKEN, OPERATOR_TOKEN, METRICS_TOKEN or
    SECRET_KEY; with --fill, fill every empty one of a .env file (`cp .env.example .env` first).

    Needs no database and no settings. To rotate a token, append the new one to the variable's
    comma-separated list, move the clients over, then remove the old one."""
    if env_file is not None:
        if name:
            raise click.UsageError("--name names one printed token; --fill writes several")
        try:
            filled = fill_empty(env_file, new_token)
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"{env_file}: cannot fill it ({type(exc).__name__}: {exc})", EXIT_USAGE)
        obj.out({"file": str(env_file), "filled": filled},
                lambda: shown(f"{env_file}: filled {', '.join(filled)}" if filled
                              else f"{env_file}: no empty credential to fill (a value already set is never replaced)"))
        return
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
    if run["status"] == RunStatus.AWAITING_HUMAN.value:
        return
    if timed_out:  # the demo canceled its run
        stop(shown(f"timed out after {timeout:g} s; run {run['_id']} is {run['status']}"), code=EXIT_RUN_DID_NOT_FINISH)
    why = _why_ended(run)
    stop(shown(f"run {run['_id']} ended {run['status']}" + (f": {why}" if why else "")), code=EXIT_RUN_DID_NOT_FINISH)

def run() -> None:
    """The `manage-runs` console script: `main`, ending the process as soon as its work is done."""
    cli_core.exit_at_once(main)


if __name__ == "__main__":
    run()
