"""Who may call what: roles, named and rotated tokens, the sign-in throttle, the rate limit,
address and origin controls, and tokens the servers refuse to start with."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient

from ingest_app import create_app
from ops.cli import main as cli
from orchestrator import status_history
from orchestrator.credentials import MIN_TOKEN_CHARS
from orchestrator.errors import SettingsError
from orchestrator.events import make_event, seq_for
from orchestrator.runs import new_run_document
from orchestrator.settings import Settings
from tests.helpers import OPERATOR_TOKEN, READER_TOKEN, WORKER_TOKEN, bearer, make_settings

NDJSON = {"Content-Type": "application/x-ndjson"}
OTHER_OPERATOR = "operator-Second-Kz8Wq3Lp6Xv1Mr4Tn9Jb2"
METRICS_TOKEN = "metrics-Hd4Lq8Zx2Mv6Np1Tr5Wk9Bj3"


def _app(db: Any, **env: str) -> Flask:
    return create_app(make_settings(**env), db=db)


def _run(db: Any, status: str = "RUNNING") -> str:
    run = new_run_document("h-1")
    run.update(status=status, attempt=1)
    db.runs.insert_one(run)
    return run["_id"]


def _events_body(run_id: str) -> bytes:
    event = make_event("ai.run.log", run_id, seq_for(1, 1), "worker://pod", {"level": "info", "message": "m"})
    return (json.dumps(event) + "\n").encode()


def _calls(run_id: str) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """One request of each kind: the route, its method and what it sends."""
    return {
        "ingest": ("POST", "/api/ingest/events", {"data": _events_body(run_id), "headers": NDJSON}),
        "read": ("GET", f"/api/runs/{run_id}", {}),
        "list": ("GET", "/api/runs", {}),
        "events": ("GET", f"/api/runs/{run_id}/events", {}),
        "create": ("POST", "/api/hypotheses", {"json": {"title": "t", "idea": "i"}}),
        "cancel": ("POST", f"/api/runs/{run_id}/cancel", {"json": {}}),
    }


def _send(client: FlaskClient, call: tuple[str, str, dict[str, Any]], token: str | None) -> Any:
    method, path, kwargs = call
    headers = {**kwargs.get("headers", {}), **(bearer(token) if token else {})}
    return client.open(path, method=method, **{**kwargs, "headers": headers})


#: (credential, call) -> allowed? The design's table: a worker posts events and nothing else;
#: a reader reads; an operator reads and acts.
ALLOWED = {
    WORKER_TOKEN: {"ingest"},
    READER_TOKEN: {"read", "list", "events"},
    OPERATOR_TOKEN: {"read", "list", "events", "create", "cancel"},
}


@pytest.mark.parametrize("token", list(ALLOWED), ids=["worker", "reader", "operator"])
@pytest.mark.parametrize("call", ["ingest", "read", "list", "events", "create", "cancel"])
def test_each_role_may_do_what_the_design_says_and_nothing_else(mock_db: Any, token: str, call: str) -> None:
    run_id = _run(mock_db)
    response = _send(_app(mock_db).test_client(), _calls(run_id)[call], token)
    if call in ALLOWED[token]:
        assert response.status_code < 400, response.get_data(as_text=True)
    else:
        assert response.status_code == 403, response.get_data(as_text=True)
        assert "may not do this" in response.json["detail"]
        assert response.headers["WWW-Authenticate"] == 'Bearer error="insufficient_scope"'


@pytest.mark.parametrize("call", ["ingest", "read", "list", "events", "create", "cancel"])
def test_every_route_but_the_probes_needs_a_credential(mock_db: Any, call: str) -> None:
    run_id = _run(mock_db)
    client = _app(mock_db).test_client()
    assert _send(client, _calls(run_id)[call], None).status_code == 401
    assert _send(client, _calls(run_id)[call], "x" * 40 + "unknown-but-long").status_code == 403
    assert mock_db.events.count_documents({}) == 0 and mock_db.hypotheses.count_documents({}) == 0


def test_a_worker_token_cannot_download_an_artifact(mock_db: Any) -> None:
    run_id = _run(mock_db)
    client = _app(mock_db).test_client()
    response = client.get(f"/api/runs/{run_id}/artifacts/a-1/download", headers=bearer(WORKER_TOKEN))
    assert response.status_code == 403


def test_probes_are_open_and_metrics_takes_its_own_token_when_one_is_set(mock_db: Any) -> None:
    open_client = _app(mock_db).test_client()
    assert open_client.get("/healthz").status_code == 200 and open_client.get("/metrics").status_code == 200
    client = _app(mock_db, METRICS_TOKEN=METRICS_TOKEN).test_client()
    assert client.get("/healthz").status_code == 200 and client.get("/readyz").status_code == 200
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=bearer(OPERATOR_TOKEN)).status_code == 403
    assert client.get("/metrics", headers=bearer(METRICS_TOKEN)).status_code == 200
    assert client.get("/api/runs", headers=bearer(METRICS_TOKEN)).status_code == 403


def test_every_token_of_a_rotation_list_is_accepted(mock_db: Any) -> None:
    client = _app(mock_db, OPERATOR_TOKEN=f"{OPERATOR_TOKEN}, {OTHER_OPERATOR}").test_client()
    for token in (OPERATOR_TOKEN, OTHER_OPERATOR):
        assert client.get("/api/runs", headers=bearer(token)).status_code == 200


def test_a_named_credential_is_by_on_the_changes_it_makes(mock_db: Any) -> None:
    client = _app(mock_db, OPERATOR_TOKEN=f"alice:{OPERATOR_TOKEN}").test_client()
    run_id = _run(mock_db, status="QUEUED")
    response = client.post(f"/api/runs/{run_id}/cancel", json={"by": "mallory", "reason": "wrong idea"},
                           headers=bearer(OPERATOR_TOKEN))
    assert response.status_code == 200, response.json
    run = mock_db.runs.find_one({"_id": run_id})
    assert run["cancel"]["by"] == "alice"
    assert status_history.of_run(mock_db, run_id)[-1]["by"] == "alice"
    retried = client.post(f"/api/runs/{run_id}/retry", headers=bearer(OPERATOR_TOKEN))
    assert retried.status_code == 200 and status_history.of_run(mock_db, run_id)[-1]["by"] == "alice"


def test_an_unnamed_credential_records_the_by_its_frontend_relays(mock_db: Any) -> None:
    client = _app(mock_db).test_client()
    run_id = _run(mock_db, status="QUEUED")
    client.post(f"/api/runs/{run_id}/cancel", json={"by": "bob"}, headers=bearer(OPERATOR_TOKEN))
    assert status_history.of_run(mock_db, run_id)[-1]["by"] == "bob"
    run_2 = _run(mock_db, status="QUEUED")
    client.post(f"/api/runs/{run_2}/cancel", headers=bearer(OPERATOR_TOKEN))
    assert status_history.of_run(mock_db, run_2)[-1]["by"] == "api"


@pytest.mark.parametrize(("value", "words"), [
    ("short", [f"at least {MIN_TOKEN_CHARS}"]),
    ("change-me", ["at least"]),
    ("change-me-change-me-change-me-change-me-42", ["placeholder"]),
    ("a" * 64, ["not random"]),
    ("bad name:" + WORKER_TOKEN, ["name", "alice:TOKEN"]),
    (f"{WORKER_TOKEN} x", ["spaces"]),
])
def test_weak_or_malformed_tokens_stop_every_process_at_start(value: str, words: list[str]) -> None:
    with pytest.raises(SettingsError) as caught:
        make_settings(INGEST_TOKEN=value)
    message = str(caught.value)
    assert message.startswith("INGEST_TOKEN: entry 1")
    for word in words:
        assert word in message
    assert value not in message or value == "short"


def test_one_token_may_serve_one_role_only() -> None:
    with pytest.raises(SettingsError, match="INGEST_TOKEN and OPERATOR_TOKEN"):
        make_settings(OPERATOR_TOKEN=WORKER_TOKEN)


def test_manage_runs_token_prints_a_token_the_servers_accept() -> None:
    runner = CliRunner()
    first = runner.invoke(cli, ["token"]).output.strip()
    named = runner.invoke(cli, ["token", "--name", "alice"]).output.strip()
    assert len(first) >= MIN_TOKEN_CHARS and first != runner.invoke(cli, ["token"]).output.strip()
    settings = Settings.from_env({"MONGODB_URL": "mongomock://x/t", "INGEST_TOKEN": first, "OPERATOR_TOKEN": named})
    assert {(c.role, c.name) for c in settings.credentials} == {("worker", None), ("operator", "alice")}
    assert runner.invoke(cli, ["token", "--name", "no spaces"]).exit_code == 2


def test_the_open_development_mode_lets_everyone_through(mock_db: Any) -> None:
    client = _app(mock_db, INGEST_AUTH="disabled", INGEST_TOKEN="", READER_TOKEN="", OPERATOR_TOKEN="").test_client()
    run_id = _run(mock_db)
    for call in _calls(run_id).values():
        assert _send(client, call, None).status_code < 400


def test_failed_sign_ins_from_one_address_are_throttled_with_retry_after(mock_db: Any) -> None:
    client = _app(mock_db, AUTH_FAILURE_LIMIT="3/hour").test_client()
    wrong = "y" * 40 + "wrong-token"
    for _ in range(3):
        assert client.get("/api/runs", headers=bearer(wrong)).status_code == 403
    throttled = client.get("/api/runs", headers=bearer(READER_TOKEN))
    assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) >= 1
    assert "failed sign-ins" in throttled.json["detail"]
    other = client.get("/api/runs", headers=bearer(READER_TOKEN), environ_base={"REMOTE_ADDR": "10.9.9.9"})
    assert other.status_code == 200
    assert client.get("/healthz").status_code == 200


def test_x_forwarded_for_counts_only_behind_the_trusted_proxies(mock_db: Any) -> None:
    wrong = "y" * 40 + "wrong-token"
    forwarded = {**bearer(wrong), "X-Forwarded-For": "203.0.113.7"}
    direct = _app(mock_db, AUTH_FAILURE_LIMIT="2/hour").test_client()
    for n in range(2):
        direct.get("/api/runs", headers={**forwarded, "X-Forwarded-For": f"203.0.113.{n}"})
    # Without a trusted proxy the header is ignored: both failures counted against the peer.
    assert direct.get("/api/runs", headers=bearer(READER_TOKEN)).status_code == 429
    proxied = _app(mock_db, AUTH_FAILURE_LIMIT="2/hour", TRUSTED_PROXIES="1").test_client()
    for _ in range(2):
        proxied.get("/api/runs", headers=forwarded, environ_base={"REMOTE_ADDR": "10.0.0.5"})
    blocked = proxied.get("/api/runs", headers={**bearer(READER_TOKEN), "X-Forwarded-For": "203.0.113.7"},
                          environ_base={"REMOTE_ADDR": "10.0.0.5"})
    other_client = proxied.get("/api/runs", headers={**bearer(READER_TOKEN), "X-Forwarded-For": "198.51.100.1"},
                               environ_base={"REMOTE_ADDR": "10.0.0.5"})
    assert blocked.status_code == 429 and other_client.status_code == 200


def test_requests_per_credential_are_limited_with_retry_after(mock_db: Any) -> None:
    client = _app(mock_db, RATE_LIMIT="3/hour").test_client()
    for _ in range(3):
        assert client.get("/api/runs", headers=bearer(READER_TOKEN)).status_code == 200
    limited = client.get("/api/runs", headers=bearer(READER_TOKEN))
    assert limited.status_code == 429 and limited.mimetype == "application/problem+json"
    assert int(limited.headers["Retry-After"]) >= 1
    assert client.get("/api/runs", headers=bearer(OPERATOR_TOKEN)).status_code == 200
    assert client.get("/healthz").status_code == 200 and client.get("/metrics").status_code == 200


def test_ingest_allow_cidrs_limits_the_worker_routes_to_the_pods_networks(mock_db: Any) -> None:
    client = _app(mock_db, INGEST_ALLOW_CIDRS="10.0.0.0/8, 2001:db8::/32").test_client()
    run_id = _run(mock_db)
    ingest = _calls(run_id)["ingest"]
    assert _send(client, ingest, WORKER_TOKEN).status_code == 403  # from 127.0.0.1
    method, path, kwargs = ingest
    inside = client.open(path, method=method, data=kwargs["data"], headers={**NDJSON, **bearer(WORKER_TOKEN)},
                         environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert inside.status_code == 200
    assert client.get("/api/runs", headers=bearer(READER_TOKEN)).status_code == 200  # reads are not limited


@pytest.mark.parametrize("value", ["10.0.0.0/33", "pods", "*"])
def test_a_bad_network_is_a_settings_error(value: str) -> None:
    with pytest.raises(SettingsError, match="INGEST_ALLOW_CIDRS"):
        make_settings(INGEST_ALLOW_CIDRS=value)


def test_cors_answers_only_the_configured_origins(mock_db: Any) -> None:
    closed = _app(mock_db).test_client()
    preflight = {"Origin": "https://lab.example.org", "Access-Control-Request-Method": "GET",
                 "Access-Control-Request-Headers": "authorization"}
    assert "Access-Control-Allow-Origin" not in closed.options("/api/runs", headers=preflight).headers
    client = _app(mock_db, CORS_ORIGINS="https://lab.example.org").test_client()
    allowed = client.options("/api/runs", headers=preflight)
    assert allowed.status_code == 200 and allowed.headers["Access-Control-Allow-Origin"] == "https://lab.example.org"
    assert "authorization" in allowed.headers["Access-Control-Allow-Headers"].lower()
    other = client.options("/api/runs", headers={**preflight, "Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    read = client.get("/api/runs", headers={**bearer(READER_TOKEN), "Origin": "https://lab.example.org"})
    assert read.headers["Access-Control-Allow-Origin"] == "https://lab.example.org"


@pytest.mark.parametrize("value", ["*", "lab.example.org", "https://lab.example.org/path"])
def test_a_bad_origin_is_a_settings_error(value: str) -> None:
    with pytest.raises(SettingsError, match="CORS_ORIGINS"):
        make_settings(CORS_ORIGINS=value)


def test_made_up_methods_do_not_grow_the_metrics(mock_db: Any) -> None:
    app = _app(mock_db)
    client = app.test_client()
    for n in range(50):
        client.open("/api/runs", method=f"FOO{n}")
    text = client.get("/metrics").get_data(as_text=True)
    methods = {line.split('method="')[1].split('"')[0] for line in text.splitlines() if 'method="' in line}
    assert methods <= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"} and "other" in methods


def test_counters_the_database_cannot_read_neither_block_nor_break_a_request(mock_db: Any, monkeypatch: Any) -> None:
    """During an outage the limiter's reads (the check, and the headers after the response) must
    not turn the route's answer into a 500; a hit it cannot count is the outage's 503."""
    from pymongo.errors import AutoReconnect

    from orchestrator import expiring

    client = _app(mock_db, RATE_LIMIT="5/hour").test_client()

    def down(*_: Any, **__: Any) -> Any:
        raise AutoReconnect("connection refused")

    monkeypatch.setattr(expiring, "current", down)
    assert client.get("/api/runs", headers=bearer(READER_TOKEN)).status_code == 200
    monkeypatch.setattr(expiring, "count", down)
    response = client.get("/api/runs", headers=bearer(READER_TOKEN))
    assert response.status_code == 503 and response.headers["Retry-After"]


def test_a_credential_named_api_cannot_pass_a_body_by_off_as_its_own(mock_db: Any) -> None:
    client = _app(mock_db, OPERATOR_TOKEN=f"api:{OPERATOR_TOKEN}").test_client()
    run_id = _run(mock_db, status="QUEUED")
    client.post(f"/api/runs/{run_id}/cancel", json={"by": "mallory"}, headers=bearer(OPERATOR_TOKEN))
    assert status_history.of_run(mock_db, run_id)[-1]["by"] == "api"


@pytest.mark.parametrize(("value", "secret_part"), [
    ("Zx9/Qw8+Er7Ty6Ui5Op4:As3Df2Gh1Jk0Lz9Xc8Vb7Nm6Qa5Ws4Ed3", "Zx9/Qw8+Er7Ty6Ui5Op4"),
    ("alice:As3Df2Gh1Jk0Lz9Xc8:Vb7Nm6Qa5Ws4Ed3Rf2Tg1Yh0", "As3Df2Gh1Jk0Lz9Xc8"),
    ("é" + WORKER_TOKEN, "é"),
])
def test_a_token_with_a_colon_or_beyond_ascii_is_refused_without_showing_it(value: str, secret_part: str) -> None:
    with pytest.raises(SettingsError) as caught:
        make_settings(INGEST_TOKEN=value)
    assert secret_part not in str(caught.value) and "manage-runs token" in str(caught.value)


@pytest.mark.parametrize("value", ["0/second", "0 per minute", "5/0 second"])
def test_a_rate_of_zero_is_a_settings_error(value: str) -> None:
    with pytest.raises(SettingsError, match="RATE_LIMIT"):
        make_settings(RATE_LIMIT=value)


def test_the_scraper_is_not_locked_out_with_its_address(mock_db: Any) -> None:
    client = _app(mock_db, AUTH_FAILURE_LIMIT="2/hour", METRICS_TOKEN=METRICS_TOKEN).test_client()
    for _ in range(3):
        client.get("/api/runs", headers=bearer("q" * 40 + "wrong-token"))
    assert client.get("/api/runs", headers=bearer(READER_TOKEN)).status_code == 429
    assert client.get("/metrics", headers=bearer(METRICS_TOKEN)).status_code == 200


def test_an_ipv4_mapped_peer_address_is_matched_against_ipv4_networks(mock_db: Any) -> None:
    client = _app(mock_db, INGEST_ALLOW_CIDRS="10.0.0.0/8").test_client()
    method, path, kwargs = _calls(_run(mock_db))["ingest"]
    answer = client.open(path, method=method, data=kwargs["data"], headers={**NDJSON, **bearer(WORKER_TOKEN)},
                         environ_base={"REMOTE_ADDR": "::ffff:10.1.2.3"})
    assert answer.status_code == 200
