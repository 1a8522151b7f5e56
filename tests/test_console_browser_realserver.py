"""The web console in a real browser (Chromium through Playwright) against the system as OS
processes on the real server: a gunicorn ingest app, the dispatcher and a Celery worker.

One researcher's session: sign in, queue a hypothesis through the form, watch its run reach
review without reloading, find it by title, see its steps, a chart and the paper link, accept it;
then cancel a running run and see the status change live."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from orchestrator.runs import create_hypothesis_and_run
from tests.browser import chromium, expect
from tests.cluster import Cluster, cluster_on
from tests.console_helpers import SECRET_KEY
from tests.helpers import OPERATOR_TOKEN, READER_TOKEN

pytestmark = [pytest.mark.realserver, pytest.mark.slow]

#: How long the page may take to show what the system did: a demo run takes about 10 s.
RUN_S = 120_000
LIVE_S = 15_000


@pytest.fixture
def cluster(real_server: Any, tmp_path: Any) -> Iterator[Cluster]:
    with cluster_on(real_server, tmp_path, "c", OPERATOR_TOKEN=f"rita:{OPERATOR_TOKEN}", SECRET_KEY=SECRET_KEY,
                    HEARTBEAT_INTERVAL_S="1", LEASE_S="10", TRACE_URL_TEMPLATE="https://jaeger.example.org/trace/{trace_id}") as c:
        c.start_ingest()
        c.start_dispatcher()
        c.start_worker("pod-a")
        yield c


@pytest.fixture
def page(cluster: Cluster) -> Iterator[Any]:
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        tab = context.new_page()
        tab.set_default_timeout(LIVE_S)
        tab.on("dialog", lambda dialog: dialog.accept())  # the confirmations the script asks for
        yield tab
        context.close()


def _sign_in(page: Any, base: str, token: str) -> None:
    page.goto(f"{base}/")
    assert page.url.startswith(f"{base}/signin")
    page.fill("#token", token)
    page.click("button:has-text('Sign in')")
    page.wait_for_url(f"{base}/")


def test_a_researcher_queues_watches_finds_and_accepts_a_run(cluster: Cluster, page: Any) -> None:
    base = f"http://127.0.0.1:{cluster.port}"
    _sign_in(page, base, OPERATOR_TOKEN)
    page.click("text=New hypothesis")
    page.fill("#title", "")
    page.click("button:has-text('Queue hypothesis')")
    assert "Must not be blank" in page.inner_text("#title-error")  # the form says what is wrong, beside the field
    title = f"Browser hypothesis {uuid.uuid4().hex[:6]}"
    page.fill("#title", title)
    page.fill("#idea", "Standardising inputs speeds up logistic regression.")
    page.select_option("#pipeline", "demo")
    page.click("button:has-text('Queue hypothesis')")
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]+$"))
    run_id = page.url.rsplit("/", 1)[1]
    assert "Queued" in page.inner_text("main")
    page.evaluate("window.sameDocument = true")  # gone if the page reloads
    # The page follows the run without a reload, all the way to review.
    expect(page.locator("#run-status")).to_contain_text("AWAITING_HUMAN", timeout=RUN_S)
    assert page.evaluate("window.sameDocument === true")
    steps = page.inner_text("#part-steps")
    for step in ("Ideation", "Baseline Tuning", "Ablation Studies", "Paper Writeup", "Auto-validation"):
        assert step in steps
    page.wait_for_selector("#part-charts svg polyline")
    assert page.locator("#part-artifacts a:has-text('Open the paper')").count() == 1
    assert page.locator("#part-artifacts img").count() >= 1
    # Its trace, one click away in the tracing UI.
    trace_id = cluster.db.runs.find_one({"_id": run_id})["traceparent"].split("-")[1]
    link = page.locator("#run-trace a")
    assert link.inner_text() == trace_id and link.get_attribute("href") == f"https://jaeger.example.org/trace/{trace_id}"

    # Find it again by its title from the runs list, and accept it.
    page.goto(f"{base}/")
    page.fill("input[name=q]", title)
    page.click("button:has-text('Filter')")
    page.click(f"a:has-text('{title}')")
    page.wait_for_url(f"{base}/runs/{run_id}")
    page.fill("#review-notes", "Convincing: the effect holds over five seeds.")
    page.click("button:has-text('Accept result')")
    expect(page.locator("#run-status")).to_contain_text("HUMAN_VALIDATED")
    run = cluster.db.runs.find_one({"_id": run_id})
    assert run["status"] == "HUMAN_VALIDATED" and run["review"]["by"] == "rita"
    assert "accepted by rita" in page.inner_text("#part-review")


def test_an_operator_cancels_a_running_run_and_sees_it_end_live(cluster: Cluster, page: Any) -> None:
    base = f"http://127.0.0.1:{cluster.port}"
    _, run_id = create_hypothesis_and_run(cluster.db, "A long sleepy run", "sleeps", pipeline="sleepy",
                                          idea_json={"stage_s": 30})
    _sign_in(page, base, OPERATOR_TOKEN)
    page.goto(f"{base}/runs/{run_id}")
    expect(page.locator("#run-status")).to_contain_text("RUNNING", timeout=RUN_S)
    page.click("button:has-text('Cancel run')")
    expect(page.locator("#run-status")).to_contain_text("CANCELED", timeout=RUN_S)
    assert cluster.db.runs.find_one({"_id": run_id})["status"] == "CANCELED"
    assert "Cancel run" not in page.inner_text("#part-header")


def test_a_reader_sees_runs_but_no_buttons_that_change_them(cluster: Cluster, page: Any) -> None:
    base = f"http://127.0.0.1:{cluster.port}"
    _, run_id = create_hypothesis_and_run(cluster.db, "Read only", "look", pipeline="sleepy", idea_json={"stage_s": 30})
    _sign_in(page, base, READER_TOKEN)
    page.goto(f"{base}/runs/{run_id}")
    expect(page.locator("#run-status")).to_contain_text("RUNNING", timeout=RUN_S)
    assert page.locator("button:has-text('Cancel run')").count() == 0
    assert page.locator("text=New hypothesis").count() == 0
