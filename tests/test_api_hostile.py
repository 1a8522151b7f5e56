"""The write API's bodies and the read API's query parameters that answered 500, or stored what
the API could not give back as JSON: each is a 4xx naming the field, and nothing is stored."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.api_helpers import AUTH, assert_problem, build_app, insert_run
from tests.hostile import DEEP, HOSTILE_HYPOTHESES

JSON_AUTH = {**AUTH, "Content-Type": "application/json"}


@pytest.fixture
def client(mock_db: Any) -> Iterator[FlaskClient]:
    with build_app(mock_db).test_client() as test_client:
        yield test_client


def _hypothesis(client: FlaskClient, extra: str) -> Any:
    return client.post("/api/hypotheses", data='{"title": "t", "idea": "i", ' + extra + "}", headers=JSON_AUTH)


@pytest.mark.parametrize(("extra", "status", "field", "words"), HOSTILE_HYPOTHESES)
def test_a_hostile_hypothesis_is_refused_naming_the_field(client: FlaskClient, mock_db: Any, extra: str, status: int,
                                                         field: str, words: str) -> None:
    body = assert_problem(_hypothesis(client, extra), status, words)
    assert field in body["errors"], body
    assert mock_db.hypotheses.count_documents({}) == 0 and mock_db.runs.count_documents({}) == 0


def test_a_hostile_title_is_refused_naming_it(client: FlaskClient, mock_db: Any) -> None:
    response = client.post("/api/hypotheses", data='{"title": "a\\u0000", "idea": "\\ud800"}', headers=JSON_AUTH)
    assert set(assert_problem(response, 422, "NUL", "lone surrogate")["errors"]) == {"title", "idea"}


def test_an_idea_json_the_database_stores_comes_back_as_sent(client: FlaskClient, mock_db: Any) -> None:
    idea = {"a": [1, {"b": [2.5, None, "é 🙂"]}], "n": 2**63 - 1, "nested": {"x": {"y": {}}}}
    response = client.post("/api/hypotheses", data=json.dumps({"title": "t", "idea": "i", "ideaJson": idea}),
                           headers=JSON_AUTH)
    assert response.status_code == 201, response.json
    assert mock_db.hypotheses.find_one({"_id": response.json["hypothesisId"]})["ideaJson"] == idea


@pytest.mark.parametrize("action", ["cancel", "retry"])
@pytest.mark.parametrize(("body", "status", "field"), [
    (f'{{"by": {DEEP}}}', 400, "body"), ('{"by": "a\\u0000"}', 422, "by"), ('{"reason": "\\udfff"}', 422, "reason"),
    ('{"by": NaN}', 400, "body"), (b'{"by": "\xff"}', 400, "body"),
])
def test_a_hostile_action_body_is_refused_and_the_run_is_unchanged(
    client: FlaskClient, mock_db: Any, action: str, body: str | bytes, status: int, field: str,
) -> None:
    run_id = insert_run(mock_db, status="FAILED")
    before = mock_db.runs.find_one({"_id": run_id})
    response = client.post(f"/api/runs/{run_id}/{action}", data=body, headers=JSON_AUTH)
    assert field in assert_problem(response, status)["errors"]
    assert mock_db.runs.find_one({"_id": run_id}) == before


def _cursor(key: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


@pytest.mark.parametrize("cursor", [
    _cursor(["0001-01-01T00:00:00+01:00", "x", "str"]), _cursor(["9999-12-31T23:59:59-01:00", "x", "str"]),
    _cursor(["2026-01-01T00:00:00Z", "a\x00", "str"]), _cursor(["2026-01-01T00:00:00Z", {"$gt": ""}, "str"]),
    base64.urlsafe_b64encode(DEEP.encode()).decode(), _cursor([None, "x"]), "%%%", _cursor(["2026-01-01", "zz", "oid"]),
])
def test_a_forged_cursor_is_a_400_naming_it(client: FlaskClient, cursor: str) -> None:
    assert "cursor" in assert_problem(client.get(f"/api/runs?cursor={cursor}"), 400)["errors"]


def test_a_cursor_with_an_offset_still_pages_in_utc(client: FlaskClient, mock_db: Any) -> None:
    insert_run(mock_db)
    response = client.get(f"/api/runs?cursor={_cursor(['2100-01-01T01:00:00+01:00', 'zzz', 'str'])}")
    assert response.status_code == 200 and len(response.json["runs"]) == 1


@pytest.mark.parametrize("value", ["99999999999999999999999", str(2**63), "-2", "9" * 5000, "1e3", "\x00"])
def test_after_seq_outside_int64_is_a_400_naming_it(client: FlaskClient, mock_db: Any, value: str) -> None:
    run_id = insert_run(mock_db)
    response = client.get(f"/api/runs/{run_id}/events", query_string={"after_seq": value})
    assert "after_seq" in assert_problem(response, 400)["errors"]


def test_after_seq_takes_the_whole_int64_range(client: FlaskClient, mock_db: Any) -> None:
    run_id = insert_run(mock_db)
    for value in (-1, 2**63 - 1):
        assert client.get(f"/api/runs/{run_id}/events?after_seq={value}").status_code == 200
