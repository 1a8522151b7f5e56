"""A person's review of a run in AWAITING_HUMAN: the core's one writer, the API route and the
`manage-runs review` command."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from ops.cli import main
from orchestrator import status_history
from orchestrator.errors import TransitionError
from orchestrator.runs import review_run
from orchestrator.statuses import TERMINAL, RunStatus, can_transition
from tests.api_helpers import AUTH, assert_problem, build_app
from tests.console_helpers import run_with_history
from tests.helpers import WORKER_TOKEN, bearer
from tests.ingest_helpers import T0, insert_run


def test_rejected_is_reached_only_from_awaiting_human_and_ends_the_run() -> None:
    assert RunStatus.HUMAN_REJECTED in TERMINAL
    assert [s for s in RunStatus if can_transition(s, RunStatus.HUMAN_REJECTED)] == [RunStatus.AWAITING_HUMAN]
    assert not any(can_transition(RunStatus.HUMAN_REJECTED, s) for s in RunStatus)


def test_accepting_records_the_review_a_human_validation_and_the_history(mock_db: Any) -> None:
    run_id = run_with_history(mock_db)
    run = review_run(mock_db, run_id, "accept", by="carol", notes="solid")
    assert run["status"] == "HUMAN_VALIDATED" and run["finishedAt"] == run["review"]["at"]
    assert {k: run["review"][k] for k in ("decision", "by", "notes")} == {"decision": "accept", "by": "carol", "notes": "solid"}
    human = mock_db.validations.find_one({"runId": run_id, "kind": "human"})
    assert human["verdict"] == "pass" and human["by"] == "carol"
    last = status_history.of_run(mock_db, run_id)[-1]
    assert (last["from"], last["to"], last["by"]) == ("AWAITING_HUMAN", "HUMAN_VALIDATED", "carol")
    assert mock_db.events.find_one({"runId": run_id, "data.message": "carol accepted the result: run HUMAN_VALIDATED"})


def test_rejecting_records_a_failing_human_verdict(mock_db: Any) -> None:
    run_id = run_with_history(mock_db)
    assert review_run(mock_db, run_id, "reject", by="dan", notes="no ablation")["status"] == "HUMAN_REJECTED"
    assert mock_db.validations.find_one({"runId": run_id, "kind": "human"})["verdict"] == "fail"


def test_a_second_review_is_refused_and_changes_nothing(mock_db: Any) -> None:
    run_id = run_with_history(mock_db)
    review_run(mock_db, run_id, "accept", by="carol")
    with pytest.raises(TransitionError, match="only a run in AWAITING_HUMAN"):
        review_run(mock_db, run_id, "reject", by="dan", notes="late")
    assert mock_db.runs.find_one({"_id": run_id})["review"]["by"] == "carol"


def test_a_review_cut_off_before_its_status_write_is_completed_by_the_next_try(mock_db: Any) -> None:
    run_id = run_with_history(mock_db)
    # The database died after the decision's record and before the status write.
    mock_db.validations.insert_one({"_id": f"{run_id}~human", "runId": run_id, "kind": "human", "decision": "reject",
                                    "by": "carol", "notes": "weak", "verdict": "fail", "createdAt": T0})
    with pytest.raises(TransitionError, match="already reviewed: carol chose reject"):
        review_run(mock_db, run_id, "accept", by="dan")
    run = mock_db.runs.find_one({"_id": run_id})
    assert run["status"] == "HUMAN_REJECTED" and run["review"]["by"] == "carol"


def test_an_unknown_decision_is_a_value_error(mock_db: Any) -> None:
    with pytest.raises(ValueError, match="'accept' or 'reject'"):
        review_run(mock_db, run_with_history(mock_db), "maybe", by="x")


# --- the API ----------------------------------------------------------------------------------


def test_the_api_reviews_with_an_operator_token_and_refuses_a_reader_and_a_worker(mock_db: Any) -> None:
    run_id = run_with_history(mock_db)
    client = build_app(mock_db).test_client()
    body = {"decision": "accept", "notes": "ok"}
    assert client.post(f"/api/runs/{run_id}/review", json=body).status_code == 403  # the reader it reads as
    assert client.post(f"/api/runs/{run_id}/review", json=body, headers=bearer(WORKER_TOKEN)).status_code == 403
    response = client.post(f"/api/runs/{run_id}/review", json=body, headers=AUTH)
    assert response.status_code == 200 and response.json["status"] == "HUMAN_VALIDATED"
    assert response.json["review"]["by"] == "api"


@pytest.mark.parametrize(("body", "field"), [
    ({"decision": "reject"}, "notes"),
    ({"decision": "reject", "notes": "   "}, "notes"),
    ({"decision": "yes"}, "decision"),
    ({}, "decision"),
    ({"decision": "accept", "extra": 1}, "extra"),
    ({"decision": "accept", "notes": "x" * 10_001}, "notes"),
])
def test_a_bad_review_body_is_a_422_naming_the_field(mock_db: Any, body: dict[str, Any], field: str) -> None:
    run_id = run_with_history(mock_db)
    response = build_app(mock_db).test_client().post(f"/api/runs/{run_id}/review", json=body, headers=AUTH)
    problem = assert_problem(response, 422)
    assert field in problem["errors"]
    assert mock_db.runs.find_one({"_id": run_id})["status"] == "AWAITING_HUMAN"


def test_the_api_answers_409_for_a_run_not_in_review_and_404_for_none(mock_db: Any) -> None:
    client = build_app(mock_db).test_client()
    running = insert_run(mock_db, status="RUNNING")
    assert_problem(client.post(f"/api/runs/{running}/review", json={"decision": "accept"}, headers=AUTH), 409, "AWAITING_HUMAN")
    assert_problem(client.post("/api/runs/nope/review", json={"decision": "accept"}, headers=AUTH), 404)


# --- the CLI ----------------------------------------------------------------------------------


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_manage_runs_review_accepts_with_notes_and_a_name(cli_db: Any) -> None:
    run_id = run_with_history(cli_db)
    code, out = _cli("--json", "review", run_id, "--accept", "--notes", "fine", "--by", "erin")
    assert code == 0, out
    assert json.loads(out)["status"] == "HUMAN_VALIDATED"
    assert cli_db.runs.find_one({"_id": run_id})["review"]["by"] == "erin"


def test_manage_runs_review_needs_a_decision_and_notes_to_reject(cli_db: Any) -> None:
    run_id = run_with_history(cli_db)
    assert _cli("review", run_id)[0] == 2
    code, out = _cli("review", run_id, "--reject")
    assert code == 2 and "--notes" in out
    assert cli_db.runs.find_one({"_id": run_id})["status"] == "AWAITING_HUMAN"


def test_manage_runs_review_of_a_running_run_exits_4(cli_db: Any) -> None:
    code, out = _cli("review", insert_run(cli_db, status="RUNNING"), "--accept")
    assert code == 4 and "AWAITING_HUMAN" in out


def test_after_a_review_the_run_still_shows_the_auto_validations_verdict_and_results(mock_db: Any) -> None:
    """The reviewer's record becomes the latest validation and carries no results: `show`, `tail`
    and the console read the auto-validation's for the measured outcome."""
    from ops.live import run_results
    from orchestrator.queries import run_detail

    run_id = run_with_history(mock_db)
    mock_db.validations.update_one({"runId": run_id, "kind": "auto"},
                                   {"$set": {"results": {"metric": "loss", "arms": [{"name": "a", "mean": 1, "stderr": 0.1, "n": 3}]}}})
    review_run(mock_db, run_id, "accept", by="carol", notes="solid")
    detail = run_detail(mock_db, run_id)
    assert detail["validation"]["kind"] == "human" and detail["autoValidation"]["kind"] == "auto"
    assert run_results(detail)["arms"][0]["name"] == "a"
