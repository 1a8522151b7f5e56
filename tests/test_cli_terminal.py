"""What manage-runs prints of values it did not write: rich markup stays text, control
characters and ANSI sequences never reach the terminal raw."""

from __future__ import annotations

import io
import uuid

import pytest
from click.testing import CliRunner
from rich.console import Console

from ops import cli, cli_core
from ops.demo import summary
from ops.terminal import shown, visible
from orchestrator.db import embedded_client
from orchestrator.runs import create_hypothesis_and_run
from tests.helpers import make_settings

#: A title, metric name, message... as a pipeline or a hostile client might send it.
MARKUP = "[/bold][red]x"
ESCAPES = "a\x1b[2Jb\rc\x07d\x9be\u202ef"
ESCAPES_SHOWN = "a\\x1b[2Jb\\rc\\x07d\\x9be\\u202ef"


@pytest.fixture
def db(monkeypatch):
    name = f"cli_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("MONGODB_URL", f"mongomock://localhost/{name}")
    monkeypatch.setattr(cli.console, "width", 400)  # no wrapping inside the values checked
    return embedded_client()[name]


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli.main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, result.output


def assert_shown_safely(out: str, *literals: str) -> None:
    assert "\x1b" not in out and "\r" not in out and "\x07" not in out, repr(out)
    for literal in literals:
        assert literal in out, (literal, out)


def hostile_run(db) -> str:
    """A FAILED run whose every shown value carries markup or escape sequences."""
    run_id = create_hypothesis_and_run(db, f"{MARKUP} {ESCAPES}", "idea")[1]
    db.runs.update_one({"_id": run_id}, {"$set": {
        "status": "FAILED", "claimedBy": f"pod{MARKUP}", "pipeline": ESCAPES,
        "currentStage": {"name": f"stage{MARKUP}", "progress": 0.5},
        "metrics": {MARKUP: 1.5, ESCAPES: "[bold]v"},
        "error": {"code": "[red]Code", "message": f"boom {ESCAPES}\nTraceback [/x]", "stage": MARKUP},
    }})
    db.events.insert_one({"_id": "e1", "runId": run_id, "seq": 1, "type": f"ai.run.log{MARKUP}",
                          "data": {"message": ESCAPES}})
    db.artifacts.insert_one({"_id": "a1", "runId": run_id, "kind": MARKUP, "key": f"runs/{ESCAPES}"})
    return run_id


def test_visible_writes_every_control_character_as_its_escape():
    assert visible(ESCAPES) == ESCAPES_SHOWN
    assert visible("line\nnext\ttab\x7f\x00") == "line\\nnext\\ttab\\x7f\\x00"
    assert visible(MARKUP) == MARKUP and visible(3) == "3"
    assert shown(MARKUP).plain == MARKUP, "a Text, never parsed as markup"


def test_show_prints_markup_and_escapes_as_literal_text(db):
    run_id = hostile_run(db)
    code, out = run("show", run_id)
    assert code == 0, out
    assert_shown_safely(out, MARKUP, ESCAPES_SHOWN, f"pod{MARKUP}", "[red]Code", "\\nTraceback [/x]",
                        f"ai.run.log{MARKUP}", "[bold]v", f"runs/{ESCAPES_SHOWN}")


def test_tail_of_a_settled_run_prints_the_same_safely(db):
    run_id = hostile_run(db)
    code, out = run("tail", run_id, "--timeout", "2")
    assert code == 6, out  # a FAILED run; its error in one line on stderr, as safely
    assert_shown_safely(out, MARKUP, ESCAPES_SHOWN, "[red]Code", f"run {run_id} FAILED: [red]Code: boom {ESCAPES_SHOWN}"
                        "\\nTraceback [/x]")


def test_list_prints_stage_and_pod_as_literal_text(db):
    hostile_run(db)
    code, out = run("list")
    assert code == 0, out
    assert_shown_safely(out, f"stage{MARKUP} 50%", f"pod{MARKUP}")


def test_json_output_is_the_raw_values(db):
    run_id = hostile_run(db)
    code, out = run("--json", "show", run_id)
    assert code == 0 and '"pipeline": "a\\u001b[2Jb\\rc\\u0007d\\u009be\\u202ef"' in out


def test_an_error_message_naming_a_hostile_id_is_one_safe_line(db, monkeypatch):
    errors = Console(file=io.StringIO(), width=400)
    monkeypatch.setattr(cli_core, "errors", errors)
    code, _ = run("show", f"{MARKUP}\x1b[2J")
    text = errors.file.getvalue()
    assert code == 3
    assert_shown_safely(text, f"no run with id '{MARKUP}\\x1b[2J'")
    assert text.count("\n") == 1


def test_the_demo_summary_prints_run_values_as_literal_text():
    run = {"_id": f"r{MARKUP}", "status": ESCAPES, "metrics": {MARKUP: 0.5, "odd": "[x]"},
           "validation": {"verdict": MARKUP, "scores": {ESCAPES: 0.25}},
           "artifacts": [{"kind": MARKUP, "key": f"runs/{ESCAPES}"}]}
    console = Console(file=io.StringIO(), width=400)
    console.print(summary(run, make_settings(ARTIFACT_DIR="/srv/a")))
    assert_shown_safely(console.file.getvalue(), f"r{MARKUP}", ESCAPES_SHOWN, f"metric {MARKUP}", "0.5",
                        f"score {ESCAPES_SHOWN}", f"/srv/a/runs/{ESCAPES_SHOWN}", "[x]")
