"""Queueing work from the command line: `enqueue`, and `pipelines`, the names it takes.

`enqueue` checks what it is given before anything is written, all of it at once (one run of the
command names every bad field, exit 2): the fields through the API's own schema
(`orchestrator.hypotheses`), and the pipeline against the registry, which the API cannot consult
(its processes do not load the pipelines). A run naming an unknown pipeline, or a blank title,
would otherwise wait in the queue and fail on a GPU pod.

The registry is imported when these commands run, not with the CLI: it brings numpy and
matplotlib (the demo pipeline), which no other command needs.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click
from marshmallow import ValidationError
from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from ops.cli_core import EXIT_USAGE, Ctx, stop
from ops.terminal import shown
from orchestrator.hypotheses import HypothesisRequest, idea_json_from_text
from orchestrator.runs import create_hypothesis_and_run
from orchestrator.settings import BUILTIN_PIPELINES, DEFAULT_PIPELINE, DEFAULT_PRIORITY, DEFAULT_QUEUE, Settings

_HYPOTHESIS = HypothesisRequest()

#: The schema's field -> the option that gives it.
OPTION_OF = {
    "title": "--title", "idea": "--idea", "ideaJson": "--idea-json", "priority": "--priority",
    "pipeline": "--pipeline", "queue": "--queue", "maxAttempts": "--max-attempts", "limits": "--timeout/--step-timeout",
}


def known_pipelines(settings: Settings) -> dict[str, Callable[..., Any]]:
    """The registry as a worker with these settings has it: the built-ins plus PIPELINE_MODULES'."""
    from pipeline import registry

    registry.load_modules(settings.pipeline_modules)
    return registry.PIPELINES


@click.command()
@click.option("--title", default=None, help="The hypothesis' title (required, not blank).")
@click.option("--idea", default=None, help="The hypothesis text the pipeline works from (required, not blank).")
@click.option("--idea-json", "idea_json_file", default=None, metavar="FILE",
              help="A JSON object stored as the hypothesis' ideaJson, as the API takes it (e.g. an AI-Scientist "
                   "idea); '-' reads standard input.")
@click.option("--priority", type=click.IntRange(0, 9), default=DEFAULT_PRIORITY, show_default=True)
@click.option("--pipeline", default=DEFAULT_PIPELINE, show_default=True,
              help=f"The pipeline to run: {', '.join(BUILTIN_PIPELINES)} or one a site adds with PIPELINE_MODULES; "
                   "`manage-runs pipelines` lists them with what each does and whether it can run here.")
@click.option("--queue", default=DEFAULT_QUEUE, show_default=True)
@click.option("--max-attempts", type=click.IntRange(1, 100), default=None, help="Default: MAX_ATTEMPTS.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Wall-clock limit of each attempt's steps together, in seconds (default: the pipeline's).")
@click.option("--step-timeout", "step_timeouts", multiple=True, metavar="STEP=SECONDS",
              help="Wall-clock limit of one step, e.g. Stage_2=7200; repeatable (default: the pipeline's).")
@click.pass_obj
def enqueue(obj: Ctx, title: str | None, idea: str | None, idea_json_file: str | None, priority: int, pipeline: str,
            queue: str, max_attempts: int | None, timeout_s: float | None, step_timeouts: tuple[str, ...]) -> None:
    """Insert a hypothesis and its QUEUED run, as the frontend does. Every field is checked first
    (as POST /api/hypotheses checks it, and the pipeline against the registry); a bad one is
    reported with all the others and nothing is queued (exit 2)."""
    problems: dict[str, list[str]] = {}
    body: dict[str, Any] = {"priority": priority, "pipeline": pipeline, "queue": queue}
    body.update({k: v for k, v in (("title", title), ("idea", idea), ("maxAttempts", max_attempts)) if v is not None})
    limits = _limits(timeout_s, step_timeouts, problems)
    if limits:
        body["limits"] = limits
    if idea_json_file is not None:
        idea_json = _read_idea_json(idea_json_file, problems)
        if idea_json is not None:
            body["ideaJson"] = idea_json
    try:
        checked = _HYPOTHESIS.load(body)
    except ValidationError as exc:
        checked = None
        for name, reasons in _field_messages(exc).items():
            problems.setdefault(OPTION_OF.get(name, name), []).extend(reasons)
    known = known_pipelines(obj.settings)
    if pipeline not in known:
        problems["--pipeline"] = [f"unknown pipeline {pipeline!r}; known: {', '.join(sorted(known))} "
                                  "(`manage-runs pipelines` describes them)"]
    if problems or checked is None:
        _refuse(problems)
    hypothesis_id, run_id = create_hypothesis_and_run(
        obj.db, checked["title"], checked["idea"], idea_json=checked["ideaJson"], priority=checked["priority"],
        pipeline=checked["pipeline"], queue=checked["queue"],
        max_attempts=checked["maxAttempts"] or obj.settings.max_attempts, limits=checked["limits"],
    )
    obj.out({"hypothesisId": hypothesis_id, "runId": run_id},
            lambda: shown(f"queued run {run_id} (hypothesis {hypothesis_id})"))


def _limits(timeout_s: float | None, step_timeouts: tuple[str, ...], problems: dict[str, list[str]]) -> dict[str, Any]:
    limits: dict[str, Any] = {"runS": timeout_s} if timeout_s else {}
    for given in step_timeouts:
        name, _, value = given.partition("=")
        try:
            limits.setdefault("stepS", {})[name.strip()] = float(value)
        except ValueError:
            problems.setdefault("--step-timeout", []).append(f"{given!r}: expected STEP=SECONDS, e.g. Stage_2=7200")
    return limits


def _read_idea_json(path: str, problems: dict[str, list[str]]) -> dict[str, Any] | None:
    """The JSON object in the file (or standard input for '-'); None, with the file and the
    reason in `problems`, when it cannot be read or is no JSON object."""
    name = "standard input" if path == "-" else path
    try:
        if path == "-":
            raw: str | bytes = sys.stdin.read()
        else:
            with open(path, "rb") as f:
                raw = f.read()
        return idea_json_from_text(raw)
    except OSError as exc:
        problems.setdefault("--idea-json", []).append(f"{name}: cannot be read ({exc.strerror or exc})")
    except ValueError as exc:
        problems.setdefault("--idea-json", []).append(f"{name}: {exc}")
    return None


def _field_messages(exc: ValidationError) -> dict[str, list[str]]:
    messages = exc.messages if isinstance(exc.messages, dict) else {"body": exc.messages}
    return {str(name): [str(m) for m in (reasons if isinstance(reasons, list) else [reasons])]
            for name, reasons in messages.items()}


def _refuse(problems: dict[str, list[str]]) -> NoReturn:
    """Every bad field on its own line of stderr, then exit 2."""
    stop(Text.assemble(("error:", "red"), f" nothing queued; {len(problems)} bad field(s):"),
         *(Text.assemble("  ", (option, "bold"), ": ", shown(reason))
           for option, reasons in sorted(problems.items()) for reason in reasons), code=EXIT_USAGE)


@click.command("pipelines")
@click.pass_obj
def pipelines(obj: Ctx) -> None:
    """The pipelines `enqueue --pipeline` takes, each with what it does and whether it can run on
    this machine (a worker checks again before each step, on its own machine)."""
    from pipeline import registry
    from pipeline.errors import PipelineError

    rows = []
    for name in sorted(known_pipelines(obj.settings)):
        try:
            registry.check_available(name)
            why = None
        except PipelineError as exc:
            why = str(exc)
        rows.append({"name": name, "description": registry.describe(name), "default": name == DEFAULT_PIPELINE,
                     "available": why is None, "unavailableBecause": why})

    def table() -> Group:
        t = Table(title="pipelines", box=box.SIMPLE_HEAD)
        t.add_column("pipeline", no_wrap=True)
        t.add_column("can run here", no_wrap=True)
        t.add_column("what it does", overflow="fold")
        for row in rows:
            name = shown(row["name"]) + (Text(" (default)", "dim") if row["default"] else Text(""))
            t.add_row(name, Text("yes", "green") if row["available"] else Text("no (below)", "yellow"),
                      shown(row["description"]))
        why_not = [Text.assemble(shown(row["name"], "bold"), ": ", shown(row["unavailableBecause"]))
                   for row in rows if not row["available"]]
        return Group(t, *why_not)

    obj.out(rows, table)
