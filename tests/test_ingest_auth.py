"""Who may post events: bearer token, Standard Webhooks signatures, the open development mode."""

from __future__ import annotations

import base64
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from orchestrator.errors import SettingsError
from tests.helpers import make_settings
from tests.ingest_helpers import NDJSON, PROBLEM, TOKEN, Worker, ingest_app, insert_run

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
CT = {"Content-Type": "application/x-ndjson"}


def _body(run_id: str) -> bytes:
    return (json.dumps(Worker(run_id).event("ai.run.log", level="info", message="m")) + "\n").encode()


def _signed(body: bytes, *, secret: str = SECRET, at: datetime | None = None, msg_id: str = "msg_1") -> dict[str, str]:
    moment = at or datetime.now(UTC)
    signature = Webhook(secret).sign(msg_id, moment, body.decode())
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(moment.timestamp())), "webhook-signature": signature}


def test_missing_bearer_token_is_401_with_a_challenge(mock_db: Any) -> None:
    run_id = insert_run(mock_db)
    response = ingest_app(mock_db).test_client().post("/api/ingest/events", data=_body(run_id), headers=CT)
    assert response.status_code == 401 and response.mimetype == PROBLEM
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert mock_db.events.count_documents({}) == 0


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "token test-token"])
def test_a_credential_that_is_not_a_bearer_token_is_401(mock_db: Any, header: str) -> None:
    client = ingest_app(mock_db).test_client()
    assert client.post("/api/ingest/events", data=b"", headers={**CT, "Authorization": header}).status_code == 401


@pytest.mark.parametrize("token", ["wrong", "test-token-but-longer", "tëst"])
def test_wrong_bearer_token_is_403_and_nothing_is_applied(mock_db: Any, token: str) -> None:
    run_id = insert_run(mock_db)
    response = ingest_app(mock_db).test_client().post(
        "/api/ingest/events", data=_body(run_id), headers={**CT, "Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 403 and response.mimetype == PROBLEM
    assert response.headers["WWW-Authenticate"].startswith("Bearer error=")
    assert mock_db.events.count_documents({}) == 0


def test_right_bearer_token_is_let_through(mock_db: Any) -> None:
    run_id = insert_run(mock_db)
    response = ingest_app(mock_db).test_client().post("/api/ingest/events", data=_body(run_id), headers=NDJSON)
    assert response.status_code == 200 and response.json["accepted"] == 1


def test_auth_is_checked_before_the_body_is_judged(mock_db: Any) -> None:
    client = ingest_app(mock_db).test_client()
    assert client.post("/api/ingest/event", data=b"not json", headers={"Content-Type": "text/plain"}).status_code == 401


def test_a_valid_webhook_signature_needs_no_bearer_token(mock_db: Any) -> None:
    run_id = insert_run(mock_db)
    client = ingest_app(mock_db, make_settings(INGEST_WEBHOOK_SECRET=SECRET)).test_client()
    body = _body(run_id)
    response = client.post("/api/ingest/events", data=body, headers={**CT, **_signed(body)})
    assert response.status_code == 200 and response.json["accepted"] == 1


@pytest.mark.parametrize("case", ["tampered body", "other secret", "too old", "garbled signature"])
def test_an_invalid_webhook_signature_is_403_even_with_a_good_bearer_token(mock_db: Any, case: str) -> None:
    run_id = insert_run(mock_db)
    client = ingest_app(mock_db, make_settings(INGEST_WEBHOOK_SECRET=SECRET)).test_client()
    body = _body(run_id)
    headers = {
        "tampered body": lambda: _signed(body.replace(b"message", b"massage")),
        "other secret": lambda: _signed(body, secret="whsec_" + base64.b64encode(b"x" * 32).decode()),
        "too old": lambda: _signed(body, at=datetime.now(UTC) - timedelta(minutes=10)),
        "garbled signature": lambda: {**_signed(body), "webhook-signature": "v1"},
    }[case]()
    response = client.post("/api/ingest/events", data=body, headers={**NDJSON, **headers})
    assert response.status_code == 403 and response.mimetype == PROBLEM
    assert mock_db.events.count_documents({}) == 0


def test_webhook_headers_are_ignored_when_no_secret_is_configured(mock_db: Any) -> None:
    run_id = insert_run(mock_db)
    body = _body(run_id)
    response = ingest_app(mock_db).test_client().post("/api/ingest/events", data=body, headers={**NDJSON, **_signed(body)})
    assert response.status_code == 200


def test_a_malformed_webhook_secret_stops_the_app_without_echoing_it(mock_db: Any) -> None:
    with pytest.raises(SettingsError) as caught:
        ingest_app(mock_db, make_settings(INGEST_WEBHOOK_SECRET="whsec_"))
    assert "INGEST_WEBHOOK_SECRET" in str(caught.value)


def test_without_a_token_the_app_refuses_to_start(mock_db: Any) -> None:
    with pytest.raises(SettingsError, match="INGEST_TOKEN is not set.*INGEST_AUTH=disabled"):
        ingest_app(mock_db, make_settings(INGEST_TOKEN=""))


def test_open_development_mode_skips_auth_and_warns_on_every_start(
    mock_db: Any, caplog: pytest.LogCaptureFixture
) -> None:
    run_id = insert_run(mock_db)
    settings = make_settings(INGEST_TOKEN="", INGEST_AUTH="disabled")
    with caplog.at_level(logging.WARNING, logger="ingest_app"):
        ingest_app(mock_db, settings)
        client = ingest_app(mock_db, settings).test_client()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "INGEST_AUTH=disabled" in r.getMessage()]
    assert len(warnings) == 2
    assert client.post("/api/ingest/events", data=_body(run_id), headers=CT).json["accepted"] == 1


def test_neither_the_token_nor_the_secret_is_ever_logged(mock_db: Any, caplog: pytest.LogCaptureFixture) -> None:
    token, secret = "s3cret-token-value-Qx7Lm2Vb9Rt4Kp8Zs3Nd6", SECRET
    run_id = insert_run(mock_db)
    with caplog.at_level(logging.DEBUG):
        client = ingest_app(mock_db, make_settings(INGEST_TOKEN=token, INGEST_WEBHOOK_SECRET=secret)).test_client()
        client.post("/api/ingest/events", data=_body(run_id), headers={**CT, "Authorization": "Bearer wrong-but-secret-too"})
        client.post("/api/ingest/events", data=_body(run_id), headers={**CT, "Authorization": f"Bearer {token}"})
        forged = {**CT, "webhook-id": "m", "webhook-timestamp": "1", "webhook-signature": "v1,xx"}
        client.post("/api/ingest/events", data=_body(run_id), headers=forged)
    text = caplog.text
    assert "ingest app starting" in text
    for value in (token, secret, secret.removeprefix("whsec_"), "wrong-but-secret-too", TOKEN):
        assert value not in text


def test_a_signed_request_is_accepted_once(mock_db: Any) -> None:
    run_id = insert_run(mock_db)
    app = ingest_app(mock_db, make_settings(INGEST_WEBHOOK_SECRET=SECRET))
    body = _body(run_id)
    headers = {**CT, **_signed(body, msg_id="msg_once")}
    assert app.test_client().post("/api/ingest/events", data=body, headers=headers).status_code == 200
    # The same request again, from this or another app on the same database (another replica).
    replay = ingest_app(mock_db, make_settings(INGEST_WEBHOOK_SECRET=SECRET)).test_client()
    again = replay.post("/api/ingest/events", data=body, headers=headers)
    assert again.status_code == 403 and "already accepted" in again.json["detail"]
    fresh = {**CT, **_signed(body, msg_id="msg_twice")}
    assert replay.post("/api/ingest/events", data=body, headers=fresh).json["duplicate"] == 1


def test_a_signature_does_not_cover_binary_mode_headers_so_it_is_refused_there(mock_db: Any) -> None:
    """A signed log line must not become a signed cancel by rewriting its ce-type header."""
    run_id = insert_run(mock_db)
    client = ingest_app(mock_db, make_settings(INGEST_WEBHOOK_SECRET=SECRET)).test_client()
    data = json.dumps({"run_id": run_id, "by": "x"}).encode()
    binary = {"Content-Type": "application/json", "ce-specversion": "1.0", "ce-id": "e-1", "ce-source": "worker://p",
              "ce-type": "ai.run.canceled", "ce-subject": f"run/{run_id}", "ce-time": "2026-01-01T00:00:00Z",
              "ce-seq": "1000000001"}
    response = client.post("/api/ingest/event", data=data, headers={**binary, **_signed(data)})
    assert response.status_code == 401 and "binary mode" in response.json["detail"]
    assert mock_db.runs.find_one({"_id": run_id})["status"] == "STARTING"
    bearer_ok = client.post("/api/ingest/event", data=data, headers={**binary, "Authorization": f"Bearer {TOKEN}"})
    assert bearer_ok.status_code in (200, 201)


def test_a_signature_is_not_a_credential_on_the_api(mock_db: Any) -> None:
    client = ingest_app(mock_db, make_settings(INGEST_WEBHOOK_SECRET=SECRET)).test_client()
    body = json.dumps({"title": "t", "idea": "i"}).encode()
    response = client.post("/api/hypotheses", data=body, headers={"Content-Type": "application/json", **_signed(body)})
    assert response.status_code == 401 and mock_db.hypotheses.count_documents({}) == 0


@pytest.mark.parametrize("raw", [b"x", b"0123456789abcdef0123456"])
def test_a_webhook_secret_shorter_than_24_bytes_stops_the_app(mock_db: Any, raw: bytes) -> None:
    secret = "whsec_" + base64.b64encode(raw).decode()
    with pytest.raises(SettingsError, match="decodes to .* bytes.*at least 24") as caught:
        ingest_app(mock_db, make_settings(INGEST_WEBHOOK_SECRET=secret))
    assert secret not in str(caught.value)


def test_a_signed_request_that_was_not_accepted_may_be_sent_again_with_its_id(mock_db: Any, monkeypatch: Any) -> None:
    """Standard Webhooks senders resend with the same webhook-id; a 503 or a 4xx used none of it."""
    from pymongo.errors import AutoReconnect

    from ingest_app import routes_ingest

    run_id = insert_run(mock_db)
    client = ingest_app(mock_db, make_settings(INGEST_WEBHOOK_SECRET=SECRET)).test_client()
    body = _body(run_id)
    headers = {**CT, **_signed(body, msg_id="msg_retry")}
    real = routes_ingest.ingest
    calls = {"n": 0}

    def down_once(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise AutoReconnect("connection refused")
        return real(*args, **kwargs)

    monkeypatch.setattr(routes_ingest, "ingest", down_once)
    assert client.post("/api/ingest/events", data=body, headers=headers).status_code == 503
    resent = client.post("/api/ingest/events", data=body, headers=headers)
    assert resent.status_code == 200 and resent.json["accepted"] == 1
    assert client.post("/api/ingest/events", data=body, headers=headers).status_code == 403
    bad = b"not json"
    bad_headers = {**_signed(bad, msg_id="msg_bad"), "Content-Type": "application/json"}
    assert client.post("/api/ingest/event", data=bad, headers=bad_headers).status_code == 400
    # Still judged on its content, not refused as a replay: a 4xx took nothing in.
    assert client.post("/api/ingest/event", data=bad, headers=bad_headers).status_code == 400
