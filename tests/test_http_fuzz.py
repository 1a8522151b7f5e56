"""Property: no input to any route is answered 5xx, and a 4xx changes no document.

Arbitrary bytes, arbitrary JSON values and valid events with attributes and data fields replaced,
deleted or added are posted to every ingest and write route, and arbitrary query strings sent to
the reads, over Flask's test client on mongomock. The collections are snapshotted around each
request: only a 2xx may change them."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import OPERATOR_TOKEN, READER_TOKEN, WORKER_TOKEN, bearer, make_settings
from tests.ingest_helpers import SHA, Worker, full_run, ingest_app, insert_run

#: The credential each route takes (test_roles.py has who may do what); rate limits are off
#: so that every example reaches the route instead of a 429.
WORKER, OPERATOR, READER = bearer(WORKER_TOKEN), bearer(OPERATOR_TOKEN), bearer(READER_TOKEN)
#: Sized so the file runs in well under 30 s on the unit lane.
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                       HealthCheck.too_slow])
RUN_ID = "r-fuzz"
COLLECTIONS = ("runs", "stages", "events", "artifacts", "validations", "hypotheses", "events_seen")

#: Content types a client may send; the routes accept some and refuse the others.
CONTENT_TYPES = ["application/cloudevents+json", "application/json", "application/x-ndjson",
                 "application/cloudevents-batch+json", "text/plain", "application/json; charset=latin-1"]

_scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False) \
    | st.text(max_size=20) | st.sampled_from(["\x00", "\ud800", "$x", "a.b", "runs/../x", "9" * 30, "1.0", "run/r-fuzz"])
_keys = st.text(max_size=8) | st.sampled_from(["$set", "a.b", "\x00", "\udfff", "type", "data", "seq", "run_id", "key"])
json_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=4),
                           max_leaves=12)


def _valid_events() -> list[dict[str, Any]]:
    events = full_run(Worker(RUN_ID))
    events.append(Worker(RUN_ID, n=900).event("ai.artifact.registered", key=f"runs/{RUN_ID}/1/a", bytes=1, sha256=SHA,
                                               content_type="text/plain", kind="log"))
    return events


VALID = _valid_events()


@st.composite
def mutated_events(draw: st.DrawFn) -> Any:
    """A valid event with a few attributes or data fields replaced, deleted or added."""
    event = copy.deepcopy(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 3))):
        target = event["data"] if draw(st.booleans()) and isinstance(event.get("data"), dict) else event
        name = draw(st.sampled_from(sorted(target)) | _keys if target else _keys)
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "delete":
            target.pop(name, None)
        else:
            target[name] = draw(json_values)
    return event


def _dump(value: Any) -> bytes:
    return json.dumps(value, allow_nan=False).encode("utf-8", "surrogatepass")


bodies = (st.binary(max_size=300) | json_values.map(_dump) | mutated_events().map(_dump)
          | st.lists(mutated_events(), max_size=4).map(_dump)
          | st.lists(mutated_events().map(_dump), max_size=4).map(b"\n".join)
          | st.sampled_from([b"[" * 2000, b"[" * 1000 + b"]" * 1000, b'{"x": NaN}', b"1e400", b"", b"\n\n"]))


@pytest.fixture
def fuzz_client(mock_db: Any) -> Iterator[tuple[FlaskClient, Any]]:
    insert_run(mock_db, run_id=RUN_ID, status="RUNNING")
    settings = make_settings(RATE_LIMIT="off", AUTH_FAILURE_LIMIT="off",
                             INGEST_WEBHOOK_SECRET="whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=")
    yield ingest_app(mock_db, settings).test_client(), mock_db


def _snapshot(db: Any) -> dict[str, list[dict[str, Any]]]:
    return {name: list(db[name].find().sort("_id", 1)) for name in COLLECTIONS}


def _check(client: FlaskClient, db: Any, method: str, path: str, **kwargs: Any) -> None:
    before = _snapshot(db)
    response = client.open(path, method=method, **kwargs)
    assert response.status_code < 500, (path, kwargs, response.get_data(as_text=True))
    if response.status_code >= 400:
        assert _snapshot(db) == before, (path, kwargs, response.status_code)
    if response.status_code >= 400 and response.status_code != 404 or response.mimetype.endswith("json"):
        json.loads(response.get_data(as_text=True))  # strict JSON a browser can read: no bare NaN


WRITE_PATHS = ["/api/ingest/event", "/api/ingest/events", "/api/hypotheses", f"/api/runs/{RUN_ID}/cancel",
               f"/api/runs/{RUN_ID}/retry", f"/api/runs/{RUN_ID}/review", "/api/runs/nope/cancel"]


@FUZZ
@given(path=st.sampled_from(WRITE_PATHS), body=bodies, content_type=st.sampled_from(CONTENT_TYPES))
def test_any_body_on_any_write_route_is_never_a_5xx_and_a_4xx_changes_nothing(
    fuzz_client: tuple[FlaskClient, Any], path: str, body: bytes, content_type: str,
) -> None:
    client, db = fuzz_client
    credential = WORKER if path.startswith("/api/ingest/") else OPERATOR
    _check(client, db, "POST", path, data=body, headers={**credential, "Content-Type": content_type})


@FUZZ
@given(event=mutated_events(), mode=st.sampled_from(["structured", "binary", "ndjson", "array"]))
def test_a_mutated_event_in_any_mode_is_never_a_5xx(fuzz_client: tuple[FlaskClient, Any], event: Any, mode: str) -> None:
    client, db = fuzz_client
    if mode == "binary":
        headers = {f"ce-{k}": v if isinstance(v, str) else json.dumps(v) for k, v in event.items()
                   if k != "data" and str(k).isascii() and str(k).isalnum()}
        headers = {k: v.encode("utf-8", "surrogatepass").decode("latin-1") for k, v in headers.items() if "\n" not in v and "\r" not in v}
        _check(client, db, "POST", "/api/ingest/event", data=_dump(event.get("data")),
               headers={**WORKER, **headers, "Content-Type": "application/json", "ce-specversion": "1.0"})
        return
    path, content_type, body = {
        "structured": ("/api/ingest/event", "application/cloudevents+json", _dump(event)),
        "ndjson": ("/api/ingest/events", "application/x-ndjson", _dump(VALID[0]) + b"\n" + _dump(event)),
        "array": ("/api/ingest/events", "application/cloudevents-batch+json", _dump([event, VALID[1]])),
    }[mode]
    _check(client, db, "POST", path, data=body, headers={**WORKER, "Content-Type": content_type})


@FUZZ
@given(idea=json_values, fields=st.dictionaries(st.sampled_from(["priority", "maxAttempts", "limits", "queue", "pipeline",
                                                                  "title", "idea"]), json_values, max_size=3))
def test_any_hypothesis_is_a_201_or_a_4xx_that_stores_nothing(fuzz_client: tuple[FlaskClient, Any], idea: Any,
                                                             fields: dict[str, Any]) -> None:
    client, db = fuzz_client
    body = {"title": "t", "idea": "i", "ideaJson": idea, **fields}
    _check(client, db, "POST", "/api/hypotheses", data=_dump(body),
           headers={**OPERATOR, "Content-Type": "application/json"})


_query = st.dictionaries(st.sampled_from(["limit", "cursor", "status", "after_seq", "x"]),
                         st.text(max_size=30) | st.integers(-(2**80), 2**80).map(str), max_size=3)


@FUZZ
@given(path=st.sampled_from(["/api/runs", f"/api/runs/{RUN_ID}", f"/api/runs/{RUN_ID}/events", "/api/runs/%00/events",
                             f"/api/runs/{RUN_ID}/artifacts/x/download", "/api/runs/%ED%A0%80"]), query=_query)
def test_any_query_string_on_the_reads_is_never_a_5xx(fuzz_client: tuple[FlaskClient, Any], path: str,
                                                      query: dict[str, str]) -> None:
    client, db = fuzz_client
    _check(client, db, "GET", path, query_string=query, headers=READER)


_header_values = st.text(max_size=60).map(lambda text: text.encode("utf-8", "surrogatepass").decode("latin-1")) \
    | st.sampled_from([f"Bearer {WORKER_TOKEN}", f"Bearer {OPERATOR_TOKEN}", "Bearer ", "v1,xx", "1", "", "10.0.0.1, ::1"])


@FUZZ
@given(path=st.sampled_from(["/api/runs", "/api/ingest/events", "/api/hypotheses", "/metrics", "/healthz"]),
       method=st.sampled_from(["GET", "POST", "OPTIONS", "PUT", "FOO"]),
       headers=st.dictionaries(st.sampled_from(["Authorization", "webhook-id", "webhook-timestamp", "webhook-signature",
                                                "X-Forwarded-For", "Origin", "ce-specversion"]),
                               _header_values.filter(lambda v: "\n" not in v and "\r" not in v), max_size=4))
def test_any_credential_headers_on_any_route_are_never_a_5xx(fuzz_client: tuple[FlaskClient, Any], path: str,
                                                            method: str, headers: dict[str, str]) -> None:
    client, db = fuzz_client
    _check(client, db, method, path, data=b"{}", headers={"Content-Type": "application/json", **headers})
