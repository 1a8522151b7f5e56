"""Inputs the security audit found answered 500 (a worker then resends the event forever): each is
a 4xx naming the field, and in a batch it marks only its own line or item invalid."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient

from orchestrator.safe_json import MAX_DEPTH
from tests.helpers import make_settings
from tests.hostile import DEEP, HOSTILE, Event, log_event
from tests.ingest_helpers import AUTH, BATCH_JSON, NDJSON, PROBLEM, STRUCTURED, Worker, ingest_app, insert_run


@pytest.fixture
def client(mock_db: Any) -> Iterator[FlaskClient]:
    yield ingest_app(mock_db).test_client()


@pytest.fixture
def worker(mock_db: Any) -> Worker:
    return Worker(insert_run(mock_db))


def _post(client: FlaskClient, body: str, headers: dict[str, str] = STRUCTURED) -> Any:
    return client.post("/api/ingest/event", data=body.encode("utf-8", "surrogatepass"), headers=headers)


def _dumps(event: Event) -> str:
    return json.dumps(event)  # escapes NUL and surrogates as \u0000, \ud800: valid JSON text


@pytest.mark.parametrize(("what", "build", "field"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_a_hostile_event_is_a_422_naming_its_field(client: FlaskClient, worker: Worker, mock_db: Any,
                                                   what: str, build: Callable[[Worker], Event], field: str) -> None:
    response = _post(client, _dumps(build(worker)))
    assert response.status_code == 422 and response.mimetype == PROBLEM, (what, response.json)
    assert field in response.json["errors"], response.json
    assert mock_db.events.count_documents({}) == 0


@pytest.mark.parametrize(("what", "build", "field"), HOSTILE, ids=[h[0] for h in HOSTILE])
@pytest.mark.parametrize("batch", ["ndjson", "array"])
def test_in_a_batch_a_hostile_event_is_only_its_own_item_invalid(
    client: FlaskClient, worker: Worker, mock_db: Any, batch: str, what: str, build: Callable[[Worker], Event], field: str,
) -> None:
    events = [_dumps(log_event(worker)), _dumps(build(worker)), _dumps(log_event(worker))]
    response = _post_batch(client, batch, events)
    assert response.status_code == 200, response.json
    assert [r["status"] for r in response.json["results"]] == ["accepted", "invalid", "accepted"], what
    assert field in response.json["results"][1]["errors"]
    assert mock_db.events.count_documents({}) == 2


def _post_batch(client: FlaskClient, batch: str, texts: list[str]) -> Any:
    if batch == "ndjson":
        return client.post("/api/ingest/events", data="\n".join(texts).encode("utf-8", "surrogatepass"), headers=NDJSON)
    body = "[" + ",".join(texts) + "]"
    return client.post("/api/ingest/events", data=body.encode("utf-8", "surrogatepass"), headers=BATCH_JSON)


@pytest.mark.parametrize("text", [DEEP, '{"data": ' * 500 + "1" + "}" * 500, "[1e400]", '{"a": NaN}', '"\\ud800"'])
def test_json_a_single_event_cannot_carry_is_a_400(client: FlaskClient, text: str) -> None:
    response = _post(client, text)
    if text.startswith('"'):
        assert response.status_code == 422  # valid JSON, but no event: refused by the validation
        return
    assert response.status_code == 400 and response.mimetype == PROBLEM, response.json
    assert "the event is not valid JSON" in response.json["detail"]


def test_a_deep_body_in_binary_mode_names_the_data(client: FlaskClient, worker: Worker) -> None:
    headers = {**AUTH, "Content-Type": "application/json", "ce-specversion": "1.0"}
    response = client.post("/api/ingest/event", data=DEEP, headers=headers)
    assert response.status_code == 400 and "the event data is not valid JSON" in response.json["detail"]
    assert f"at most {MAX_DEPTH} levels" in response.json["detail"]


@pytest.mark.parametrize(("header", "value", "field"), [
    ("ce-seq", str(2**63), "seq"), ("ce-seq", "9" * 30, "seq"), ("ce-id", "a%00b", "id"), ("ce-foo", "%ED%A0%80", "")
])
def test_binary_mode_headers_are_checked_like_attributes(client: FlaskClient, worker: Worker,
                                                        header: str, value: str, field: str) -> None:
    event = log_event(worker)
    headers = {**AUTH, "Content-Type": "application/json",
               **{f"ce-{k}": str(v) for k, v in event.items() if k not in ("data", "datacontenttype")}, header: value}
    response = client.post("/api/ingest/event", data=json.dumps(event["data"]), headers=headers)
    if not field:  # undecodable percent-escapes become U+FFFD, which is storable text
        assert response.status_code == 201, response.json
        return
    assert response.status_code == 422 and field in response.json["errors"], response.json


@pytest.mark.parametrize("batch", ["ndjson", "array"])
def test_a_line_or_item_nested_too_deep_is_only_its_own_result(client: FlaskClient, worker: Worker, mock_db: Any,
                                                                batch: str) -> None:
    response = _post_batch(client, batch, [_dumps(log_event(worker)), DEEP, _dumps(log_event(worker))])
    results = response.json["results"]
    assert [r["status"] for r in results] == ["accepted", "invalid", "accepted"]
    assert "nested 1000 levels deep" in results[1]["error"] and "event" in results[1]["errors"]
    assert mock_db.events.count_documents({}) == 2


@pytest.mark.parametrize("line", ['{"a": NaN}', "[1e400]", "1" * 5000, "{" * 70])
def test_an_ndjson_line_that_is_no_json_we_take_is_only_its_own_result(client: FlaskClient, worker: Worker,
                                                                       line: str) -> None:
    response = _post_batch(client, "ndjson", [_dumps(log_event(worker)), line])
    assert [r["status"] for r in response.json["results"]] == ["accepted", "invalid"]
    assert "Line 2 is not valid JSON" in response.json["results"][1]["error"]


@pytest.mark.parametrize("body", ["[", "[1,]", "[NaN]", "[1e400]", "{}", "1", ""])
def test_a_json_array_batch_that_does_not_parse_is_a_400(client: FlaskClient, body: str) -> None:
    response = client.post("/api/ingest/events", data=body, headers=BATCH_JSON)
    assert response.status_code == 400 and response.mimetype == PROBLEM, response.json
    assert "the batch" in response.json["detail"] or "must be a JSON array" in response.json["detail"]


@pytest.mark.parametrize("batch", ["ndjson", "array"])
def test_too_many_events_are_refused_before_they_are_parsed(mock_db: Any, batch: str) -> None:
    client = ingest_app(mock_db, make_settings(INGEST_MAX_BATCH_EVENTS="3")).test_client()
    texts = ["{}"] * 3 + ["not even json"]
    response = _post_batch(client, batch, texts) if batch == "ndjson" else client.post(
        "/api/ingest/events", data="[{}, {}, {}, {}, nonsense", headers=BATCH_JSON)
    assert response.status_code == 413 and "more than 3 events" in response.json["detail"], response.json


def test_ndjson_blank_lines_do_not_count_and_lines_keep_their_numbers(mock_db: Any, worker: Worker) -> None:
    client = ingest_app(mock_db, make_settings(INGEST_MAX_BATCH_EVENTS="2")).test_client()
    body = "\n \n\r\n" + _dumps(log_event(worker)) + "\n\t\n" + "nope" + "\n\n"
    results = client.post("/api/ingest/events", data=body, headers=NDJSON).json["results"]
    assert [(r["line"], r["status"]) for r in results] == [(4, "accepted"), (6, "invalid")]
