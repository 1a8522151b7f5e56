"""The web console's routes through Flask's client: sign-in and sessions, roles, CSRF, the pages,
the forms and their validation, the live JSON, error pages."""

from __future__ import annotations

import re
from typing import Any

import pytest

from ingest_app import create_app
from orchestrator.events import seq_for
from tests.console_helpers import HTML, SECRET_KEY, console_app, csrf, post_form, run_with_history, sign_in, text_of
from tests.fakes import DownDb
from tests.helpers import OPERATOR_TOKEN, READER_TOKEN, WORKER_TOKEN, make_settings
from tests.ingest_helpers import Worker, apply, insert_run


@pytest.fixture
def app(mock_db: Any) -> Any:
    return console_app(mock_db)


# --- sign-in ----------------------------------------------------------------------------------


def test_a_page_without_a_session_sends_the_browser_to_sign_in_and_back(app: Any) -> None:
    client = app.test_client()
    response = client.get("/runs/r-1?type=ai.run.log", headers=HTML)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/signin?next=")
    signed = client.post("/signin", data={"token": READER_TOKEN, "next": "/runs/r-1"}, headers=HTML)
    assert signed.status_code == 302 and signed.headers["Location"] == "/runs/r-1"


def test_the_session_cookie_is_http_only_and_same_site_and_holds_no_token(app: Any) -> None:
    response = app.test_client().post("/signin", data={"token": OPERATOR_TOKEN}, headers=HTML)
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert OPERATOR_TOKEN not in cookie


@pytest.mark.parametrize(("token", "words"), [
    (WORKER_TOKEN, "worker token cannot sign in"),
    ("not-a-token-Qx7Lm2Vb9Rt4Kp8Zs3Nd6Hf", "not one this server accepts"),
])
def test_a_worker_token_or_an_unknown_one_does_not_sign_in(app: Any, token: str, words: str) -> None:
    client = app.test_client()
    response = client.post("/signin", data={"token": token}, headers=HTML)
    assert response.status_code == 403
    assert words in text_of(response)
    assert client.get("/", headers=HTML).status_code == 302


def test_repeated_wrong_tokens_are_throttled_per_address(mock_db: Any) -> None:
    app = console_app(mock_db, AUTH_FAILURE_LIMIT="3/minute")
    client = app.test_client()
    for _ in range(3):
        client.post("/signin", data={"token": "wrong-Qx7Lm2Vb9Rt4Kp8Zs3Nd6Hf1Jc"}, headers=HTML)
    response = client.post("/signin", data={"token": OPERATOR_TOKEN}, headers=HTML)
    assert response.status_code == 429
    assert "Too many failed sign-ins" in text_of(response)


def test_without_secret_key_the_sign_in_page_says_what_to_set(mock_db: Any) -> None:
    app = create_app(make_settings(), db=mock_db)
    response = app.test_client().get("/signin", headers=HTML)
    assert response.status_code == 503
    assert "SECRET_KEY is not set" in text_of(response)


def test_sign_in_never_redirects_to_another_site(app: Any) -> None:
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example", "javascript:alert(1)"):
        response = app.test_client().post("/signin", data={"token": READER_TOKEN, "next": target}, headers=HTML)
        assert response.headers["Location"] == "/", target


def test_rotating_a_token_out_ends_the_sessions_it_opened(mock_db: Any) -> None:
    client = sign_in(console_app(mock_db), OPERATOR_TOKEN)
    assert client.get("/", headers=HTML).status_code == 200
    rotated = console_app(mock_db, OPERATOR_TOKEN="operator-new-Lk4Ji2Zy9Xw7Vu5Ts3Rq1Po8")
    client.application = rotated  # the same browser, after the app restarted with the new token list
    assert client.get("/", headers=HTML).status_code == 302


def test_a_session_signed_with_another_key_is_not_accepted(mock_db: Any) -> None:
    client = sign_in(console_app(mock_db), OPERATOR_TOKEN)
    client.application = console_app(mock_db, SECRET_KEY="another-key-Rx5Tv1Hk3Jd8Ls2Mq7Nw4Pz9")
    assert client.get("/", headers=HTML).status_code == 302


def test_sign_out_ends_the_session(app: Any) -> None:
    client = sign_in(app, READER_TOKEN)
    response = client.post("/signout", data={"csrf_token": csrf(client)}, headers=HTML)
    assert response.status_code == 302
    assert client.get("/", headers=HTML).status_code == 302


def test_the_api_does_not_take_the_console_cookie(app: Any) -> None:
    client = sign_in(app, OPERATOR_TOKEN)
    assert client.get("/api/runs").status_code == 401


def test_the_open_development_mode_needs_no_sign_in(mock_db: Any) -> None:
    app = create_app(make_settings(INGEST_AUTH="disabled"), db=mock_db)
    assert app.test_client().get("/", headers=HTML).status_code == 200


# --- roles and CSRF ---------------------------------------------------------------------------


def test_a_reader_sees_no_action_buttons_and_cannot_post_one(app: Any, mock_db: Any) -> None:
    run_id = insert_run(mock_db, status="RUNNING")
    client = sign_in(app, READER_TOKEN)
    page = client.get(f"/runs/{run_id}", headers=HTML)
    assert "Cancel run" not in text_of(page) and "New hypothesis" not in text_of(page)
    response = post_form(client, f"/runs/{run_id}/cancel")
    assert response.status_code == 403
    assert mock_db.runs.find_one({"_id": run_id})["cancelRequested"] is False


def test_a_form_without_the_session_csrf_token_changes_nothing(app: Any, mock_db: Any) -> None:
    run_id = insert_run(mock_db, status="QUEUED", attempt=0)
    client = sign_in(app, OPERATOR_TOKEN)
    for token in ("", "forged"):
        response = client.post(f"/runs/{run_id}/cancel", data={"csrf_token": token, "confirmed": "1"}, headers=HTML)
        assert response.status_code == 400
        assert "Form expired" in text_of(response)
    assert mock_db.runs.find_one({"_id": run_id})["status"] == "QUEUED"


def test_pages_forbid_framing_and_foreign_scripts(app: Any) -> None:
    response = sign_in(app, READER_TOKEN).get("/", headers=HTML)
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY"


# --- actions ----------------------------------------------------------------------------------


def test_cancel_asks_for_confirmation_first_then_cancels_by_the_token_name(mock_db: Any) -> None:
    app = console_app(mock_db, OPERATOR_TOKEN=f"alice:{OPERATOR_TOKEN}")
    run_id = insert_run(mock_db, status="QUEUED", attempt=0)
    client = sign_in(app, OPERATOR_TOKEN)
    first = client.post(f"/runs/{run_id}/cancel", data={"csrf_token": csrf(client)}, headers=HTML)
    assert first.status_code == 200 and "Are you sure?" in text_of(first)
    assert mock_db.runs.find_one({"_id": run_id})["status"] == "QUEUED"
    done = post_form(client, f"/runs/{run_id}/cancel")
    assert done.status_code == 302
    run = mock_db.runs.find_one({"_id": run_id})
    assert run["status"] == "CANCELED" and run["cancel"]["by"] == "alice"
    assert "Canceled." in text_of(client.get(done.headers["Location"], headers=HTML))


def test_cancel_of_an_ended_run_says_why_and_changes_nothing(app: Any, mock_db: Any) -> None:
    run_id = run_with_history(mock_db)
    client = sign_in(app, OPERATOR_TOKEN)
    page = client.get(post_form(client, f"/runs/{run_id}/cancel").headers["Location"], headers=HTML)
    assert "Not canceled" in text_of(page) and "nothing to cancel" in text_of(page)


def test_retry_queues_a_failed_run_again(app: Any, mock_db: Any) -> None:
    run_id = insert_run(mock_db, status="FAILED")
    client = sign_in(app, OPERATOR_TOKEN)
    assert post_form(client, f"/runs/{run_id}/retry").status_code == 302
    assert mock_db.runs.find_one({"_id": run_id})["status"] == "QUEUED"


def test_accepting_a_run_in_review_records_the_decision_and_who_made_it(mock_db: Any) -> None:
    app = console_app(mock_db, OPERATOR_TOKEN=f"bob:{OPERATOR_TOKEN}")
    run_id = run_with_history(mock_db)
    client = sign_in(app, OPERATOR_TOKEN)
    assert "Accept result" in text_of(client.get(f"/runs/{run_id}", headers=HTML))
    post_form(client, f"/runs/{run_id}/review", decision="accept", notes="  convincing  ")
    run = mock_db.runs.find_one({"_id": run_id})
    assert run["status"] == "HUMAN_VALIDATED"
    assert {k: run["review"][k] for k in ("decision", "by", "notes")} == {"decision": "accept", "by": "bob", "notes": "convincing"}
    page = text_of(client.get(f"/runs/{run_id}", headers=HTML))
    assert "accepted by bob" in page and "Accept result" not in page


def test_a_rejection_without_notes_is_refused_and_the_run_stays_in_review(app: Any, mock_db: Any) -> None:
    run_id = run_with_history(mock_db)
    client = sign_in(app, OPERATOR_TOKEN)
    page = client.get(post_form(client, f"/runs/{run_id}/review", decision="reject", notes=" ").headers["Location"],
                      headers=HTML)
    assert "Review not recorded" in text_of(page) and "notes" in text_of(page)
    assert mock_db.runs.find_one({"_id": run_id})["status"] == "AWAITING_HUMAN"
    post_form(client, f"/runs/{run_id}/review", decision="reject", notes="the baseline was not tuned")
    assert mock_db.runs.find_one({"_id": run_id})["status"] == "HUMAN_REJECTED"


def test_a_review_of_a_running_run_is_refused(app: Any, mock_db: Any) -> None:
    run_id = insert_run(mock_db, status="RUNNING")
    client = sign_in(app, OPERATOR_TOKEN)
    page = client.get(post_form(client, f"/runs/{run_id}/review", decision="accept").headers["Location"], headers=HTML)
    assert "only a run in AWAITING_HUMAN can be reviewed" in text_of(page)


# --- the hypothesis form ----------------------------------------------------------------------


def test_queueing_a_hypothesis_from_the_form_opens_its_run(app: Any, mock_db: Any) -> None:
    client = sign_in(app, OPERATOR_TOKEN)
    assert "Queue a hypothesis" in text_of(client.get("/hypotheses/new", headers=HTML))
    response = post_form(client, "/hypotheses", title="Adam beats SGD", idea="on this task", pipeline="demo",
                         priority="7", ideaJson='{"Name": "adam"}')
    assert response.status_code == 302
    run = mock_db.runs.find_one({"_id": response.headers["Location"].rsplit("/", 1)[1]})
    assert run["status"] == "QUEUED" and run["priority"] == 7 and run["pipeline"] == "demo"
    assert mock_db.hypotheses.find_one({"_id": run["hypothesisId"]})["ideaJson"] == {"Name": "adam"}


@pytest.mark.parametrize(("fields", "field", "words"), [
    ({"title": "  "}, "title", "Must not be blank"),
    ({"idea": ""}, "idea", "Must not be blank"),
    ({"ideaJson": "{nope"}, "ideaJson", "Not valid JSON"),
    ({"ideaJson": "[1, 2]"}, "ideaJson", "Must be a JSON object"),
    ({"priority": "high"}, "priority", "from 0 (lowest) to 9"),
    ({"priority": "12"}, "priority", "less than or equal to 9"),
    ({"pipeline": "bad name!"}, "pipeline", "letters, digits"),
])
def test_a_bad_field_is_named_beside_it_and_the_typed_values_are_kept(app: Any, mock_db: Any, fields: dict[str, str],
                                                                        field: str, words: str) -> None:
    client = sign_in(app, OPERATOR_TOKEN)
    form = {"title": "A title kept", "idea": "An idea kept", "pipeline": "demo", "priority": "5", "ideaJson": "", **fields}
    response = post_form(client, "/hypotheses", **form)
    assert response.status_code == 400
    body = response.get_data(as_text=True)
    assert f'id="{field}-error"' in body and words in body
    assert ("A title kept" in body) == ("title" not in fields)
    assert mock_db.runs.count_documents({}) == 0


# --- pages ------------------------------------------------------------------------------------


def test_the_runs_page_counts_filters_and_searches(app: Any, mock_db: Any) -> None:
    done = run_with_history(mock_db)
    mock_db.hypotheses.update_one({"_id": mock_db.runs.find_one({"_id": done})["hypothesisId"]},
                                  {"$set": {"title": "Scaling laws of tiny models"}})
    failed = insert_run(mock_db, status="FAILED", pipeline="ai_scientist")
    client = sign_in(app, READER_TOKEN)
    page = text_of(client.get("/", headers=HTML))
    assert "2 all" in page and "1 AWAITING_HUMAN" in page and "1 FAILED" in page
    assert "Scaling laws of tiny models" in page
    assert failed not in text_of(client.get("/?status=AWAITING_HUMAN", headers=HTML))
    assert failed in text_of(client.get("/?pipeline=ai_scientist", headers=HTML))
    found = text_of(client.get("/?q=SCALING+laws", headers=HTML))
    assert done in found and failed not in found
    assert "No runs match these filters" in text_of(client.get("/?q=nothing+like+it", headers=HTML))


def test_the_runs_page_pages_newest_first(app: Any, mock_db: Any) -> None:
    ids = [insert_run(mock_db, status="QUEUED", attempt=0) for _ in range(30)]
    for n, run_id in enumerate(ids):
        mock_db.runs.update_one({"_id": run_id}, {"$set": {"createdAt": mock_db.runs.find_one({"_id": run_id})["createdAt"]
                                                           .replace(minute=n)}})
    client = sign_in(app, READER_TOKEN)
    first = client.get("/", headers=HTML).get_data(as_text=True)
    assert ids[-1] in first and ids[0] not in first and "Older" in first
    [older] = re.findall(r'href="(/\?cursor=[^"]+)"', first)
    second = client.get(older.replace("&amp;", "&"), headers=HTML).get_data(as_text=True)
    assert ids[0] in second and ids[-1] not in second


@pytest.mark.parametrize("query", ["status=DONE", "cursor=!!", "q=" + "x" * 300])
def test_a_bad_filter_is_a_400_page_not_a_crash(app: Any, query: str) -> None:
    response = sign_in(app, READER_TOKEN).get(f"/?{query}", headers=HTML)
    assert response.status_code == 400
    assert response.mimetype == "text/html"


def test_the_run_page_shows_steps_charts_plots_paper_failure_and_log(app: Any, mock_db: Any) -> None:
    run_id = run_with_history(mock_db)
    page = sign_in(app, READER_TOKEN).get(f"/runs/{run_id}", headers=HTML)
    text, body = text_of(page), page.get_data(as_text=True)
    for words in ("Ideation", "Preliminary Investigation", "Auto-validation", "AWAITING_HUMAN", "soundness 4",
                  "val_loss", "88% util", "ai.run.stage_metric", "Stage_1: val_loss = 0.4 (step 2)"):
        assert words in text, words
    assert "<polyline" in body and "<img" in body


def test_a_failed_run_shows_its_code_message_stage_and_traceback(app: Any, mock_db: Any) -> None:
    run_id = insert_run(mock_db, status="SCHEDULED", max_attempts=1)
    w = Worker(run_id)
    apply(mock_db, [w.event("ai.run.started", pod_id="pod-a", attempt=1),
                    w.event("ai.run.failed", stage="Stage_2", code="CudaOutOfMemory", message="CUDA out of memory",
                            traceback="Traceback (most recent call last): boom", retryable=False)])
    text = text_of(sign_in(app, READER_TOKEN).get(f"/runs/{run_id}", headers=HTML))
    assert "CudaOutOfMemory in Stage_2" in text and "CUDA out of memory" in text and "Traceback (most recent" in text


def test_the_log_filters_by_type_and_level(app: Any, mock_db: Any) -> None:
    run_id = run_with_history(mock_db)
    client = sign_in(app, READER_TOKEN)
    by_type = text_of(client.get(f"/runs/{run_id}?type=ai.run.stage_metric", headers=HTML))
    assert "val_loss = 0.7" in by_type and "halfway" not in by_type.split("Event log")[1]
    by_level = text_of(client.get(f"/runs/{run_id}?level=error", headers=HTML)).split("Event log")[1]
    assert "UploadFailed" in by_level and "halfway" not in by_level
    assert client.get(f"/runs/{run_id}?level=loud", headers=HTML).status_code == 400


def test_the_hypothesis_page_shows_the_idea_the_ideation_results_and_its_runs(app: Any, mock_db: Any) -> None:
    run_id = run_with_history(mock_db)
    hypothesis_id = mock_db.runs.find_one({"_id": run_id})["hypothesisId"]
    mock_db.hypotheses.update_one({"_id": hypothesis_id}, {"$set": {"ideaJson": {"Title": "idea x"}}})
    text = text_of(sign_in(app, READER_TOKEN).get(f"/hypotheses/{hypothesis_id}", headers=HTML))
    assert '"Title": "idea x"' in text.replace("&#34;", '"') and '"count": 7' in text.replace("&#34;", '"')
    assert run_id in text


def test_an_unknown_run_or_url_is_a_404_page(app: Any) -> None:
    client = sign_in(app, READER_TOKEN)
    for path in ("/runs/nope", "/hypotheses/nope", "/no/such/page"):
        response = client.get(path, headers=HTML)
        assert response.status_code == 404 and response.mimetype == "text/html", path
    assert client.get("/api/runs/nope").mimetype == "application/problem+json"


def test_a_database_outage_is_a_503_page_that_retries(mock_db: Any) -> None:
    app = create_app(make_settings(SECRET_KEY=SECRET_KEY, AUTH_FAILURE_LIMIT="off", RATE_LIMIT="off"), db=DownDb())
    client = sign_in(app, READER_TOKEN)
    response = client.get("/", headers=HTML)
    assert response.status_code == 503 and response.headers["Retry-After"]
    assert "Database unreachable" in text_of(response) and "data-reload-after" in response.get_data(as_text=True)


def test_artifacts_show_images_inline_and_other_types_as_downloads(app: Any, mock_db: Any, tmp_path: Any) -> None:
    app.extensions["orchestrator"].settings = make_settings(ARTIFACT_DIR=str(tmp_path), SECRET_KEY=SECRET_KEY)
    from orchestrator.storage import storage_from_settings

    app.extensions["orchestrator"].storage = storage_from_settings(app.extensions["orchestrator"].settings)
    run_id = insert_run(mock_db, status="RUNNING")
    for name, kind in (("plot.png", "image/png"), ("evil.svg", "image/svg+xml")):
        (tmp_path / "runs" / run_id).mkdir(parents=True, exist_ok=True)
        (tmp_path / "runs" / run_id / name).write_bytes(b"bytes")
        mock_db.artifacts.insert_one({"_id": name, "runId": run_id, "key": f"runs/{run_id}/{name}", "contentType": kind,
                                      "bytes": 5, "kind": "figure"})
    client = sign_in(app, READER_TOKEN)
    image = client.get(f"/runs/{run_id}/artifacts/plot.png")
    assert image.status_code == 200 and image.mimetype == "image/png"
    assert "attachment" not in image.headers.get("Content-Disposition", "")
    svg = client.get(f"/runs/{run_id}/artifacts/evil.svg")
    assert svg.headers["Content-Disposition"].startswith("attachment") and svg.headers["X-Content-Type-Options"] == "nosniff"


# --- live updates -----------------------------------------------------------------------------


def test_the_live_endpoint_answers_204_until_the_run_changes_then_sends_parts_and_new_rows(app: Any, mock_db: Any) -> None:
    run_id = insert_run(mock_db, status="SCHEDULED")
    w = Worker(run_id)
    apply(mock_db, [w.event("ai.run.started", pod_id="pod-a", attempt=1)])
    client = sign_in(app, READER_TOKEN)
    first = client.get(f"/runs/{run_id}/live.json?after_seq=-1")
    assert first.status_code == 200
    version, after = first.json["v"], first.json["afterSeq"]
    assert after == seq_for(1, 1) and "STARTING" in first.json["parts"]["header"]
    assert client.get(f"/runs/{run_id}/live.json?v={version}&after_seq={after}").status_code == 204
    apply(mock_db, [w.event("ai.run.stage_started", stage="Stage_1"),
                    w.event("ai.run.stage_metric", stage="Stage_1", name="loss", value=0.5, step=1),
                    w.event("ai.run.stage_metric", stage="Stage_1", name="loss", value=0.25, step=2)])
    changed = client.get(f"/runs/{run_id}/live.json?v={version}&after_seq={after}").json
    assert "RUNNING" in changed["parts"]["header"] and "<polyline" in changed["parts"]["charts"]
    assert "loss = 0.5" in changed["events"] and "pod_id=pod-a" not in changed["events"]
    assert changed["afterSeq"] == seq_for(1, 4) and changed["live"] is True


def test_the_live_endpoint_keeps_to_the_log_filter(app: Any, mock_db: Any) -> None:
    run_id = run_with_history(mock_db)
    live = sign_in(app, READER_TOKEN).get(f"/runs/{run_id}/live.json?after_seq=-1&type=ai.run.log").json
    assert "halfway" in live["events"] and "val_loss" not in live["events"]


def test_the_runs_list_live_endpoint_renders_counts_and_rows(app: Any, mock_db: Any) -> None:
    run_id = insert_run(mock_db, status="RUNNING")
    live = sign_in(app, READER_TOKEN).get("/runs.json?status=RUNNING").json
    assert run_id in live["parts"]["rows"] and "RUNNING" in live["parts"]["counts"]


def test_a_live_poll_without_a_session_is_a_401_not_a_redirect(app: Any) -> None:
    assert app.test_client().get("/runs/x/live.json").status_code == 401


# --- operations -------------------------------------------------------------------------------


def test_the_operations_page_shows_queues_pods_ingest_and_dead_letters(app: Any, mock_db: Any) -> None:
    from orchestrator import ingest_stats, pods

    run_id = insert_run(mock_db, status="RUNNING")
    pods.beat(mock_db, "gpu-pod-7", "host:1", run_id=run_id, attempt=1, gpu={"gpu_util": 93.0, "mem_gb": 40.5, "temp_c": 71.0})
    pods.beat(mock_db, "gpu-pod-8", "host:2", run_id=None, attempt=None, gpu=None)
    ingest_stats.record(mock_db, accepted=120, duplicates=3, rejected=4)
    mock_db.messages.insert_one({"queue": "gpu", "payload": "{}"})
    mock_db.events.insert_one({"_id": "dl-1", "runId": run_id, "type": "ai.run.log", "seq": 5,
                               "deadLetter": True,  # as events.history_record stores a notice
                               "data": {"level": "warning", "message": "dead letter", "kv": {"deadLetter": True}}})
    client = sign_in(app, READER_TOKEN)
    page = text_of(client.get("/ops", headers=HTML))
    assert "1 / 2 pods busy" in page and "gpu-pod-7" in page and "93% · 40.5 GB · 71 °C" in page
    assert "gpu-pod-8" in page and "idle" in page
    assert "120 accepted · 3 duplicates · 4 rejected" in page
    assert "gpu 1" in page  # the queue and its depth
    assert run_id in page.split("Dead letters")[-1]
    assert "0 sent · 0 pending · 0 failed" in page
    live = client.get("/ops.json").json
    assert "gpu-pod-7" in live["parts"]["ops"]


def test_a_metric_logged_once_shows_as_its_value_not_an_empty_chart(app: Any, mock_db: Any) -> None:
    run_id = insert_run(mock_db, status="SCHEDULED")
    w = Worker(run_id)
    apply(mock_db, [w.event("ai.run.started", pod_id="pod-a", attempt=1),
                    w.event("ai.run.stage_metric", stage="Stage_2", name="best_val_loss", value=0.6677)])
    body = sign_in(app, READER_TOKEN).get(f"/runs/{run_id}", headers=HTML).get_data(as_text=True)
    assert 'class="single-value"' in body and "0.6677" in body and "<polyline" not in body


@pytest.mark.parametrize("query", ["pipeline=a%00b", "q=a%00b", "pipeline=" + "p" * 201])
def test_a_filter_no_server_could_store_is_refused_before_the_query(app: Any, query: str) -> None:
    client = sign_in(app, READER_TOKEN)
    assert client.get(f"/?{query}", headers=HTML).status_code == 400
    api_query = query.replace("q=", "title=")  # the API names the title filter in full
    assert client.get(f"/api/runs?{api_query}", headers={"Authorization": f"Bearer {READER_TOKEN}"}).status_code == 400


def test_the_run_page_says_which_experiment_ran_and_its_results_per_arm(app: Any, mock_db: Any) -> None:
    run_id = insert_run(mock_db, status="SCHEDULED")
    w = Worker(run_id)
    mapping = "The demo maps this hypothesis onto its synthetic experiment adam_optimiser (matched on the word Adam)."
    results = {"metric": "validation log-loss (lower is better)",
               "arms": [{"name": "baseline", "mean": 0.687234, "stderr": 0.001934, "n": 5},
                        {"name": "adam_optimiser", "mean": 0.469954, "stderr": 0.009986, "n": 5}],
               "test": {"name": "paired t-test, one-sided", "statistic": 20.1224, "df": 4, "p_value": 1.8e-05}}
    apply(mock_db, [w.event("ai.run.started", pod_id="pod-a", attempt=1),
                    w.event("ai.ideation.generated", count=10, top_k=1, chosen="adam_optimiser", mapping=mapping),
                    w.event("ai.validation.auto_completed", verdict="pass", scores={"overall": 1.0}, results=results)])
    page = text_of(sign_in(app, READER_TOKEN).get(f"/runs/{run_id}", headers=HTML))
    assert f"Experiment {mapping}" in page
    assert "Results: validation log-loss (lower is better), mean ± standard error" in page
    assert "baseline 0.6872 ± 0.0019 (n = 5)" in page and "adam_optimiser 0.470 ± 0.010 (n = 5)" in page
    assert "paired t-test, one-sided: statistic 20.12" in page and "df 4, p = 1.8e-05" in page
