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
from tests.ingest_helpers import AUTH, BATCH_JSON, NDJSON, PROBLEM, SHA, STRUCTURED, Worker, ingest_app, insert_run

Event = dict[str, Any]
DEEP = "[" * 1000 + "]" * 1000


@pytest.fixture
def client(mock_db: Any) -> Iterator[FlaskClient]:
    yield ingest_app(mock_db).test_client()


@pytest.fixture
def worker(mock_db: Any) -> Worker:
    return Worker(insert_run(mock_db))


def _log(w: Worker, **data: Any) -> Event:
    return w.event("ai.run.log", level="info", message="m", **data)


def _artifact(w: Worker, key: str) -> Event:
    return w.event("ai.artifact.registered", key=key, bytes=1, sha256=SHA, content_type="text/plain", kind="log")


def _set(**attributes: Any) -> Callable[[Worker], Event]:
    return lambda w: {**_log(w), **attributes}


#: (what, event builder, the field its error names). Each answered 500 before.
HOSTILE: list[tuple[str, Callable[[Worker], Event], str]] = [
    ("type an array", _set(type=["ai.run.log"]), "type"),
    ("type an object", _set(type={"a": 1}), "type"),
    ("time before year 1 in UTC", _set(time="0001-01-01T00:00:00+01:00"), "time"),
    ("time after year 9999 in UTC", _set(time="9999-12-31T23:59:59-01:00"), "time"),
    ("seq 2**64", _set(seq=2**64), "seq"),
    ("seq 2**63", _set(seq=2**63), "seq"),
    ("NUL in a data key", lambda w: _log(w, kv={"a\x00b": 1}), "data.kv"),
    ("NUL in a data string", lambda w: {**_log(w), "data": {**_log(w)["data"], "message": "a\x00"}}, "data.message"),
    ("NUL in a metric name", lambda w: w.event("ai.run.stage_metric", stage="Stage_1", name="loss\x00", value=1.0), "data.name"),
    ("NUL in an artifact key", lambda w: _artifact(w, f"runs/{w.run_id}/1/a\x00.txt"), "data.key"),
    ("NUL in the id", _set(id="a\x00b"), "id"),
    ("NUL in the source", _set(source="worker://\x00"), "source"),
    ("a lone surrogate in the id", _set(id="\ud800"), "id"),
    ("a lone surrogate in a data string", lambda w: _log(w, kv={"k": "\udfff"}), "data.kv.k"),
    ("a lone surrogate in an extension", _set(foo="\ud800"), "foo"),
    ("an object as an extension value", _set(foo={"$a": 1}), "foo"),
    ("a huge integer as an extension value", _set(foo=2**70), "foo"),
    ("a huge bytes count", lambda w: {**_artifact(w, f"runs/{w.run_id}/1/a"), "data": {
        **_artifact(w, f"runs/{w.run_id}/1/a")["data"], "bytes": 2**64}}, "data.bytes"),
    ("a huge step", lambda w: w.event("ai.run.stage_metric", stage="Stage_1", name="l", value=1.0, step=10**30), "data.step"),
    ("specversion a number", _set(specversion=1.0), "specversion"),
    ("subject of another run", _set(subject="run/other"), "subject"),
    ("subject not run/...", _set(subject="x"), "subject"),
    ("an artifact of another run", lambda w: _artifact(w, "runs/other-run/1/a.txt"), "data.key"),
    ("an artifact key climbing out", lambda w: _artifact(w, f"runs/{w.run_id}/../x"), "data.key"),
    ("an artifact key ../x", lambda w: _artifact(w, "../x"), "data.key"),
    ("an absolute artifact key", lambda w: _artifact(w, f"/runs/{w.run_id}/1/a"), "data.key"),
    ("the run folder itself", lambda w: _artifact(w, f"runs/{w.run_id}/"), "data.key"),
    ("a failed artifact of another run", lambda w: w.event("ai.artifact.failed", key="runs/b/x", code="E", message="m"),
     "data.key"),
    ("a paper of another run", lambda w: w.event("ai.paper.generated", artifact_key="runs/b/1/paper.pdf"), "data.artifact_key"),
]


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
    events = [_dumps(_log(worker)), _dumps(build(worker)), _dumps(_log(worker))]
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
    event = _log(worker)
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
    response = _post_batch(client, batch, [_dumps(_log(worker)), DEEP, _dumps(_log(worker))])
    results = response.json["results"]
    assert [r["status"] for r in results] == ["accepted", "invalid", "accepted"]
    assert "nested 1000 levels deep" in results[1]["error"] and "event" in results[1]["errors"]
    assert mock_db.events.count_documents({}) == 2


@pytest.mark.parametrize("line", ['{"a": NaN}', "[1e400]", "1" * 5000, "{" * 70])
def test_an_ndjson_line_that_is_no_json_we_take_is_only_its_own_result(client: FlaskClient, worker: Worker,
                                                                       line: str) -> None:
    response = _post_batch(client, "ndjson", [_dumps(_log(worker)), line])
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
    body = "\n \n\r\n" + _dumps(_log(worker)) + "\n\t\n" + "nope" + "\n\n"
    results = client.post("/api/ingest/events", data=body, headers=NDJSON).json["results"]
    assert [(r["line"], r["status"]) for r in results] == [(4, "accepted"), (6, "invalid")]
