"""manage-runs without traps, part one: `--json` after the command's name, full run ids in an
80-column table, and run ids given by prefix to every command that takes one."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from ops import cli_core
from ops.cli import main
from orchestrator.errors import NotFound
from orchestrator.run_ids import MIN_PREFIX, AmbiguousRunId, RunIdTooShort, resolve_run_id
from orchestrator.runs import create_hypothesis_and_run, new_run_document
from orchestrator.utc import utcnow


@pytest.fixture
def env(cli_db):
    return cli_db


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def _run(db, run_id: str, status: str = "QUEUED") -> str:
    """A run with this id and status (and its hypothesis)."""
    db.hypotheses.insert_one({"_id": f"h-{run_id}", "title": "t", "idea": "i", "ideaJson": None, "createdAt": utcnow()})
    db.runs.insert_one({**new_run_document(f"h-{run_id}", run_id=run_id), "status": status})
    return run_id


# --- --json before or after the command -------------------------------------------------------

#: Arguments that make each command do its cheapest real work on an empty embedded database;
#: `demo` runs a whole system, so it is only parsed (below).
CHEAP = {
    "list": [], "show": ["RUN"], "tail": ["RUN"], "cancel": ["RUN"], "retry": ["RUN"], "stats": [], "sweep": [],
    "prune-seen": [], "migrate": [], "postgresql-indexes": [], "archive": ["--before", "2020-01-01"], "token": [], "pipelines": [],
    "enqueue": ["--title", "t", "--idea", "i"], "review": ["RUN", "--accept"],
}


@pytest.mark.parametrize("name", sorted(main.commands))
def test_every_command_takes_json_after_its_name(env, name):
    command = main.commands[name]
    assert any("--json" in p.opts for p in command.params), f"{name} has no --json"
    assert invoke(name, "--json", "--help").exit_code == 0, "--json is an option of the command, not unknown"
    if name not in CHEAP:
        assert name == "demo", f"add {name} to CHEAP"
        return
    status = {"retry": "FAILED", "review": "AWAITING_HUMAN", "tail": "AWAITING_HUMAN"}.get(name, "QUEUED")
    args = [_run(env, f"run-{name}-{i}", status) if a == "RUN" else a for i, a in enumerate(CHEAP[name])]
    after = invoke(name, *args, "--json")
    assert after.exit_code == 0, after.output
    if name == "tail":  # the events as JSON lines (none here), not the live view
        assert after.stdout == ""
        return
    json.loads(after.stdout)
    if name in ("list", "show", "stats", "pipelines", "migrate", "prune-seen"):  # no effect: compare with before
        before = invoke("--json", name, *args)
        assert before.exit_code == 0 and _stable(json.loads(before.stdout)) == _stable(json.loads(after.stdout))


def _stable(value):
    """The output without what changes between two calls (clocks)."""
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in ("ingest", "oldestQueuedAgeS", "pods")}
    return [_stable(v) for v in value] if isinstance(value, list) else value


def test_json_after_the_command_changes_nothing_else(env):
    run_id = _run(env, "abcd-1")
    result = invoke("show", run_id, "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["_id"] == run_id
    assert "QUEUED" in invoke("show", run_id).stdout and not invoke("show", run_id).stdout.lstrip().startswith("{")


# --- full ids in a narrow table ---------------------------------------------------------------


def test_an_80_column_list_shows_every_run_id_whole(env, monkeypatch):
    monkeypatch.setattr(cli_core.console, "width", 80)
    ids = [create_hypothesis_and_run(env, "t", "i")[1] for _ in range(3)]
    env.runs.update_one({"_id": ids[0]}, {"$set": {"status": "AWAITING_HUMAN", "claimedBy": "gpu-pod-with-a-long-name-7",
                                                   "currentStage": {"name": "auto_validation", "progress": 0.5}}})
    result = invoke("list")
    assert result.exit_code == 0, result.output
    assert all(len(line) <= 80 for line in result.stdout.splitlines())
    for run_id in ids:
        assert run_id in result.stdout, f"{run_id} cut:\n{result.stdout}"
    assert "…" not in result.stdout


# --- run ids by prefix ------------------------------------------------------------------------


def test_the_resolver_takes_the_exact_id_then_a_unique_prefix(env):
    _run(env, "e21088ed-b75a")
    _run(env, "e21088ed-b75b")
    _run(env, "abc")  # shorter than a prefix may be, but an exact id is always taken
    assert resolve_run_id(env, "e21088ed-b75a") == "e21088ed-b75a"
    assert resolve_run_id(env, "e21088ed-b75b") == "e21088ed-b75b"
    assert resolve_run_id(env, " e21088ed-b75a ") == "e21088ed-b75a"
    assert resolve_run_id(env, "abc") == "abc"
    with pytest.raises(AmbiguousRunId) as ambiguous:
        resolve_run_id(env, "e210")
    assert ambiguous.value.candidates == ["e21088ed-b75a", "e21088ed-b75b"]
    with pytest.raises(RunIdTooShort, match=f"at least {MIN_PREFIX}"):
        resolve_run_id(env, "e21")
    with pytest.raises(NotFound, match="ffff"):
        resolve_run_id(env, "ffff")


def test_an_ambiguity_names_ten_candidates_and_says_there_are_more(env):
    for i in range(12):
        _run(env, f"same-{i:02d}")
    with pytest.raises(AmbiguousRunId) as ambiguous:
        resolve_run_id(env, "same")
    assert len(ambiguous.value.candidates) == 10 and "more than 10 runs" in str(ambiguous.value)


def test_the_prefix_query_is_a_range_on_the_id_not_a_regex(env, monkeypatch):
    queries = []
    real_find = type(env.runs).find

    def spy(self, filter=None, *args, **kwargs):
        queries.append(filter)
        return real_find(self, filter, *args, **kwargs)

    _run(env, "range-1")
    monkeypatch.setattr(type(env.runs), "find", spy)
    assert resolve_run_id(env, "rang") == "range-1"
    assert {"_id": {"$gte": "rang", "$lt": "rang\uffff"}} in queries
    assert not any("$regex" in json.dumps(q) for q in queries)


@pytest.mark.parametrize("command, status, extra", [
    ("show", "QUEUED", []), ("tail", "AWAITING_HUMAN", []), ("cancel", "QUEUED", []), ("retry", "FAILED", []),
    ("review", "AWAITING_HUMAN", ["--accept"]),
])
def test_every_command_that_takes_a_run_takes_a_prefix(env, command, status, extra):
    run_id = _run(env, "7f3e9a11-2222-4333-8444-555566667777", status)
    _run(env, "7f3e0000-aaaa-4bbb-8ccc-dddd00000000", status)
    result = invoke("--json", command, "7f3e9", *extra)
    assert result.exit_code == 0, result.output
    if command != "tail":
        assert json.loads(result.stdout)["_id"] == run_id
    if command in ("cancel", "retry", "review"):
        assert env.runs.find_one({"_id": run_id})["status"] != status, "the run the prefix names was acted on"

    ambiguous = invoke(command, "7f3e", *extra)
    assert ambiguous.exit_code == 2
    assert "7f3e0000-aaaa-4bbb-8ccc-dddd00000000" in ambiguous.stderr and run_id in ambiguous.stderr
    short = invoke(command, "7f3", *extra)
    assert short.exit_code == 2 and "too short" in short.stderr and "at least 4" in short.stderr
    unknown = invoke(command, "0000", *extra)
    assert unknown.exit_code == 3 and "no run with id '0000'" in unknown.stderr
    assert (env.runs.find_one({"_id": "7f3e0000-aaaa-4bbb-8ccc-dddd00000000"}) or {})["status"] == status, \
        "nothing done to a run an ambiguous prefix also named"


def test_the_help_says_a_prefix_will_do():
    assert "prefix" in invoke("--help").output
    assert "RUN" in invoke("show", "--help").output


def test_a_created_run_has_a_string_id(env):
    _, run_id = create_hypothesis_and_run(env, "t", "i")
    assert isinstance(run_id, str) and len(run_id) == 36 and env.runs.find_one({"_id": run_id})["createdAt"] <= utcnow()
