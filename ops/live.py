"""Showing a run to people: rich tables for `show`, and the live view `tail` and `demo` follow."""

from __future__ import annotations

import json
import time
from typing import Any

import click
from pymongo.database import Database
from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.style import Style
from rich.table import Table
from rich.text import Text

from ops.terminal import shown
from orchestrator import queries
from orchestrator.events import STAGES
from orchestrator.numbers import mean_pm
from orchestrator.serialize import jsonable, to_rfc3339
from orchestrator.statuses import TERMINAL, RunStatus

#: A run in these statuses has stopped changing (AWAITING_HUMAN waits for a person).
SETTLED = {s.value for s in TERMINAL} | {RunStatus.AWAITING_HUMAN.value}

_STATUS_STYLE = {
    "COMPLETED": "green", "RUNNING": "cyan", "FAILED": "red", "PENDING": "dim", "SKIPPED": "dim",
    "AWAITING_HUMAN": "green", "HUMAN_VALIDATED": "green", "HUMAN_REJECTED": "magenta", "CANCELED": "yellow", "QUEUED": "dim",
}


def _when(value: Any) -> str:
    return to_rfc3339(value) if hasattr(value, "isoformat") else str(value or "")


def _link(url: str) -> Text:
    """A URL whole (folded on a narrow terminal, never cut), clickable where the terminal
    supports links; `--json` has it as `traceUrl`."""
    text = shown(url, "cyan")
    text.overflow = "fold"
    text.stylize(Style(link=text.plain))
    return text


def header(run: dict[str, Any]) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    hypothesis = run.get("hypothesis") or {}
    status = str(run.get("status"))
    rows = [
        ("run", shown(run["_id"])),
        ("hypothesis", shown(hypothesis.get("title") or run.get("hypothesisId") or "")),
        # What the pipeline made of it (the demo maps a hypothesis onto one of its fixed experiments).
        *([("experiment", shown(run["ideaMapping"], "yellow"))] if run.get("ideaMapping") else []),
        ("status", shown(status, _STATUS_STYLE.get(status, ""))),
        ("attempt", shown(f"{run.get('attempt', 0)} of {run.get('maxAttempts', '?')}")),
        ("pipeline", shown(run.get("pipeline"))),
        ("pod", shown((run.get("pod") or {}).get("id") or run.get("claimedBy") or "-")),
        ("last heartbeat", shown(_when(run.get("lastHeartbeat")) or "-")),
        *([("trace", shown(run["traceId"]))] if run.get("traceId") else []),
        *([("trace link", _link(run["traceUrl"]))] if run.get("traceUrl") else []),
    ]
    if run.get("error"):
        error = run["error"]
        rows.append(("error", shown(f"{error.get('code')}: {error.get('message')} (stage {error.get('stage') or '-'}, "
                                    f"retryable={error.get('retryable')})", "red")))
    if run.get("verdict"):
        rows.append(("verdict", shown(run["verdict"])))
    if run.get("deadLetters"):
        rows.append(("dead letters", Text(f"{run['deadLetters']} event(s) kept on the pod (its SPOOL_DIR/dead-letters.jsonl); "
                                          "see the warnings in the history", style="yellow")))
    for name, value in rows:
        table.add_row(name, value)
    return table


def stages_table(run: dict[str, Any]) -> Table:
    """Every pipeline step with its status and a progress bar, including ones not started yet."""
    by_name = {s["name"]: s for s in run.get("stages") or []}
    table = Table(title="stages", expand=False)
    for column in ("stage", "status", "progress", "duration"):
        table.add_column(column)
    for name, desc in STAGES:
        stage = by_name.get(name, {})
        status = stage.get("status", "PENDING")
        progress = float(stage.get("progress") or 0.0)
        duration = f"{stage['durationS']:.1f}s" if stage.get("durationS") is not None else ""
        table.add_row(f"{name} {desc}", shown(status, _STATUS_STYLE.get(status, "")),
                      Group(ProgressBar(total=1.0, completed=progress, width=24), Text(f"{progress:4.0%}")), duration)
    return table


def number(value: Any) -> str:
    """A metric or score as six significant digits; anything else as it came (then `shown`)."""
    return f"{value:.6g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def metrics_table(run: dict[str, Any]) -> Table:
    """Each metric's last logged value: a progress signal, not the result (`results_table` is)."""
    table = Table(title="metrics (last logged value of each; the results table has the outcome)")
    table.add_column("name")
    table.add_column("last logged", justify="right")
    for name, value in sorted((run.get("metrics") or {}).items()):
        table.add_row(shown(name), shown(number(value)))
    return table


def run_results(run: dict[str, Any]) -> dict[str, Any]:
    """The measured outcome the verdict rests on (`results` of the auto-validation: a reviewer's
    record, the latest after a review, carries none), or {}."""
    results = (run.get("autoValidation") or run.get("validation") or {}).get("results")
    return results if isinstance(results, dict) else {}


def arm_line(arm: dict[str, Any]) -> str:
    """'0.6872 ± 0.0019 (n = 5), accuracy 0.560': mean ± standard error over n."""
    line = f"{mean_pm(arm.get('mean'), arm.get('stderr'))} (n = {arm.get('n')})"
    return line + (f", accuracy {arm['accuracy']:.3f}" if isinstance(arm.get("accuracy"), (int, float)) else "")


def _short(value: Any) -> str:
    """Four significant digits: enough for a mean whose standard error is in the third."""
    return f"{value:.4g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def statistic_line(test: dict[str, Any]) -> str:
    """'paired t-test, one-sided (...): statistic 14.77, df 4, p = 6.1e-05'."""
    parts = [f"statistic {_short(test.get('statistic'))}"]
    if test.get("df") is not None:
        parts.append(f"df {number(test['df'])}")
    if test.get("p_value") is not None:
        parts.append(f"p = {test['p_value']:.2g}")
    return f"{test.get('name')}: {', '.join(parts)}"


def results_table(run: dict[str, Any]) -> Table:
    """Per arm the metric's mean ± standard error over n, then the test statistic and the effect
    sizes, each under its own name: the run's result, apart from the reviewer's scores."""
    table = Table(title=Text("results: ") + shown(run_results(run).get("metric") or ""), show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for label, value in result_rows(run):
        table.add_row(shown(label), shown(value))
    return table


def result_rows(run: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, text) per arm, then the test and each effect size: what `results_table` and the
    demo's summary both show."""
    results = run_results(run)
    rows = [(str(arm.get("name")), arm_line(arm)) for arm in results.get("arms") or []]
    if isinstance(results.get("test"), dict):
        rows.append(("test", statistic_line(results["test"])))
    rows += [(f"effect {name}", number(value)) for name, value in (results.get("effects") or {}).items()]
    return rows


def artifacts_table(run: dict[str, Any]) -> Table:
    table = Table(title="artifacts")
    for column in ("kind", "key", "bytes", "sha256"):
        table.add_column(column)
    for artifact in run.get("artifacts") or []:
        table.add_row(shown(artifact.get("kind") or artifact.get("status")), shown(artifact.get("key")),
                      shown(artifact.get("bytes", "")), shown(str(artifact.get("sha256", ""))[:12]))
    return table


def events_table(events: list[dict[str, Any]]) -> Table:
    table = Table(title="last events")
    for column in ("seq", "time", "type", "data"):
        table.add_column(column, overflow="fold")
    for event in events:
        data = {k: v for k, v in (event.get("data") or {}).items() if k not in ("run_id", "traceback", "summary")}
        table.add_row(shown(event.get("seq")), shown(_when(event.get("time"))), shown(event.get("type")),
                      shown(str(data)[:120]))
    return table


def history_table(changes: list[dict[str, Any]]) -> Table:
    table = Table(title="status history")
    for column in ("at", "from -> to", "attempt", "by", "reason"):
        table.add_column(column, overflow="fold")
    for change in changes[-20:]:
        table.add_row(shown(_when(change.get("at"))), shown(f"{change.get('from')} -> {change.get('to')}"),
                      shown(change.get("attempt")), shown(change.get("by")), shown(str(change.get("reason") or "")[:160]))
    return table


def run_view(run: dict[str, Any]) -> Group:
    """Everything `show` prints, and what `tail`/`demo` redraw live."""
    parts: list[Any] = [header(run), stages_table(run)]
    if run_results(run):
        parts.append(results_table(run))
    if run.get("metrics"):
        parts.append(metrics_table(run))
    if run.get("artifacts"):
        parts.append(artifacts_table(run))
    if run.get("statusHistory"):
        parts.append(history_table(run["statusHistory"]))
    if run.get("recentEvents"):
        parts.append(events_table(run["recentEvents"]))
    return Group(*parts)


def follow(db: Database, run_id: str, *, interval: float, timeout: float, as_json: bool, console: Console) -> dict[str, Any]:
    """Poll the run and its events until it settles or `timeout` seconds pass (0: never); return
    the last run detail, whose status is in `SETTLED` unless the timeout passed first (that is how
    a caller tells the two apart). Draws the live view, or with `as_json` prints each new event
    as a line."""
    deadline = time.monotonic() + timeout if timeout else None
    last_seq = -1
    run = queries.run_detail(db, run_id)
    live = None if as_json else Live(run_view(run), console=console, refresh_per_second=4)
    if live:
        live.start()
    try:
        while True:
            for event in queries.events_after(db, run_id, last_seq):
                last_seq = max(last_seq, int(event.get("seq") or 0))
                if as_json:
                    click.echo(json.dumps(jsonable(event), sort_keys=True))
            run = queries.run_detail(db, run_id)
            if live:
                live.update(run_view(run))
            if run["status"] in SETTLED or (deadline and time.monotonic() > deadline):
                return run
            time.sleep(interval)
    finally:
        if live:
            live.stop()
