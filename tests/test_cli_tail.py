"""`manage-runs tail` says how the run ended with its exit code: 0 for a result to review or a
validated one, 6 for a run that ended without one, 7 when its --timeout passed first."""

from __future__ import annotations

import threading
import time

import pytest
from click.testing import CliRunner

from ops.cli import main
from orchestrator.runs import create_hypothesis_and_run


@pytest.fixture
def env(cli_db):
    return cli_db


def tail(*args: str):
    return CliRunner().invoke(main, ["tail", *args, "--interval", "0.05"])


def _ended(db, status: str, **fields) -> str:
    run_id = create_hypothesis_and_run(db, "t", "i")[1]
    db.runs.update_one({"_id": run_id}, {"$set": {"status": status, **fields}})
    return run_id


def test_a_failed_run_exits_6_with_its_error_in_one_line(env):
    run_id = _ended(env, "FAILED", error={"code": "Timeout", "message": "Stage_2 ran past 7200 s", "retryable": True})
    result = tail(run_id)
    assert result.exit_code == 6
    assert result.stderr.strip() == f"run {run_id} FAILED: Timeout: Stage_2 ran past 7200 s"


def test_a_canceled_run_exits_6_naming_who_and_why(env):
    run_id = _ended(env, "CANCELED", cancel={"by": "alice", "reason": "typo in the idea"})
    result = tail(run_id)
    assert result.exit_code == 6 and result.stderr.strip() == f"run {run_id} CANCELED: by alice: typo in the idea"


def test_a_rejected_result_exits_6_with_the_review_notes(env):
    run_id = _ended(env, "HUMAN_REJECTED", review={"decision": "reject", "by": "bob", "notes": "no baseline"})
    result = tail(run_id)
    assert result.exit_code == 6 and result.stderr.strip() == f"run {run_id} HUMAN_REJECTED: by bob: no baseline"


@pytest.mark.parametrize("status", ["AWAITING_HUMAN", "HUMAN_VALIDATED"])
def test_a_result_exits_0_and_says_nothing_on_stderr(env, status):
    result = tail(_ended(env, status))
    assert result.exit_code == 0 and result.stderr == ""


def test_a_timeout_exits_7_naming_the_status_the_run_is_still_in(env):
    run_id = _ended(env, "RUNNING")
    began = time.monotonic()
    result = tail(run_id, "--timeout", "0.3")
    assert result.exit_code == 7 and time.monotonic() - began < 5
    assert result.stderr.strip() == f"gave up after 0.3 s; run {run_id} is still RUNNING"


def test_tail_follows_a_run_until_it_fails(env):
    run_id = _ended(env, "RUNNING")
    threading.Timer(0.3, lambda: env.runs.update_one(
        {"_id": run_id}, {"$set": {"status": "FAILED", "error": {"code": "PipelineError", "message": "boom"}}})).start()
    result = tail(run_id, "--timeout", "10", "--json")
    assert result.exit_code == 6 and "PipelineError: boom" in result.stderr
