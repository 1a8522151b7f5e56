"""Property: no input to any console page or form is answered 5xx, and a refused form changes
no document. Arbitrary form fields (with a valid session and CSRF token, so they reach the
route), query strings and cookies, over Flask's test client on mongomock."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.console_helpers import HTML, console_app, csrf, run_with_history, sign_in
from tests.helpers import OPERATOR_TOKEN

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                       HealthCheck.too_slow])
COLLECTIONS = ("runs", "stages", "events", "artifacts", "validations", "hypotheses", "status_history")
_text = st.text(max_size=40) | st.sampled_from(["\x00", "\ud800", "$set", "{}", "[]", '{"a": NaN}', "9" * 40, "-1",
                                                 "accept", "reject", "1", "demo", " ", "<script>alert(1)</script>"])
_surrogate_safe = _text.map(lambda t: t.encode("utf-8", "surrogatepass").decode("utf-8", "replace"))


@pytest.fixture
def signed_in(mock_db: Any) -> Iterator[tuple[FlaskClient, Any, str]]:
    app = console_app(mock_db, RATE_LIMIT="off", AUTH_FAILURE_LIMIT="off")
    run_id = run_with_history(mock_db)
    yield sign_in(app, OPERATOR_TOKEN), mock_db, run_id


def _snapshot(db: Any) -> dict[str, list[dict[str, Any]]]:
    return {name: list(db[name].find().sort("_id", 1)) for name in COLLECTIONS}


@FUZZ
@given(route=st.sampled_from(["/hypotheses", "/runs/{run}/review", "/runs/{run}/cancel", "/runs/{run}/retry",
                              "/runs/nope/review", "/signin"]),
       fields=st.dictionaries(st.sampled_from(["title", "idea", "pipeline", "priority", "ideaJson", "decision", "notes",
                                               "reason", "token", "next", "confirmed"]), _surrogate_safe, max_size=6))
def test_any_form_is_never_a_5xx_and_a_refusal_changes_nothing(signed_in: tuple[FlaskClient, Any, str], route: str,
                                                                fields: dict[str, str]) -> None:
    client, db, run_id = signed_in
    before = _snapshot(db)
    response = client.post(route.format(run=run_id), data={**fields, "csrf_token": csrf(client)}, headers=HTML)
    assert response.status_code < 500, (route, fields, response.get_data(as_text=True)[:500])
    if response.status_code >= 400:
        assert _snapshot(db) == before


@FUZZ
@given(path=st.sampled_from(["/", "/runs.json", "/runs/{run}", "/runs/{run}/live.json", "/hypotheses/h", "/ops",
                             "/runs/{run}/artifacts/x", "/runs/%00", "/hypotheses/new", "/signin"]),
       query=st.dictionaries(st.sampled_from(["q", "status", "pipeline", "cursor", "type", "level", "after_seq", "v",
                                              "next", "download"]), _surrogate_safe, max_size=4))
def test_any_query_string_on_any_page_is_never_a_5xx(signed_in: tuple[FlaskClient, Any, str], path: str,
                                                     query: dict[str, str]) -> None:
    client, _, run_id = signed_in
    response = client.get(path.format(run=run_id), query_string=query, headers=HTML)
    assert response.status_code < 500, (path, query, response.get_data(as_text=True)[:500])


@FUZZ
@given(cookie=_surrogate_safe)
def test_any_session_cookie_is_a_sign_in_page_never_a_5xx(mock_db: Any, cookie: str) -> None:
    client = console_app(mock_db).test_client()
    client.set_cookie("console_session", cookie.encode("utf-8", "replace").decode("latin-1"))
    assert client.get("/", headers=HTML).status_code == 302
