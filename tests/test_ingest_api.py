"""Read API on the unit lane: mongomock and Flask's test client."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId
from flask import Flask
from flask.testing import FlaskClient

from ingest_app.problem import RETRY_AFTER_S
from orchestrator import run_list, serialize
from orchestrator.runs import create_hypothesis_and_run
from orchestrator.storage import storage_from_settings
from tests.api_helpers import AUTH, T0, assert_problem, build_app, insert_events, insert_run, page_through
from tests.fakes import DownDb, EscapingStorage, FakeStorage
from tests.helpers import make_settings

# --- helpers shared with the probe and real-server tests (no test_ names, so not collected twice) ---


@pytest.fixture
def storage() -> FakeStorage:
    return FakeStorage()


@pytest.fixture
def app(mock_db: Any, storage: FakeStorage, tmp_path: Path) -> Flask:
    return build_app(mock_db, storage=storage, settings=make_settings(ARTIFACT_DIR=str(tmp_path)))


@pytest.fixture
def client(app: Flask) -> Iterator[FlaskClient]:
    with app.test_client() as test_client:
        yield test_client


# --- GET /api/runs ---


def test_runs_are_listed_newest_first_with_rfc3339_times(client: FlaskClient, mock_db: Any) -> None:
    old = insert_run(mock_db, created=T0)
    new = insert_run(mock_db, created=T0 + timedelta(seconds=1))
    body = client.get("/api/runs").json
    assert [run["_id"] for run in body["runs"]] == [new, old]
    assert body["runs"][1]["createdAt"] == "2026-01-02T03:04:05.678Z"
    assert body["nextCursor"] is None


def test_pages_cover_every_run_once_even_when_created_at_ties(client: FlaskClient, mock_db: Any) -> None:
    ids = [insert_run(mock_db, created=T0 + timedelta(seconds=i // 4)) for i in range(23)]
    pages = page_through(client, "limit=5")
    assert [len(page) for page in pages] == [5, 5, 5, 5, 3]
    flat = [run_id for page in pages for run_id in page]
    expected = sorted(ids, key=lambda i: (ids.index(i) // 4, i), reverse=True)
    assert flat == expected


def test_a_run_created_while_paging_does_not_shift_later_pages(client: FlaskClient, mock_db: Any) -> None:
    ids = [insert_run(mock_db, created=T0 + timedelta(seconds=i)) for i in range(6)]
    first = client.get("/api/runs?limit=3").json
    insert_run(mock_db, created=T0 + timedelta(seconds=100))
    second = client.get(f"/api/runs?limit=3&cursor={first['nextCursor']}").json
    assert [r["_id"] for r in first["runs"] + second["runs"]] == ids[::-1]


def test_runs_without_created_at_come_last_and_still_page(client: FlaskClient, mock_db: Any) -> None:
    dated = [insert_run(mock_db, created=T0 + timedelta(seconds=i)) for i in range(3)]
    undated = [insert_run(mock_db, created=None, run_id=f"u{i}") for i in range(3)]
    flat = [run_id for page in page_through(client, "limit=2") for run_id in page]
    assert flat == dated[::-1] + sorted(undated, reverse=True)


def test_status_filter_takes_one_status_or_a_comma_list(client: FlaskClient, mock_db: Any) -> None:
    queued = insert_run(mock_db, status="QUEUED")
    running = insert_run(mock_db, status="RUNNING", created=T0 + timedelta(seconds=1))
    insert_run(mock_db, status="FAILED", created=T0 + timedelta(seconds=2))
    assert [r["_id"] for r in client.get("/api/runs?status=QUEUED").json["runs"]] == [queued]
    both = client.get("/api/runs?status=RUNNING,QUEUED").json["runs"]
    assert [r["_id"] for r in both] == [running, queued]


def test_status_filter_pages_within_the_filter(client: FlaskClient, mock_db: Any) -> None:
    failed = [insert_run(mock_db, status="FAILED", created=T0 + timedelta(seconds=i)) for i in range(0, 14, 2)]
    for i in range(1, 14, 2):
        insert_run(mock_db, status="RUNNING", created=T0 + timedelta(seconds=i))
    pages = page_through(client, "status=FAILED&limit=3")
    assert [run_id for page in pages for run_id in page] == failed[::-1]


def test_an_unknown_status_is_a_400_naming_the_value(client: FlaskClient) -> None:
    body = assert_problem(client.get("/api/runs?status=RUNNING,DONE"), 400, "status", "'DONE'", "QUEUED")
    assert list(body["errors"]) == ["status"]


@pytest.mark.parametrize("limit", ["0", "201", "ten", "-1"])
def test_a_limit_outside_1_to_200_is_a_400_naming_limit(client: FlaskClient, limit: str) -> None:
    assert_problem(client.get(f"/api/runs?limit={limit}"), 400, "limit", limit)


@pytest.mark.parametrize("cursor", ["garbage!", "bm90IGpzb24", "WzEsMl0", "WyJ4IiwiYSIsInN0ciJd"])
def test_a_cursor_this_api_did_not_issue_is_a_400_naming_cursor(client: FlaskClient, cursor: str) -> None:
    assert_problem(client.get(f"/api/runs?cursor={cursor}"), 400, "cursor")


def test_a_cursor_round_trips_an_object_id_and_every_microsecond() -> None:
    oid, created = ObjectId(), T0 + timedelta(microseconds=9)
    assert run_list.decode_cursor(run_list.encode_cursor({"_id": oid, "createdAt": created})) == (created, oid)


# --- GET /api/runs/<id> ---


def _populate_run(db: Any) -> tuple[str, str, ObjectId]:
    hypothesis_id, run_id = create_hypothesis_and_run(db, "Grokking", "Does weight decay cause it?")
    db.runs.update_one({"_id": run_id}, {"$set": {"metrics": {"loss": 0.5}}})
    for name, index in (("Stage_2", 2), ("ideation", 0), ("Stage_1", 1)):
        db.stages.insert_one({"_id": f"{run_id}:{name}", "runId": run_id, "index": index, "name": name,
                              "status": "COMPLETED", "startedAt": T0})
    artifact_id = db.artifacts.insert_one({"runId": run_id, "key": f"runs/{run_id}/paper.pdf", "bytes": 3,
                                           "contentType": "application/pdf", "kind": "paper", "createdAt": T0}).inserted_id
    db.validations.insert_one({"runId": run_id, "kind": "auto", "verdict": "fail", "createdAt": T0})
    db.validations.insert_one({"runId": run_id, "kind": "human", "verdict": "pass", "createdAt": T0 + timedelta(hours=1)})
    db.validations.insert_one({"runId": "other", "kind": "human", "verdict": "fail", "createdAt": T0 + timedelta(hours=2)})
    return hypothesis_id, run_id, artifact_id


def test_one_run_comes_with_stages_artifacts_latest_validation_and_hypothesis(client: FlaskClient, mock_db: Any) -> None:
    hypothesis_id, run_id, artifact_id = _populate_run(mock_db)
    body = client.get(f"/api/runs/{run_id}").json
    assert body["_id"] == run_id and body["status"] == "QUEUED"
    assert body["metrics"] == {"loss": 0.5}
    assert [s["name"] for s in body["stages"]] == ["ideation", "Stage_1", "Stage_2"]
    assert body["stages"][0]["startedAt"] == "2026-01-02T03:04:05.678Z"
    assert body["artifacts"][0]["_id"] == str(artifact_id)
    assert body["artifacts"][0]["downloadUrl"] == f"/api/runs/{run_id}/artifacts/{artifact_id}/download"
    assert body["validation"]["verdict"] == "pass" and body["validation"]["kind"] == "human"
    assert body["hypothesis"]["_id"] == hypothesis_id and body["hypothesis"]["title"] == "Grokking"
    assert body["recentEvents"] == []


def test_a_run_with_nothing_yet_has_empty_parts(client: FlaskClient, mock_db: Any) -> None:
    run_id = insert_run(mock_db)
    body = client.get(f"/api/runs/{run_id}").json
    assert (body["stages"], body["artifacts"], body["validation"], body["hypothesis"]) == ([], [], None, None)


def test_an_unknown_run_is_a_404_problem(client: FlaskClient) -> None:
    assert_problem(client.get("/api/runs/nope"), 404, "'nope'")


# --- GET /api/runs/<id>/events ---


def test_events_after_a_seq_come_in_seq_order_with_last_seq_and_status(client: FlaskClient, mock_db: Any) -> None:
    run_id = insert_run(mock_db, status="RUNNING")
    insert_events(mock_db, run_id, [3, 1, 2, 5, 4])
    insert_events(mock_db, "other-run", [6])
    body = client.get(f"/api/runs/{run_id}/events?after_seq=2").json
    assert [e["seq"] for e in body["events"]] == [3, 4, 5]
    assert body["events"][0]["time"] == "2026-01-02T03:04:05.678Z"
    assert (body["lastSeq"], body["status"], body["hasMore"], body["runId"]) == (5, "RUNNING", False, run_id)


def test_a_tail_from_the_start_sees_every_event_once_even_with_shared_seqs(client: FlaskClient, mock_db: Any) -> None:
    run_id = insert_run(mock_db, status="RUNNING")
    seqs = [0, 0, 1, 2, 2, 2, 3, 4, 5, 5, 6]
    insert_events(mock_db, run_id, seqs)
    seen: list[str] = []
    after = None
    for _ in range(20):
        query = "limit=3" + (f"&after_seq={after}" if after is not None else "")
        body = client.get(f"/api/runs/{run_id}/events?{query}").json
        seen += [e["_id"] for e in body["events"]]
        after = body["lastSeq"]
        if not body["hasMore"]:
            break
    assert sorted(seen) == sorted(f"{run_id}-e{n:03d}" for n in range(len(seqs)))
    assert len(seen) == len(set(seen))


def test_an_empty_poll_echoes_after_seq_as_last_seq(client: FlaskClient, mock_db: Any) -> None:
    run_id = insert_run(mock_db, status="CANCELED")
    body = client.get(f"/api/runs/{run_id}/events?after_seq=7").json
    assert (body["events"], body["lastSeq"], body["status"]) == ([], 7, "CANCELED")


def test_events_of_an_unknown_run_are_a_404(client: FlaskClient) -> None:
    assert_problem(client.get("/api/runs/nope/events"), 404, "'nope'")


@pytest.mark.parametrize("query, field", [("after_seq=x", "after_seq"), ("limit=1001", "limit"), ("limit=0", "limit")])
def test_bad_event_parameters_are_a_400_naming_them(client: FlaskClient, mock_db: Any, query: str, field: str) -> None:
    run_id = insert_run(mock_db)
    body = assert_problem(client.get(f"/api/runs/{run_id}/events?{query}"), 400, field)
    assert list(body["errors"]) == [field]


# --- POST /api/hypotheses ---


def test_posting_a_hypothesis_creates_it_and_a_queued_run(client: FlaskClient, mock_db: Any) -> None:
    response = client.post("/api/hypotheses", headers=AUTH, json={
        "title": "Grokking", "idea": "weight decay", "ideaJson": {"Name": "grok"}, "priority": 9,
        "pipeline": "ai_scientist", "queue": "gpu-a100", "maxAttempts": 2,
        "limits": {"runS": 86400, "stepS": {"Stage_2": 7200}},
    })
    assert response.status_code == 201, response.json
    run_id = response.json["runId"]
    assert response.headers["Location"].endswith(f"/api/runs/{run_id}")
    run = mock_db.runs.find_one({"_id": run_id})
    assert (run["status"], run["priority"], run["queue"], run["pipeline"], run["maxAttempts"]) == (
        "QUEUED", 9, "gpu-a100", "ai_scientist", 2)
    hypothesis = mock_db.hypotheses.find_one({"_id": response.json["hypothesisId"]})
    assert hypothesis["ideaJson"] == {"Name": "grok"} and run["hypothesisId"] == hypothesis["_id"]
    assert run["limits"] == {"runS": 86400.0, "stepS": {"Stage_2": 7200.0}}


def test_a_hypothesis_gets_defaults_and_max_attempts_from_settings(mock_db: Any) -> None:
    app = build_app(mock_db, settings=make_settings(MAX_ATTEMPTS="7"))
    response = app.test_client().post("/api/hypotheses", headers=AUTH, json={"title": "t", "idea": "i"})
    run = mock_db.runs.find_one({"_id": response.json["runId"]})
    assert (run["priority"], run["queue"], run["pipeline"], run["maxAttempts"]) == (5, "gpu", "demo", 7)


@pytest.mark.parametrize("body, field, reason", [
    ({"idea": "i"}, "title", "required"),
    ({"title": "  ", "idea": "i"}, "title", "blank"),
    ({"title": "t", "idea": "i", "priority": 10}, "priority", "less than or equal to 9"),
    ({"title": "t", "idea": "i", "priority": "5"}, "priority", "integer"),
    ({"title": "t", "idea": "i", "maxAttempts": 0}, "maxAttempts", "greater"),
    ({"title": "t", "idea": "i", "queue": "a b"}, "queue", "letters, digits"),
    ({"title": "t", "idea": "i", "ideaJson": [1]}, "ideaJson", "mapping"),
    ({"title": "t", "idea": "i", "maxAttempt": 2}, "maxAttempt", "Unknown"),
    ({"title": "t", "idea": "i", "limits": {"runS": -1}}, "limits", "limits.runS must be a positive number"),
    ({"title": "t", "idea": "i", "limits": {"stepS": {"Stage_9": 5}}}, "limits", "limits.stepS.Stage_9: not a step"),
    ({"title": "t", "idea": "i", "limits": {"hours": 5}}, "limits", "runS and/or stepS"),
])
def test_an_invalid_hypothesis_is_a_422_naming_the_field_and_reason(client: FlaskClient, mock_db: Any, body: dict[str, Any], field: str, reason: str) -> None:
    problem_body = assert_problem(client.post("/api/hypotheses", headers=AUTH, json=body), 422, field)
    assert reason.lower() in " ".join(problem_body["errors"][field]).lower()
    assert mock_db.runs.count_documents({}) == 0


@pytest.mark.parametrize("data, content_type, status, words", [
    ("{not json", "application/json", 400, ["body", "JSON"]),
    ("[1, 2]", "application/json", 400, ["body", "object"]),
    ("", "application/json", 400, ["body"]),
    ('{"title": "t"}', "text/plain", 415, ["body", "text/plain"]),
])
def test_a_body_that_is_not_a_json_object_is_refused_naming_body(client: FlaskClient, data: str, content_type: str, status: int, words: list[str]) -> None:
    response = client.post("/api/hypotheses", headers=AUTH, data=data, content_type=content_type)
    assert_problem(response, status, *words)


def test_a_body_over_the_size_limit_is_a_413(mock_db: Any) -> None:
    client = build_app(mock_db, settings=make_settings(INGEST_MAX_BODY_BYTES="100")).test_client()
    response = client.post("/api/hypotheses", headers=AUTH, json={"title": "t", "idea": "x" * 200})
    assert_problem(response, 413)
    assert mock_db.runs.count_documents({}) == 0


# --- auth on mutating routes ---


@pytest.mark.parametrize("path", ["/api/hypotheses", "/api/runs/r/cancel", "/api/runs/r/retry"])
def test_mutating_routes_need_the_bearer_token(client: FlaskClient, path: str) -> None:
    del client.environ_base["HTTP_AUTHORIZATION"]
    missing = client.post(path, json={})
    assert_problem(missing, 401, "Bearer")
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert_problem(client.post(path, json={}, headers={"Authorization": "Bearer wrong"}), 403)
    assert_problem(client.post(path, json={}, headers={"Authorization": "Basic dGVzdC10b2tlbg=="}), 401)


def test_with_ingest_auth_disabled_writes_need_no_token(mock_db: Any) -> None:
    app = build_app(mock_db, settings=make_settings(INGEST_AUTH="disabled", INGEST_TOKEN=""))
    response = app.test_client().post("/api/hypotheses", json={"title": "t", "idea": "i"})
    assert response.status_code == 201


# --- cancel and retry ---


def test_cancelling_a_queued_run_cancels_it_and_records_who(client: FlaskClient, mock_db: Any) -> None:
    run_id = insert_run(mock_db)
    response = client.post(f"/api/runs/{run_id}/cancel", headers=AUTH, json={"by": "ada", "reason": "wrong idea"})
    assert response.status_code == 200, response.json
    assert response.json["status"] == "CANCELED"
    assert response.json["cancel"] == {"by": "ada", "reason": "wrong idea"}
    assert response.json["finishedAt"].endswith("Z")


def test_cancelling_a_running_run_asks_the_worker_and_needs_no_body(client: FlaskClient, mock_db: Any) -> None:
    run_id = insert_run(mock_db, status="RUNNING")
    response = client.post(f"/api/runs/{run_id}/cancel", headers=AUTH)
    assert response.status_code == 200
    assert (response.json["status"], response.json["cancelRequested"]) == ("RUNNING", True)


def test_cancelling_an_ended_run_is_a_409_with_the_reason(client: FlaskClient, mock_db: Any) -> None:
    run_id = insert_run(mock_db, status="CANCELED")
    assert_problem(client.post(f"/api/runs/{run_id}/cancel", headers=AUTH), 409, "CANCELED", "nothing to cancel")


def test_a_cancel_body_with_an_unknown_field_is_a_422(client: FlaskClient, mock_db: Any) -> None:
    run_id = insert_run(mock_db)
    assert_problem(client.post(f"/api/runs/{run_id}/cancel", headers=AUTH, json={"who": "x"}), 422, "who")
    assert mock_db.runs.find_one({"_id": run_id})["status"] == "QUEUED"


def test_retrying_a_canceled_run_queues_it_again(client: FlaskClient, mock_db: Any) -> None:
    run_id = insert_run(mock_db, status="FAILED", attempt=3, maxAttempts=3, error={"code": "OOM"})
    response = client.post(f"/api/runs/{run_id}/retry", headers=AUTH)
    assert response.status_code == 200, response.json
    assert (response.json["status"], response.json["attempt"], response.json["maxAttempts"]) == ("QUEUED", 3, 4)
    assert "error" not in response.json


def test_retrying_a_queued_run_is_a_409(client: FlaskClient, mock_db: Any) -> None:
    run_id = insert_run(mock_db)
    assert_problem(client.post(f"/api/runs/{run_id}/retry", headers=AUTH), 409, "QUEUED")


@pytest.mark.parametrize("action", ["cancel", "retry"])
def test_acting_on_an_unknown_run_is_a_404(client: FlaskClient, action: str) -> None:
    assert_problem(client.post(f"/api/runs/nope/{action}", headers=AUTH), 404, "'nope'")


# --- artifact downloads ---


def _artifact(db: Any, run_id: str, key: str, **fields: Any) -> Any:
    return db.artifacts.insert_one({"runId": run_id, "key": key, "bytes": 5, "contentType": "text/plain",
                                    "kind": "log", "createdAt": T0, **fields}).inserted_id


def test_a_download_redirects_to_the_presigned_url(client: FlaskClient, mock_db: Any, storage: FakeStorage) -> None:
    run_id = insert_run(mock_db)
    artifact_id = _artifact(mock_db, run_id, f"runs/{run_id}/log.txt")
    response = client.get(f"/api/runs/{run_id}/artifacts/{artifact_id}/download")
    assert response.status_code == 302
    assert response.headers["Location"].startswith(f"https://minio.test/ai-scientist/runs/{run_id}/log.txt?")
    assert storage.keys == [f"runs/{run_id}/log.txt"]


def test_an_artifact_with_a_string_id_downloads_too(client: FlaskClient, mock_db: Any) -> None:
    run_id = insert_run(mock_db)
    _artifact(mock_db, run_id, "k", _id="art-1")
    assert client.get(f"/api/runs/{run_id}/artifacts/art-1/download").status_code == 302


def test_an_artifact_of_another_run_or_unknown_is_a_404(client: FlaskClient, mock_db: Any, storage: FakeStorage) -> None:
    run_id, other = insert_run(mock_db), insert_run(mock_db)
    artifact_id = _artifact(mock_db, other, "k")
    assert_problem(client.get(f"/api/runs/{run_id}/artifacts/{artifact_id}/download"), 404, str(artifact_id))
    assert_problem(client.get(f"/api/runs/{run_id}/artifacts/{ObjectId()}/download"), 404)
    assert storage.keys == []


def test_a_download_without_storage_is_a_503(mock_db: Any) -> None:
    run_id = insert_run(mock_db)
    artifact_id = _artifact(mock_db, run_id, "k")
    response = build_app(mock_db, storage=None).test_client().get(f"/api/runs/{run_id}/artifacts/{artifact_id}/download")
    assert_problem(response, 503, "storage")


def _local_client(db: Any, root: Path, storage: Any = None) -> FlaskClient:
    settings = make_settings(ARTIFACT_DIR=str(root))
    return build_app(db, storage=storage or storage_from_settings(settings), settings=settings).test_client()


def test_local_storage_files_are_served_by_the_app(mock_db: Any, tmp_path: Path) -> None:
    run_id = insert_run(mock_db)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "log.txt").write_text("hello")
    artifact_id = _artifact(mock_db, run_id, "runs/log.txt")
    response = _local_client(mock_db, tmp_path).get(f"/api/runs/{run_id}/artifacts/{artifact_id}/download")
    try:
        assert response.status_code == 200
        assert response.get_data() == b"hello"
        assert response.mimetype == "text/plain"
        assert "log.txt" in response.headers["Content-Disposition"]
    finally:
        response.close()


def test_a_local_key_that_escapes_the_artifact_dir_is_refused(mock_db: Any, tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    root.mkdir()
    (tmp_path / "secret").write_text("no")
    run_id = insert_run(mock_db)
    url = f"/api/runs/{run_id}/artifacts/{_artifact(mock_db, run_id, '../secret')}/download"
    assert_problem(_local_client(mock_db, root).get(url), 502, "'../secret'", "plain segments")
    assert_problem(_local_client(mock_db, root, EscapingStorage(root)).get(url), 403, "ARTIFACT_DIR")


def test_a_local_artifact_whose_file_is_gone_is_a_404(mock_db: Any, tmp_path: Path) -> None:
    run_id = insert_run(mock_db)
    artifact_id = _artifact(mock_db, run_id, "runs/gone.txt")
    response = _local_client(mock_db, tmp_path).get(f"/api/runs/{run_id}/artifacts/{artifact_id}/download")
    assert_problem(response, 404, "missing")


# --- database outage ---


@pytest.mark.parametrize("method, path", [
    ("GET", "/api/runs"), ("GET", "/api/runs/r"), ("GET", "/api/runs/r/events"),
    ("POST", "/api/runs/r/cancel"), ("POST", "/api/runs/r/retry"), ("GET", "/api/runs/r/artifacts/a/download"),
])
def test_an_unreachable_database_is_a_503_with_retry_after(method: str, path: str) -> None:
    client = build_app(DownDb(), storage=FakeStorage()).test_client()
    response = client.open(path, method=method, headers=AUTH)
    assert_problem(response, 503, "database")
    assert response.headers["Retry-After"] == str(RETRY_AFTER_S)


def test_an_unreachable_database_fails_a_create_with_a_503(mock_db: Any) -> None:
    client = build_app(DownDb()).test_client()
    response = client.post("/api/hypotheses", headers=AUTH, json={"title": "t", "idea": "i"})
    assert_problem(response, 503)


# --- orchestrator.serialize, as the API uses it ---


def test_documents_serialize_with_utc_z_times_and_string_ids() -> None:
    naive = datetime(2026, 1, 2, 3, 4, 5, 678901)
    plus_two = datetime(2026, 1, 2, 5, 4, 5, 678000, tzinfo=timezone(timedelta(hours=2)))
    oid = ObjectId()
    doc = {"_id": oid, "createdAt": naive, "nested": {"at": [plus_two]}, "metrics": {"loss": 0.5}, "n": None}
    assert serialize.jsonable(doc) == {
        "_id": str(oid), "createdAt": "2026-01-02T03:04:05.678Z",
        "nested": {"at": ["2026-01-02T03:04:05.678Z"]}, "metrics": {"loss": 0.5}, "n": None,
    }
