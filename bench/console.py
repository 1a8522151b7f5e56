"""Item 7: an event on the web console, from `emit` on a worker-side Emitter to the text on an
open run page in a real browser (Chromium, through Playwright), which refreshes itself from
`/runs/<id>/live.json` without reloading.

The baseline, measured on the same events at the same time: the same emit until the read API
(`GET /api/runs/<id>/events`, polled back to back) returns it. The ratio is the page's cost on
top of the API: its poll interval and the rendering of its parts.
"""

from __future__ import annotations

import threading
import time

import requests

from bench.harness import OPERATOR_TOKEN, READER_TOKEN, TOKEN, Harness, warm_up
from bench.procs import BenchError
from bench.report import Document, Row, Target
from bench.stats import Summary
from devtools.browser import chromium, missing
from orchestrator.runs import new_run_document
from orchestrator.settings import Settings
from tasks.pod.emitter import Emitter

NAME = "console"
#: The page must show an event within about a second (the console's promise).
TARGET_S = 1.0


def run(h: Harness, doc: Document) -> None:
    reason = missing()
    if reason is not None:
        raise BenchError(f"the console bench needs a browser: {reason}")
    count = 8 if h.quick else 20
    db = h.database(NAME)
    run_id = "console-probe"
    db.hypotheses.insert_one({"_id": "console-probe-h", "title": "console probe", "idea": "latency", "ideaJson": None})
    probe = new_run_document("console-probe-h", run_id=run_id, pipeline="noop")
    probe.update(status="RUNNING", attempt=1)
    db.runs.insert_one(probe)
    ingest = h.start_ingest(db.name)
    warm_up(ingest)
    settings = Settings.from_env({"MONGODB_URL": h.server.url(db.name), "INGEST_URL": ingest.url, "INGEST_TOKEN": TOKEN,
                                  "POD_ID": "bench-console", "SPOOL_DIR": str(h.tmp / "spool-console")})
    emitter = Emitter(settings)
    print(f"  [7] console: {count} events to an open run page ...", flush=True)
    try:
        page_s, api_s = _samples(ingest.url, run_id, emitter, count)
    finally:
        emitter.close(timeout=5)
        h.stop(ingest.child)
    page, api = Summary.of(page_s), Summary.of(api_s)
    doc.rows.append(Row("7", "event on the open run page p50 (emit -> the browser shows it, no reload)", page.p50, "s",
                        api.p50, "same event, read API polled back to back"))
    doc.rows.append(Row("7", "event on the open run page p95", page.p95, "s", api.p95, "same event, read API",
                        Target("<", TARGET_S * 1.5)))
    doc.sections.append(("7. Events on the web console", "\n".join([
        f"| open run page (Chromium) | {page.text()} |", "|---|---|", f"| read API, back to back | {api.text()} |", "",
        "The page polls `live.json` every second while the run is live; an unchanged run costs one read of the run "
        "(204). The difference between the rows is that poll interval (half of it on average) plus rendering; "
        "both include the emitter's spool wait (`max_delay_s`).",
    ])))


def _samples(base: str, run_id: str, emitter: Emitter, count: int) -> tuple[list[float], list[float]]:
    page_s: list[float] = []
    api_s: list[float] = []
    stream = emitter.stream(run_id, 1)
    stream.emit("ai.run.stage_started", stage="Stage_1")
    if not emitter.flush(60):
        raise BenchError("the console probe's first event was not delivered in 60 s")
    with chromium() as browser:
        page = browser.new_page()
        page.goto(f"{base}/signin?next=/runs/{run_id}")
        page.fill("#token", OPERATOR_TOKEN)
        page.click("button[type=submit]")
        page.wait_for_selector("#live-events")
        for i in range(count):
            marker = f"console-probe-{i}-{time.monotonic_ns()}"
            seen_api: list[float] = []
            reader = threading.Thread(target=_api_sees, args=(base, run_id, marker, seen_api), daemon=True)
            began = time.monotonic()
            stream.emit("ai.run.log", level="info", message=marker)
            reader.start()
            while marker not in page.inner_text("#live-events"):
                if time.monotonic() - began > 60:
                    raise BenchError(f"event {marker} not on the page after 60 s")
                time.sleep(0.005)
            page_s.append(time.monotonic() - began)
            reader.join(60)
            if not seen_api:
                raise BenchError(f"event {marker} not in the API after 60 s")
            api_s.append(seen_api[0] - began)
            time.sleep(0.3)
    return page_s, api_s


def _api_sees(base: str, run_id: str, marker: str, out: list[float]) -> None:
    deadline = time.monotonic() + 60
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {READER_TOKEN}"
        while time.monotonic() < deadline:
            response = session.get(f"{base}/api/runs/{run_id}/events", params={"limit": 1000}, timeout=30)
            if response.ok and marker in response.text:
                out.append(time.monotonic())
                return
