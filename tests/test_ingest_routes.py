"""The two ingest routes over Flask's test client on mongomock: modes, limits, every rejection
path with its field path, batch results, duplicates, unknown runs and the database outage."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient
from pymongo.errors import AutoReconnect, OperationFailure, ServerSelectionTimeoutError

from orchestrator import seen_retention
from orchestrator.events import seq_for
from orchestrator.ingest import DUPLICATE
from tests.helpers import make_settings
from tests.ingest_helpers import (
    AUTH,
    BATCH_JSON,
    NDJSON,
    PROBLEM,
    SHA,
    STRUCTURED,
    Worker,
    full_run,
    ingest_app,
    insert_run,
    post_ndjson,
)


@pytest.fixture
def client(mock_db: Any) -> Iterator[FlaskClient]:
    yield ingest_app(mock_db).test_client()


@pytest.fixture
def run_id(mock_db: Any) -> str:
    return insert_run(mock_db)


def _log(run_id: str, n: int = 0) -> dict[str, Any]:
    return Worker(run_id, n=n).event("ai.run.log", level="info", message="m")


def _post_event(client: FlaskClient, event: Any, headers: dict[str, str] = STRUCTURED) -> Any:
    return client.post("/api/ingest/event", data=json.dumps(event), headers=headers)


# --- modes ----------------------------------------------------------------------------------------


def test_structured_event_is_accepted_with_201_then_answered_duplicate_with_200(
    client: FlaskClient, run_id: str, mock_db: Any
) -> None:
    event = _log(run_id)
    first, second = _post_event(client, event), _post_event(client, event)
    assert (first.status_code, first.json) == (201, {"id": event["id"], "status": "accepted"})
    assert (second.status_code, second.json) == (200, {"id": event["id"], "status": "duplicate"})
    assert mock_db.events.count_documents({}) == 1
    seen = mock_db.events_seen.find_one({"eventId": event["id"]})
    assert seen["source"] == "worker://pod-a"
    assert seen["bucket"] == seen_retention.bucket_of(seen["processedAt"])  # the hour the sweeper prunes it by


def test_plain_application_json_holding_a_structured_event_is_accepted(client: FlaskClient, run_id: str) -> None:
    response = _post_event(client, _log(run_id), {**AUTH, "Content-Type": "application/json; charset=utf-8"})
    assert response.status_code == 201


def test_binary_mode_takes_attributes_from_ce_headers_and_data_from_the_body(
    client: FlaskClient, run_id: str, mock_db: Any
) -> None:
    event = Worker(run_id).event("ai.run.stage_progress", stage="Stage_1", progress=0.5)
    headers = {
        **AUTH, "Content-Type": "application/json", "ce-specversion": "1.0", "ce-id": event["id"],
        "ce-source": "worker%3A%2F%2Fpod-a", "ce-type": event["type"], "ce-subject": event["subject"],
        "ce-time": event["time"], "ce-seq": str(event["seq"]),
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    }
    response = client.post("/api/ingest/event", data=json.dumps(event["data"]), headers=headers)
    assert response.status_code == 201, response.json
    record = mock_db.events.find_one({"eventId": event["id"]})
    assert record["source"] == "worker://pod-a" and record["seq"] == event["seq"]
    assert record["traceparent"].startswith("00-0af7")
    assert mock_db.stages.find_one({"_id": f"{run_id}:Stage_1"})["progress"] == 0.5


def test_binary_mode_with_a_non_integer_seq_names_the_attribute(client: FlaskClient, run_id: str) -> None:
    event = _log(run_id)
    headers = {**AUTH, "Content-Type": "application/json", **{f"ce-{k}": str(v) for k, v in event.items() if k != "data"}}
    headers["ce-seq"] = "seven"
    response = client.post("/api/ingest/event", data=json.dumps(event["data"]), headers=headers)
    assert response.status_code == 422 and "seq" in response.json["errors"]


def test_ndjson_batch_applies_every_line_and_ignores_blank_lines(
    client: FlaskClient, run_id: str, mock_db: Any
) -> None:
    events = full_run(Worker(run_id))
    body = "\n\n".join(json.dumps(e) for e in events) + "\n\n  \n"
    response = client.post("/api/ingest/events", data=body, headers=NDJSON)
    assert response.status_code == 200
    assert response.json["accepted"] == len(events) and response.json["invalid"] == 0
    assert [r["index"] for r in response.json["results"]] == list(range(len(events)))
    assert response.json["results"][1]["line"] == 3
    assert mock_db.events.count_documents({"runId": run_id}) == len(events)
    assert mock_db.runs.find_one({"_id": run_id})["status"] == "AWAITING_HUMAN"


def test_json_array_batch_is_the_cloudevents_batch_format(client: FlaskClient, run_id: str) -> None:
    events = [_log(run_id, n) for n in range(3)]
    response = client.post("/api/ingest/events", data=json.dumps(events), headers=BATCH_JSON)
    assert response.status_code == 200
    assert response.json["results"] == [{"index": i, "id": e["id"], "status": "accepted"} for i, e in enumerate(events)]


def test_an_empty_batch_is_valid_and_applies_nothing(client: FlaskClient) -> None:
    response = client.post("/api/ingest/events", data="[]", headers=BATCH_JSON)
    assert response.json == {"results": [], "accepted": 0, "duplicate": 0, "invalid": 0}


# --- batch results ----------------------------------------------------------------------------------


def test_valid_lines_are_applied_when_other_lines_are_invalid(client: FlaskClient, run_id: str, mock_db: Any) -> None:
    good = [_log(run_id, n) for n in range(2)]
    bad_progress = Worker(run_id, n=10).event("ai.run.stage_progress", stage="Stage_1", progress=1.5)
    response = post_ndjson(client, [good[0], "{not json", bad_progress, good[1], good[0]])
    body = response.json
    assert (body["accepted"], body["duplicate"], body["invalid"]) == (2, 1, 2)
    statuses = [(r["index"], r["status"]) for r in body["results"]]
    assert statuses == [(0, "accepted"), (1, "invalid"), (2, "invalid"), (3, "accepted"), (4, "duplicate")]
    assert "Line 2 is not valid JSON" in body["results"][1]["error"] and body["results"][1]["line"] == 2
    assert body["results"][2]["id"] == bad_progress["id"] and "data.progress" in body["results"][2]["errors"]
    assert mock_db.events.count_documents({}) == 2


def test_an_unknown_run_makes_its_event_invalid_and_others_still_apply(
    client: FlaskClient, run_id: str, mock_db: Any
) -> None:
    response = post_ndjson(client, [_log("no-such-run"), _log(run_id)])
    first, second = response.json["results"]
    assert first["status"] == "invalid" and "Unknown run 'no-such-run'" in first["errors"]["data.run_id"][0]
    assert second["status"] == "accepted"
    assert mock_db.events.count_documents({"runId": "no-such-run"}) == 0
    single = _post_event(client, _log("no-such-run", 5))
    assert single.status_code == 422 and single.mimetype == PROBLEM


def test_a_repeat_inside_one_batch_is_a_duplicate(client: FlaskClient, run_id: str) -> None:
    event = _log(run_id)
    response = client.post("/api/ingest/events", data=json.dumps([event, event]), headers=BATCH_JSON)
    assert [r["status"] for r in response.json["results"]] == ["accepted", DUPLICATE]


def test_dedup_is_on_source_and_id_together(client: FlaskClient, run_id: str, mock_db: Any) -> None:
    event = _log(run_id)
    other_source = {**event, "source": "worker://pod-b"}
    response = client.post("/api/ingest/events", data=json.dumps([event, other_source]), headers=BATCH_JSON)
    assert [r["status"] for r in response.json["results"]] == ["accepted", "accepted"]
    assert mock_db.events_seen.count_documents({"eventId": event["id"]}) == 2


# --- rejections, each naming its field --------------------------------------------------------------


def _variants(run_id: str) -> list[tuple[str, dict[str, Any], str]]:
    w = Worker(run_id)
    progress = w.event("ai.run.stage_progress", stage="Stage_1", progress=0.5)
    artifact = w.event("ai.artifact.registered", key="k", bytes=1, sha256=SHA, content_type="t", kind="k")
    failed = w.event("ai.run.failed", code="X", message="m", retryable=False)
    summary = w.event("ai.run.stage_completed", stage="Stage_1", summary={})
    return [
        ("unknown type", {**progress, "type": "ai.run.exploded"}, "type"),
        ("missing field", {**failed, "data": {k: v for k, v in failed["data"].items() if k != "code"}}, "data.code"),
        ("mistyped field", {**progress, "data": {**progress["data"], "progress": "half"}}, "data.progress"),
        ("progress above 1", {**progress, "data": {**progress["data"], "progress": 1.01}}, "data.progress"),
        ("negative bytes", {**artifact, "data": {**artifact["data"], "bytes": -1}}, "data.bytes"),
        ("bad sha256", {**artifact, "data": {**artifact["data"], "sha256": "xyz"}}, "data.sha256"),
        ("retryable not a boolean", {**failed, "data": {**failed["data"], "retryable": "yes"}}, "data.retryable"),
        ("unknown stage", {**progress, "data": {**progress["data"], "stage": "Stage_9"}}, "data.stage"),
        ("subject of another run", {**progress, "subject": "run/other"}, "subject"),
        ("seq zero", {**progress, "seq": 0}, "seq"),
        ("seq not an integer", {**progress, "seq": 1.5}, "seq"),
        ("missing seq", {k: v for k, v in progress.items() if k != "seq"}, "seq"),
        ("time not RFC 3339", {**progress, "time": "yesterday"}, "time"),
        ("wrong specversion", {**progress, "specversion": "0.3"}, "specversion"),
        ("missing id", {k: v for k, v in progress.items() if k != "id"}, "id"),
        ("bad extension name", {**progress, "Bad_Ext": 1}, "Bad_Ext"),
        ("bad traceparent", {**progress, "traceparent": "nope"}, "traceparent"),
        ("dotted key in a summary", {**summary, "data": {**summary["data"], "summary": {"a.b": 1}}}, "data.summary"),
        ("nested array in a summary", {**summary, "data": {**summary["data"], "summary": {"m": [[1, 2]]}}}, "data.summary.m.0"),
    ]


def test_every_rejection_names_the_field_path_and_changes_nothing(
    client: FlaskClient, run_id: str, mock_db: Any
) -> None:
    for name, event, path in _variants(run_id):
        response = _post_event(client, event)
        assert response.status_code == 422, name
        assert response.mimetype == PROBLEM and response.json["status"] == 422, name
        assert path in response.json["errors"], (name, response.json["errors"])
    assert mock_db.events.count_documents({}) == 0 and mock_db.stages.count_documents({}) == 0
    assert mock_db.events_seen.count_documents({}) == 0


def test_an_event_that_is_not_an_object_is_invalid(client: FlaskClient) -> None:
    response = client.post("/api/ingest/events", data='[1, "x"]', headers=BATCH_JSON)
    assert [r["errors"] for r in response.json["results"]] == [{"event": ["Must be a JSON object."]}] * 2


# --- whole-request errors ---------------------------------------------------------------------------


def test_wrong_content_type_is_415_naming_what_is_accepted(client: FlaskClient, run_id: str) -> None:
    response = client.post("/api/ingest/event", data="x", headers={**AUTH, "Content-Type": "text/plain"})
    assert response.status_code == 415 and response.mimetype == PROBLEM
    assert "application/cloudevents+json" in response.json["detail"]
    batch_to_single = client.post("/api/ingest/event", data=json.dumps(_log(run_id)), headers=NDJSON)
    assert batch_to_single.status_code == 415 and "/api/ingest/events" in batch_to_single.json["detail"]
    single_to_batch = client.post("/api/ingest/events", data=json.dumps(_log(run_id)), headers=STRUCTURED)
    assert single_to_batch.status_code == 415


def test_a_charset_other_than_utf8_is_415(client: FlaskClient, run_id: str) -> None:
    headers = {**AUTH, "Content-Type": "application/cloudevents+json; charset=latin-1"}
    assert _post_event(client, _log(run_id), headers).status_code == 415


def test_unparseable_json_is_400_naming_line_and_column(client: FlaskClient) -> None:
    single = client.post("/api/ingest/event", data='{"id": 1,\n  "x": }', headers=STRUCTURED)
    assert single.status_code == 400 and single.mimetype == PROBLEM
    assert "line 2 column 8" in single.json["detail"] and single.json["line"] == 2
    batch = client.post("/api/ingest/events", data='[{"a": 1},\n{"a": NaN}]', headers=BATCH_JSON)
    assert batch.status_code == 400 and "NaN" in batch.json["detail"]
    not_array = client.post("/api/ingest/events", data='{"a": 1}', headers=BATCH_JSON)
    assert not_array.status_code == 400 and "JSON array" in not_array.json["detail"]
    not_utf8 = client.post("/api/ingest/event", data=b'{"a": "\xff"}', headers=STRUCTURED)
    assert not_utf8.status_code == 400 and "UTF-8" in not_utf8.json["detail"]


def test_body_over_the_limit_is_413_and_nothing_is_applied(mock_db: Any, run_id: str) -> None:
    client = ingest_app(mock_db, make_settings(INGEST_MAX_BODY_BYTES="2000")).test_client()
    events = [_log(run_id, n) for n in range(10)]
    response = post_ndjson(client, events)
    assert response.status_code == 413 and response.mimetype == PROBLEM
    assert "INGEST_MAX_BODY_BYTES" in response.json["detail"]
    assert mock_db.events.count_documents({}) == 0


def test_a_batch_with_too_many_events_is_413_and_nothing_is_applied(mock_db: Any, run_id: str) -> None:
    client = ingest_app(mock_db, make_settings(INGEST_MAX_BATCH_EVENTS="3")).test_client()
    events = [_log(run_id, n) for n in range(4)]
    for response in (post_ndjson(client, events), client.post("/api/ingest/events", data=json.dumps(events), headers=BATCH_JSON)):
        assert response.status_code == 413 and "INGEST_MAX_BATCH_EVENTS" in response.json["detail"]
    assert mock_db.events.count_documents({}) == 0
    assert post_ndjson(client, events[:3]).json["accepted"] == 3


def test_an_ndjson_line_over_the_limit_is_that_lines_invalid_result(mock_db: Any, run_id: str) -> None:
    client = ingest_app(mock_db, make_settings(INGEST_MAX_LINE_BYTES="400")).test_client()
    long_event = Worker(run_id, n=50).event("ai.run.log", level="info", message="x" * 500)
    response = post_ndjson(client, [_log(run_id), long_event])
    assert [r["status"] for r in response.json["results"]] == ["accepted", "invalid"]
    assert "Line 2 is" in response.json["results"][1]["error"] and "INGEST_MAX_LINE_BYTES" in response.json["results"][1]["error"]


def test_get_on_an_ingest_route_is_a_405_problem(client: FlaskClient) -> None:
    response = client.get("/api/ingest/event", headers=AUTH)
    assert response.status_code == 405 and response.mimetype == PROBLEM


# --- MongoDB outage -----------------------------------------------------------------------------------


#: What FerretDB answered (seen) while the PostgreSQL behind it was down: the wire server is up.
POSTGRESQL_DOWN = OperationFailure(
    "[msg_insert.go:168 handler.(*Handler).MsgInsert] failed to connect to `user=ferretdb database=ferretdb`:\n"
    "\t127.0.0.1:37373 (127.0.0.1): dial error: dial tcp 127.0.0.1:37373: connect: connection refused", code=1)


@pytest.mark.parametrize("error", [ServerSelectionTimeoutError("no servers"), AutoReconnect("connection reset"),
                                   POSTGRESQL_DOWN], ids=["unreachable", "reset", "postgresql-behind-ferretdb"])
def test_mongodb_unreachable_is_503_with_retry_after(
    client: FlaskClient, run_id: str, mock_db: Any, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    def down(*_: Any, **__: Any) -> None:
        raise error

    monkeypatch.setattr(type(mock_db.events_seen), "find", down)
    response = post_ndjson(client, [_log(run_id)])
    assert response.status_code == 503 and response.mimetype == PROBLEM
    assert response.headers["Retry-After"] == "5" and "resend" in response.json["detail"]


def test_any_other_database_error_is_a_500_problem_not_a_retry_later(
    client: FlaskClient, run_id: str, mock_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(*_: Any, **__: Any) -> None:
        raise OperationFailure("$jsonSchema is not supported", code=2)

    monkeypatch.setattr(type(mock_db.events_seen), "find", refused)
    response = post_ndjson(client, [_log(run_id)])
    assert response.status_code == 500 and response.mimetype == PROBLEM
    assert "Retry-After" not in response.headers and "server log" in response.json["detail"]


def test_a_failure_between_apply_and_mark_is_finished_by_the_resend(
    client: FlaskClient, run_id: str, mock_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = full_run(Worker(run_id))
    collection_type = type(mock_db.events_seen)
    real_insert_many = collection_type.insert_many

    def lose_dedup_records(self: Any, documents: Any, *args: Any, **kwargs: Any) -> Any:
        if self.name == "events_seen":
            raise AutoReconnect("connection lost after the effects were written")
        return real_insert_many(self, documents, *args, **kwargs)

    monkeypatch.setattr(collection_type, "insert_many", lose_dedup_records)
    assert post_ndjson(client, events).status_code == 503
    assert mock_db.events.count_documents({"runId": run_id}) == len(events)  # applied, not marked
    monkeypatch.setattr(collection_type, "insert_many", real_insert_many)
    resend = post_ndjson(client, events)
    assert resend.json["accepted"] == len(events)
    assert mock_db.events.count_documents({"runId": run_id}) == len(events)
    assert mock_db.artifacts.count_documents({"runId": run_id}) == 2
    assert len(mock_db.runs.find_one({"_id": run_id}).get("attempts", [])) == 0
    assert mock_db.runs.find_one({"_id": run_id})["lastEventSeq"] == seq_for(1, len(events))


def test_losing_the_dedup_insert_race_reports_duplicate_and_the_documents_are_as_if_once(
    client: FlaskClient, run_id: str, mock_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes pass the fast path at the same moment; both apply (idempotent), and the
    unique index on events_seen picks the winner. Simulated: the fast path misses a record the
    other process has just written."""
    from orchestrator import ingest as ingest_module

    events = full_run(Worker(run_id))
    assert post_ndjson(client, events).json["accepted"] == len(events)
    before = mock_db.runs.find_one({"_id": run_id})
    monkeypatch.setattr(ingest_module, "_seen_before", lambda db, candidates: set())
    loser = post_ndjson(client, events).json
    assert (loser["accepted"], loser["duplicate"]) == (0, len(events))
    after = mock_db.runs.find_one({"_id": run_id})
    assert {k: v for k, v in after.items() if k != "updatedAt"} == {k: v for k, v in before.items() if k != "updatedAt"}
    assert mock_db.events.count_documents({"runId": run_id}) == len(events)


def test_without_the_fast_path_the_unique_insert_alone_answers_duplicate(mock_db: Any, run_id: str) -> None:
    """What runs on FerretDB, where the events_seen lookup would scan the collection."""
    from orchestrator.db import ServerFeatures
    from orchestrator.ingest import Item, fast_path_pays, ingest

    assert fast_path_pays(ServerFeatures("MongoDB", "7.0", True))
    assert not fast_path_pays(ServerFeatures("FerretDB", "1.24.2", False))
    events = full_run(Worker(run_id))

    def send() -> list[str]:
        items = [Item(i, json.loads(json.dumps(e))) for i, e in enumerate(events)]
        return [o.status for o in ingest(mock_db, items, bucket="b", default_max_attempts=3, seen_lookup=False)]

    assert set(send()) == {"accepted"}
    before = mock_db.runs.find_one({"_id": run_id})
    assert set(send()) == {DUPLICATE}
    after = mock_db.runs.find_one({"_id": run_id})
    assert {k: v for k, v in after.items() if k != "updatedAt"} == {k: v for k, v in before.items() if k != "updatedAt"}


def test_one_batch_may_carry_events_of_several_runs(client: FlaskClient, mock_db: Any) -> None:
    first, second = insert_run(mock_db), insert_run(mock_db)
    events = [
        Worker(first).event("ai.run.stage_started", stage="Stage_1"),
        Worker(second).event("ai.run.stage_started", stage="Stage_2"),
    ]
    assert post_ndjson(client, events).json["accepted"] == 2
    assert mock_db.runs.find_one({"_id": first})["currentStage"]["name"] == "Stage_1"
    assert mock_db.runs.find_one({"_id": second})["currentStage"]["name"] == "Stage_2"


def test_an_integer_beyond_64_bits_is_invalid_not_a_server_error(client, mock_db):
    from orchestrator.events import make_event

    run_id = "r-int64"
    mock_db.runs.insert_one({"_id": run_id, "status": "RUNNING", "attempt": 1, "maxAttempts": 3})
    event = make_event("ai.run.stage_completed", run_id, 1_000_000_001, "worker://p",
                       {"stage": "Stage_1", "summary": {"data_seed": 2**64 - 1}})
    response = client.post("/api/ingest/event", json=event, headers=AUTH,
                           content_type="application/cloudevents+json")
    assert response.status_code == 422
    assert "data.summary.data_seed" in response.json["errors"]
