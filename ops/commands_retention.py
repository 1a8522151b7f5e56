"""`manage-runs archive` and `prune-seen`: what an operator runs so that a year of history does
not slow today's runs (docs/queries.md, "Retention")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ops import cli_core
from ops.cli_core import Ctx
from orchestrator import event_history
from orchestrator.utc import utcnow


@click.command()
@click.option("--before", "before", required=True, type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
              help="Archive the events of runs created before this UTC date (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS).")
@click.pass_obj
def archive(obj: Ctx, before: datetime) -> None:
    """Move the events of finished runs created before a date to the events_archive collection.

    Only runs that ended (HUMAN_VALIDATED, HUMAN_REJECTED, FAILED, CANCELED) are touched, and only
    their events: the run, its stages, artifacts and status history stay. Pages and commands show
    an archived run's history as before. Safe to interrupt and to run again; safe while the
    system works."""
    cutoff = before.replace(tzinfo=UTC)
    with Progress(TextColumn("archiving"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[events]} events"),
                  TimeRemainingColumn(), console=cli_core.errors, disable=obj.as_json, transient=True) as bar:
        task = bar.add_task("archive", total=None, events=0)

        def progress(done: int, total: int, events: int) -> None:
            bar.update(task, completed=done, total=total, events=events)

        result = event_history.archive(obj.db, cutoff, progress)
    done = {**result, "before": cutoff.isoformat()}
    obj.out(done, lambda: f"archived {result['events']} events of {result['runs']} finished runs created before "
                          f"{cutoff:%Y-%m-%d %H:%M:%S} UTC")


@click.command("prune-seen")
@click.option("--days", type=click.IntRange(1, 3650), default=7, show_default=True)
@click.pass_obj
def prune_seen(obj: Ctx, days: int) -> None:
    """Delete dedup records older than DAYS, where the server has no TTL expiry (FerretDB).

    The sweeper does this an hour at a time for records this release wrote; this command is for
    those written before it (one date-range delete, which FerretDB answers by reading every
    record: run it once after the upgrade, at a quiet time)."""
    cutoff = utcnow() - timedelta(days=days)
    deleted = obj.db.events_seen.delete_many({"processedAt": {"$lt": cutoff}}).deleted_count
    obj.out({"deleted": deleted}, lambda: f"deleted {deleted} dedup records older than {days} days")
