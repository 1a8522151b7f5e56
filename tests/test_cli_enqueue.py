"""`manage-runs enqueue` checks everything before it queues (all bad fields at once, exit 2, the
API's own schema, the pipeline against the registry), takes `--idea-json FILE`, and
`manage-runs pipelines` lists what `--pipeline` takes."""

from __future__ import annotations

import json
import sys
import types

import pytest
from click.testing import CliRunner

from ops.cli import main
from orchestrator.hypotheses import HypothesisRequest
from pipeline import registry


@pytest.fixture
def env(cli_db):
    return cli_db


def invoke(*args: str, **kwargs):
    return CliRunner().invoke(main, list(args), **kwargs)


def test_every_bad_field_is_reported_at_once_and_nothing_is_queued(env):
    result = invoke("enqueue", "--title", "  ", "--pipeline", "ai-scientist", "--step-timeout", "Stage_2")
    assert result.exit_code == 2, result.output
    err = result.stderr
    assert "--title: Must not be blank." in err
    assert "--idea: Missing data for required field." in err
    assert "--pipeline: unknown pipeline 'ai-scientist'; known: ai_scientist, demo" in err
    assert "manage-runs pipelines" in err
    assert "--step-timeout: 'Stage_2': expected STEP=SECONDS" in err
    assert "4 bad field(s)" in err
    assert env.runs.count_documents({}) == 0 and env.hypotheses.count_documents({}) == 0


def test_a_blank_idea_and_an_empty_title_are_refused(env):
    result = invoke("enqueue", "--title", "", "--idea", "\t")
    assert result.exit_code == 2
    assert "--title: Must not be blank." in result.stderr and "--idea: Must not be blank." in result.stderr
    assert env.runs.count_documents({}) == 0


def test_the_rules_are_the_api_s_schema(env):
    """The CLI refuses what the API refuses, with the API's words: a title over 500 characters."""
    body = {"title": "x" * 501, "idea": "i"}
    api_says = HypothesisRequest().validate(body)["title"][0]
    result = invoke("enqueue", "--title", body["title"], "--idea", "i")
    assert result.exit_code == 2 and f"--title: {api_says}" in result.stderr


def test_idea_json_is_stored_on_the_hypothesis(env, tmp_path):
    idea = {"Name": "scaling", "Title": "Feature scaling", "Experiments": ["a", "b"]}
    path = tmp_path / "idea.json"
    path.write_text(json.dumps(idea))
    queued = json.loads(invoke("enqueue", "--title", "t", "--idea", "i", "--idea-json", str(path), "--json").stdout)
    assert env.hypotheses.find_one({"_id": queued["hypothesisId"]})["ideaJson"] == idea
    from_stdin = invoke("--json", "enqueue", "--title", "t", "--idea", "i", "--idea-json", "-", input=json.dumps(idea))
    assert from_stdin.exit_code == 0, from_stdin.output
    assert env.hypotheses.find_one({"_id": json.loads(from_stdin.stdout)["hypothesisId"]})["ideaJson"] == idea


@pytest.mark.parametrize("content, reason", [
    ("{not json", "Not valid JSON"),
    ("[1, 2]", "Must be a JSON object"),
    ('{"a.b": 1}', "a.b"),  # what the database cannot store, as the API refuses it
])
def test_a_bad_idea_json_file_is_named_with_the_reason(env, tmp_path, content, reason):
    path = tmp_path / "idea.json"
    path.write_text(content)
    result = invoke("enqueue", "--title", "", "--idea", "i", "--idea-json", str(path))
    assert result.exit_code == 2
    [line] = [line for line in result.stderr.splitlines() if "--idea-json" in line]
    assert reason in line and (str(path) in line or reason == "a.b")
    assert "--title" in result.stderr, "reported with the other bad fields"
    assert env.runs.count_documents({}) == 0


def test_a_missing_idea_json_file_is_named(env, tmp_path):
    result = invoke("enqueue", "--title", "t", "--idea", "i", "--idea-json", str(tmp_path / "nope.json"))
    assert result.exit_code == 2 and f"--idea-json: {tmp_path / 'nope.json'}: cannot be read" in result.stderr


def test_a_pipeline_from_pipeline_modules_is_taken(env, monkeypatch):
    module = types.ModuleType("site_pipelines")
    module.PIPELINES = {"site_special": registry.PIPELINES["demo"]}  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "site_pipelines", module)
    monkeypatch.setattr(registry, "PIPELINES", dict(registry.PIPELINES))
    monkeypatch.setenv("PIPELINE_MODULES", "site_pipelines")
    result = invoke("--json", "enqueue", "--title", "t", "--idea", "i", "--pipeline", "site_special")
    assert result.exit_code == 0, result.output
    assert env.runs.find_one({"_id": json.loads(result.stdout)["runId"]})["pipeline"] == "site_special"
    assert "site_special" in invoke("pipelines").stdout


def test_the_help_and_the_pipelines_command_list_the_pipelines(env, monkeypatch):
    monkeypatch.delenv("AI_SCIENTIST_ROOT", raising=False)
    help_text = " ".join(invoke("enqueue", "--help", terminal_width=200).output.split())
    assert "manage-runs pipelines" in help_text and "demo, ai_scientist" in help_text
    listed = json.loads(invoke("pipelines", "--json").stdout)
    assert [p["name"] for p in listed] == sorted(registry.PIPELINES)
    demo = next(p for p in listed if p["name"] == "demo")
    assert demo["available"] and demo["default"] and demo["description"].startswith("The `demo` pipeline")
    scientist = next(p for p in listed if p["name"] == "ai_scientist")
    assert not scientist["available"] and "AI_SCIENTIST_ROOT" in scientist["unavailableBecause"]
    table = invoke("pipelines", terminal_width=120)
    assert table.exit_code == 0 and "demo (default)" in table.stdout and "AI_SCIENTIST_ROOT" in table.stdout


def test_pipelines_needs_no_database(monkeypatch):
    monkeypatch.setenv("MONGODB_URL", "mongodb://127.0.0.1:9/nowhere")
    monkeypatch.setenv("MONGODB_TIMEOUT_S", "0.2")
    assert invoke("pipelines").exit_code == 0
