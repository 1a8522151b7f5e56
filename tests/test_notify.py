"""Outgoing run notifications (`orchestrator.notify`): which changes notify, once, in which body,
signed how, and how a receiver's failures are retried; against a real local HTTP receiver."""

from __future__ import annotations

import base64
import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from standardwebhooks.webhooks import WebhookVerificationError

from ops.dispatcher import start_notifier
from orchestrator import notify, runs, status_history
from orchestrator.errors import SettingsError
from orchestrator.notify import Notifier, Policy
from orchestrator.settings import SECRET_VARIABLES, Settings
from orchestrator.utc import utcnow
from tests.helpers import make_settings
from tests.ingest_helpers import Worker, apply, full_run, insert_run
from tests.notify_helpers import Answer, receiving

SECRET = "whsec_" + base64.b64encode(b"notify-secret-of-32-random-byte").decode()
#: Short times, so a retry is due within a test.
FAST = Policy(first_retry_s=0.1, timeout_s=0.5, max_tries=4, hold_s=60)


def _notifier(db: Any, url: str, policy: Policy = FAST, **env: str) -> Notifier:
    return Notifier(db, make_settings(NOTIFY_URL=url, **env), policy=policy)


def _awaiting(db: Any) -> str:
    """A run that ingest moved through RUNNING and AUTO_VALIDATING to AWAITING_HUMAN."""
    run_id = insert_run(db, status="STARTING")
    apply(db, full_run(Worker(run_id)))
    assert db.runs.find_one({"_id": run_id})["status"] == "AWAITING_HUMAN"
    return run_id


def _failed(db: Any) -> str:
    run_id = insert_run(db, status="STARTING", max_attempts=1)
    apply(db, full_run(Worker(run_id), outcome="failure"))
    assert db.runs.find_one({"_id": run_id})["status"] == "FAILED"
    return run_id


def _until(notifier: Notifier, done: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, list(notifier.db.notifications.find())
        notifier.run_once()
        time.sleep(0.02)


def _only(db: Any) -> dict[str, Any]:
    [doc] = list(db.notifications.find())
    return doc


def test_awaiting_human_failure_and_both_review_decisions_notify_and_no_other_change_does(mock_db: Any) -> None:
    accepted, rejected, failed = _awaiting(mock_db), _awaiting(mock_db), _failed(mock_db)
    runs.review_run(mock_db, accepted, "accept", by="alice")
    runs.review_run(mock_db, rejected, "reject", by="bob", notes="wrong baseline")
    canceled = insert_run(mock_db, status="QUEUED")
    runs.cancel_run(mock_db, canceled, by="carol")
    with receiving() as receiver:
        notifier = _notifier(mock_db, receiver.url)
        assert notifier.run_once() == {"created": 5, "sent": 5, "retrying": 0, "failed": 0}
        got = sorted((r.json()["runId"], r.json()["type"]) for r in receiver.wait_for(5))
    assert got == sorted([(accepted, "run.awaiting_human"), (accepted, "run.human_validated"),
                          (rejected, "run.awaiting_human"), (rejected, "run.human_rejected"), (failed, "run.failed")])
    unnotified = {c["to"] for c in mock_db.status_history.find()} - {"AWAITING_HUMAN", "FAILED", "HUMAN_VALIDATED", "HUMAN_REJECTED"}
    assert unnotified == {"RUNNING", "AUTO_VALIDATING", "CANCELED"} and mock_db.notifications.count_documents({}) == 5


def test_notify_on_chooses_the_statuses(mock_db: Any) -> None:
    awaiting = _awaiting(mock_db)
    canceled = insert_run(mock_db, status="QUEUED")
    runs.cancel_run(mock_db, canceled, by="carol")
    with receiving() as receiver:
        _notifier(mock_db, receiver.url, NOTIFY_ON="canceled").run_once()
        [request] = receiver.wait_for(1)
    assert (request.json()["runId"], request.json()["status"]) == (canceled, "CANCELED")
    assert mock_db.notifications.count_documents({"runId": awaiting}) == 0


def test_two_notifiers_deliver_each_notification_once(mock_db: Any) -> None:
    run_ids = {_awaiting(mock_db) for _ in range(3)}
    with receiving() as receiver:
        notifiers = [_notifier(mock_db, receiver.url) for _ in range(2)]
        passes = [threading.Thread(target=n.run_once) for n in notifiers for _ in range(3)]
        for thread in passes:
            thread.start()
        for thread in passes:
            thread.join(10)
        for notifier in notifiers:
            notifier.run_once()
        time.sleep(0.2)
        assert sorted(r.json()["runId"] for r in receiver.received) == sorted(run_ids)
    assert notify.counts(mock_db) == {"pending": 0, "sent": 3, "failed": 0}


def test_a_try_another_notifier_took_is_not_sent_again(mock_db: Any) -> None:
    _awaiting(mock_db)
    with receiving() as receiver:
        first, second = _notifier(mock_db, receiver.url), _notifier(mock_db, receiver.url)
        first.collect()
        stale = _only(mock_db)  # what the second read before the first sent it
        assert first.deliver(stale) == "sent"
        assert second.deliver(stale) is None
        assert len(receiver.wait_for(1)) == 1


def test_a_change_older_than_the_lookback_is_not_notified(mock_db: Any) -> None:
    old, new = insert_run(mock_db, status="AUTO_VALIDATING"), insert_run(mock_db, status="AUTO_VALIDATING")
    for run_id, age in ((old, timedelta(hours=2)), (new, timedelta(minutes=5))):
        status_history.record(mock_db, run_id, "c1", before="AUTO_VALIDATING", after="AWAITING_HUMAN", by="ingest",
                              attempt=1, reason="verdict", at=utcnow() - age)
    with receiving() as receiver:
        assert _notifier(mock_db, receiver.url).run_once()["sent"] == 1
        [request] = receiver.wait_for(1)
    assert request.json()["runId"] == new
    assert [d["runId"] for d in mock_db.notifications.find()] == [new]


def test_the_json_body_names_the_run_its_title_the_change_and_a_console_link(mock_db: Any) -> None:
    run_id = _awaiting(mock_db)
    mock_db.hypotheses.update_one({}, {"$set": {"title": "Sparse attention helps"}})
    runs.review_run(mock_db, run_id, "reject", by="alice", notes="baseline too weak")
    with receiving() as receiver:
        _notifier(mock_db, receiver.url, CONSOLE_URL="https://console.example.org/", NOTIFY_ON="HUMAN_REJECTED").run_once()
        [request] = receiver.wait_for(1)
    body = request.json()
    at = body.pop("at")
    assert body == {"type": "run.human_rejected", "runId": run_id, "title": "Sparse attention helps",
                    "status": "HUMAN_REJECTED", "from": "AWAITING_HUMAN", "by": "alice",
                    "reason": "review: reject (baseline too weak)", "attempt": 1,
                    "url": f"https://console.example.org/runs/{run_id}"}
    assert abs(datetime.fromisoformat(at) - datetime.now(UTC)) < timedelta(minutes=1) and at.endswith("Z")
    assert request.headers["content-type"] == "application/json" and request.path == "/hooks/runs"
    assert _only(mock_db)["event"]["type"] == "run.human_rejected"


def test_the_slack_body_is_text_and_blocks_a_slack_incoming_webhook_accepts(mock_db: Any) -> None:
    run_id = _awaiting(mock_db)
    mock_db.hypotheses.update_one({}, {"$set": {"title": "A <b> & c"}})
    with receiving() as receiver:
        _notifier(mock_db, receiver.url, NOTIFY_FORMAT="slack", CONSOLE_URL="https://console.example.org").run_once()
        [request] = receiver.wait_for(1)
    body = request.json()
    assert set(body) == {"text", "blocks"} and run_id in body["text"] and "AWAITING_HUMAN" in body["text"]
    section, context = body["blocks"]
    assert section["type"] == "section" and section["text"]["type"] == "mrkdwn"
    assert "*A &lt;b&gt; &amp; c*" in section["text"]["text"]
    assert f"<https://console.example.org/runs/{run_id}|{run_id}>" in section["text"]["text"]
    assert "waiting for your review" in section["text"]["text"]
    assert context["type"] == "context" and "by ingest" in context["elements"][0]["text"]


def test_the_signature_verifies_with_the_secret_and_the_webhook_id_stays_the_same_on_every_try(mock_db: Any) -> None:
    run_id = _awaiting(mock_db)
    with receiving(Answer(500)) as receiver:
        notifier = _notifier(mock_db, receiver.url, NOTIFY_SECRET=SECRET)
        _until(notifier, lambda: notify.counts(mock_db)["sent"] == 1)
        first, second = receiver.wait_for(2)
    for request in (first, second):
        request.verify(SECRET)
        assert request.headers["webhook-signature"].startswith("v1,")
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == _only(mock_db)["_id"]
    assert _only(mock_db)["_id"].startswith(f"{run_id}:")
    other = "whsec_" + base64.b64encode(b"x" * 32).decode()
    with pytest.raises(WebhookVerificationError):
        first.verify(other)


def test_without_a_secret_the_body_goes_unsigned_with_its_id_and_timestamp(mock_db: Any) -> None:
    _awaiting(mock_db)
    with receiving() as receiver:
        _notifier(mock_db, receiver.url).run_once()
        [request] = receiver.wait_for(1)
    assert "webhook-signature" not in request.headers
    assert request.headers["webhook-id"] and abs(int(request.headers["webhook-timestamp"]) - time.time()) < 60


def test_a_500_is_tried_again_after_the_backoff_and_then_sent(mock_db: Any) -> None:
    _awaiting(mock_db)
    with receiving(Answer(500, body="boom"), Answer(502)) as receiver:
        notifier = _notifier(mock_db, receiver.url, policy=Policy(first_retry_s=0.3, max_tries=4, timeout_s=0.5))
        assert notifier.run_once()["retrying"] == 1
        doc = _only(mock_db)
        assert (doc["state"], doc["attempts"], doc["lastError"]) == ("pending", 1, "HTTP 500: boom")
        assert notifier.run_once()["retrying"] == 0, "not tried again before its backoff"
        _until(notifier, lambda: notify.counts(mock_db)["sent"] == 1)
        assert len(receiver.wait_for(3)) == 3
    doc = _only(mock_db)
    assert (doc["state"], doc["attempts"], doc["lastError"]) == ("sent", 3, None) and doc["sentAt"] is not None
    assert Policy(first_retry_s=5).retry_in_s(1) == 5 and Policy(first_retry_s=5).retry_in_s(4) == 40


def test_a_receiver_that_does_not_answer_in_time_is_tried_again(mock_db: Any) -> None:
    _awaiting(mock_db)
    with receiving(Answer(200, delay_s=1.5)) as receiver:
        notifier = _notifier(mock_db, receiver.url, policy=Policy(first_retry_s=0.1, timeout_s=0.3, max_tries=3))
        started = time.monotonic()
        assert notifier.run_once()["retrying"] == 1
        assert time.monotonic() - started < 1.2, "the timeout ends the try"
        assert _only(mock_db)["lastError"] == "no answer within 0.3s"
        _until(notifier, lambda: notify.counts(mock_db)["sent"] == 1)
        assert len(receiver.received) == 2


@pytest.mark.parametrize("status", [400, 401, 404, 410, 301])
def test_a_4xx_or_a_redirect_fails_at_once_with_the_reason_and_a_warning_naming_the_run(
        mock_db: Any, caplog: pytest.LogCaptureFixture, status: int) -> None:
    run_id = _awaiting(mock_db)
    with receiving(Answer(status, headers={"Location": "http://elsewhere/"}, body="no such hook")) as receiver:
        with caplog.at_level(logging.WARNING, logger="orchestrator.notify"):
            assert _notifier(mock_db, receiver.url).run_once()["failed"] == 1
        time.sleep(0.3)
        assert len(receiver.received) == 1, "never tried again"
    doc = _only(mock_db)
    assert (doc["state"], doc["attempts"]) == ("failed", 1)
    assert doc["lastError"].startswith(f"HTTP {status}: no such hook")
    [line] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert run_id in line and f"HTTP {status}" in line


@pytest.mark.parametrize("status", [408, 429, 503])
def test_408_429_and_5xx_are_tried_again(mock_db: Any, status: int) -> None:
    _awaiting(mock_db)
    with receiving(Answer(status)) as receiver:
        notifier = _notifier(mock_db, receiver.url)
        assert notifier.run_once()["retrying"] == 1
        _until(notifier, lambda: notify.counts(mock_db)["sent"] == 1)
        assert len(receiver.received) == 2


@pytest.mark.parametrize("kind", ["seconds", "http-date"])
def test_retry_after_is_honoured(mock_db: Any, kind: str) -> None:
    _awaiting(mock_db)
    later = datetime.now(UTC) + timedelta(seconds=40)
    value = "30" if kind == "seconds" else format_datetime(later, usegmt=True)
    with receiving(Answer(503, headers={"Retry-After": value})) as receiver:
        notifier = _notifier(mock_db, receiver.url)
        before = utcnow()
        assert notifier.run_once()["retrying"] == 1
        assert notifier.run_once()["retrying"] == 0
        assert len(receiver.received) == 1
    wait = (_only(mock_db)["nextAttemptAt"] - before).total_seconds()
    assert 28 <= wait <= 42, wait  # not the 0.1 s backoff


def test_after_the_last_try_the_notification_fails_with_a_warning_naming_the_run(
        mock_db: Any, caplog: pytest.LogCaptureFixture) -> None:
    run_id = _failed(mock_db)
    with receiving(*[Answer(500, body="down")] * 3) as receiver:
        notifier = _notifier(mock_db, receiver.url, policy=Policy(first_retry_s=0.05, max_tries=3, timeout_s=0.5))
        with caplog.at_level(logging.WARNING, logger="orchestrator.notify"):
            _until(notifier, lambda: notify.counts(mock_db)["failed"] == 1)
        assert len(receiver.received) == 3
    doc = _only(mock_db)
    assert (doc["state"], doc["attempts"], doc["lastError"]) == ("failed", 3, "HTTP 500: down")
    [line] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert run_id in line and "3 tries" in line and "HTTP 500: down" in line


def test_an_unreachable_receiver_is_retried_and_its_url_path_is_never_shown(
        mock_db: Any, caplog: pytest.LogCaptureFixture) -> None:
    run_id = _awaiting(mock_db)
    with receiving() as closed:
        url = closed.url.replace("/hooks/runs", "/services/T0/B0/SeCrEtPaTh")
    notifier = _notifier(mock_db, url, policy=Policy(first_retry_s=0.05, max_tries=2, timeout_s=0.5))
    with caplog.at_level(logging.INFO):
        _until(notifier, lambda: notify.counts(mock_db)["failed"] == 1)
    doc = _only(mock_db)
    assert doc["attempts"] == 2 and "ConnectionError" in doc["lastError"]
    shown = doc["lastError"] + caplog.text + repr(notifier.settings.redacted())
    assert "SeCrEtPaTh" not in shown and run_id in caplog.text


def test_recent_lists_the_newest_first_and_counts_count_each_state(mock_db: Any) -> None:
    first = _awaiting(mock_db)
    with receiving(Answer(404)) as receiver:
        _notifier(mock_db, receiver.url).run_once()
        second = _awaiting(mock_db)
        time.sleep(0.01)
        _notifier(mock_db, receiver.url).run_once()
    assert [d["runId"] for d in notify.recent(mock_db)] == [second, first]
    assert [d["runId"] for d in notify.recent(mock_db, limit=1)] == [second]
    assert notify.counts(mock_db) == {"pending": 0, "sent": 1, "failed": 1}


def test_the_dispatcher_s_notifier_thread_delivers_and_stops_with_the_stop_event(mock_db: Any) -> None:
    run_id = _awaiting(mock_db)
    stop = threading.Event()
    with receiving() as receiver:
        thread = start_notifier(mock_db, make_settings(NOTIFY_URL=receiver.url, SWEEP_INTERVAL_S="0.05"), stop)
        assert thread is not None and thread.daemon
        [request] = receiver.wait_for(1)
        stop.set()
        thread.join(2)
    assert request.json()["runId"] == run_id and not thread.is_alive()
    assert start_notifier(mock_db, make_settings(), stop) is None, "no NOTIFY_URL, no thread"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"NOTIFY_URL": "hooks.example.org/services/x"}, "NOTIFY_URL"),
        ({"NOTIFY_SECRET": "whsec_" + base64.b64encode(b"short").decode()}, "NOTIFY_SECRET decodes to 5 bytes"),
        ({"NOTIFY_SECRET": "not-a-secret"}, "NOTIFY_SECRET is not a valid"),
        ({"NOTIFY_FORMAT": "xml"}, "NOTIFY_FORMAT"),
        ({"NOTIFY_ON": "AWAITING_HUMAN,DONE"}, "NOTIFY_ON: 'DONE'"),
        ({"NOTIFY_ON": " , "}, "NOTIFY_ON"),
        ({"CONSOLE_URL": "console.example.org"}, "CONSOLE_URL"),
    ],
)
def test_a_bad_notify_setting_fails_at_start_naming_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named) as caught:
        Settings.from_env(env)
    assert "services/x" not in str(caught.value) and "not-a-secret" not in str(caught.value)


def test_notify_settings_default_and_stay_secret() -> None:
    default = Settings.from_env({})
    assert (default.notify_url, default.notify_secret, default.notify_format, default.console_url) == (None, None, "json", None)
    assert default.notify_on == ("AWAITING_HUMAN", "FAILED", "HUMAN_VALIDATED", "HUMAN_REJECTED")
    given = Settings.from_env({"NOTIFY_URL": "https://hooks.example.org/services/T/B/key", "NOTIFY_SECRET": SECRET,
                               "NOTIFY_ON": "failed, Awaiting_Human", "NOTIFY_FORMAT": "Slack"})
    assert given.notify_on == ("FAILED", "AWAITING_HUMAN") and given.notify_format == "slack"
    shown = repr(given.redacted())
    assert "services/T/B/key" not in shown and SECRET not in shown and "https://hooks.example.org/***" in shown
    assert {"NOTIFY_URL", "NOTIFY_SECRET"} <= set(SECRET_VARIABLES)
