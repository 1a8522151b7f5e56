"""Helpers of the web console's tests: an app with sign-in on, a signed-in client, a run with a
real history (the events a worker sends, applied by ingest)."""

from __future__ import annotations

import re
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from ingest_app import create_app
from tests.helpers import make_settings
from tests.ingest_helpers import Worker, apply, full_run, insert_run

SECRET_KEY = "console-test-Hk3Jd8Ls2Mq7Nw4Pz9Rx5Tv1"
HTML = {"Accept": "text/html"}


def console_app(db: Any, **env: str) -> Flask:
    """The ingest app with its console over `db` (SECRET_KEY set unless `env` says otherwise)."""
    return create_app(make_settings(**{"SECRET_KEY": SECRET_KEY, **env}), db=db)


def sign_in(app: Flask, token: str) -> FlaskClient:
    """A browser-like client signed in with `token`."""
    client = app.test_client()
    response = client.post("/signin", data={"token": token, "next": "/"}, headers=HTML)
    assert response.status_code == 302, response.get_data(as_text=True)
    return client


def csrf(client: FlaskClient) -> str:
    with client.session_transaction() as session:
        return str(session["csrf"])


def post_form(client: FlaskClient, path: str, **fields: str) -> Any:
    """A form post as the page sends it: with the session's CSRF token and, for actions that ask
    first, already confirmed."""
    return client.post(path, data={"csrf_token": csrf(client), "confirmed": "1", **fields}, headers=HTML)


def run_with_history(db: Any, outcome: str = "success", **fields: Any) -> str:
    """A run whose documents a real attempt's events made (AWAITING_HUMAN for "success")."""
    run_id = insert_run(db, status="SCHEDULED", **fields)
    apply(db, full_run(Worker(run_id), outcome=outcome))
    return run_id


def text_of(response: Any) -> str:
    """A page's visible text, tags removed and spaces collapsed, for assertions on what it says."""
    body = re.sub(r"<script.*?</script>|<style.*?</style>", " ", response.get_data(as_text=True), flags=re.S)
    return " ".join(re.sub(r"<[^>]+>", " ", body).split())
