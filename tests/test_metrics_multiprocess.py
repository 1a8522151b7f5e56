"""/metrics under gunicorn with two workers, as the Procfile runs it (PROMETHEUS_MULTIPROC_DIR
set for the web process): every scrape shows one total, whichever worker answers it, and counts
left by an earlier run are not added in. On the embedded database: each gunicorn worker has
its own, which the counters do not care about."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

import requests
from prometheus_client.mmap_dict import MmapedDict, mmap_key

from tests.ingest_helpers import NDJSON, Worker
from tests.servers import PYTHON, Child, free_port, process_env, wait_until

HEALTH_CHECKS = 60
EVENTS = 24
SCRAPES = 12


def sample(text: str, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        found = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$", line)
        if found is None or found.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', found.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(found.group(3))
    return total


def test_every_scrape_shows_one_total_over_both_workers(tmp_path):
    folder = tmp_path / "prometheus" / "web"
    folder.mkdir(parents=True)
    stale = MmapedDict(str(folder / "counter_999999.db"))  # an earlier run's worker
    stale.write_value(mmap_key("ingest_events", "ingest_events_total", ("type", "outcome"), ("ai.run.log", "accepted"),
                               "Events received."), 1000.0, 0.0)
    stale.close()
    port = free_port()
    env = process_env(MONGODB_URL="mongomock://localhost/metrics_mp", INGEST_TOKEN=NDJSON["Authorization"].split()[1],
                      PROMETHEUS_MULTIPROC_DIR=str(folder), ARTIFACT_DIR=str(tmp_path / "artifacts"), WEB_PORT=str(port),
                      RATE_LIMIT="off")
    env.pop("INGEST_URL", None)
    child = Child("gunicorn-metrics", [PYTHON, "-m", "gunicorn", "-c", "python:ingest_app.gunicorn_conf", "--workers", "2",
                                       "ingest_app:create_app()"], env, log_dir=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: requests.get(f"{url}/healthz", timeout=1).ok, 60, "gunicorn to serve")
        wait_until(lambda: len(worker_pids(folder)) == 2 or touch_both(url), 30, "both workers to serve")
        before = requests.get(f"{url}/metrics", timeout=5).text
        base = sample(before, "http_request_duration_seconds_count", endpoint="/healthz")

        def check(_: int) -> bool:
            return requests.get(f"{url}/healthz", timeout=5, headers={"Connection": "close"}).ok

        worker = Worker("run-metrics")
        events = [worker.event("ai.run.log", level="info", message=f"line {n}") for n in range(EVENTS)]

        def post(event: dict) -> int:
            return requests.post(f"{url}/api/ingest/events", data=json.dumps(event) + "\n", headers=NDJSON, timeout=5).status_code

        with ThreadPoolExecutor(4) as pool:  # concurrent, so both workers take requests
            assert all(pool.map(check, range(HEALTH_CHECKS)))
            assert set(pool.map(post, events)) <= {200, 207}
        scrapes = [requests.get(f"{url}/metrics", timeout=5).text for _ in range(SCRAPES)]
        checks = {sample(text, "http_request_duration_seconds_count", endpoint="/healthz") - base for text in scrapes}
        received = {sample(text, "ingest_events_total") for text in scrapes}
        assert checks == {HEALTH_CHECKS}, child.output()[-3000:]
        assert received == {EVENTS}, child.output()[-3000:]
        assert len(worker_pids(folder)) == 2
        assert "orchestrator_notifications_sent_total" not in scrapes[0]  # the app's metrics only
    finally:
        child.stop()


def worker_pids(folder) -> set[str]:
    """The processes that have recorded a request: a histogram file each."""
    return {re.sub(r"\D", "", path.name) for path in folder.glob("histogram_*.db")}


def touch_both(url: str) -> bool:
    """A few concurrent requests, so the worker that has not served yet takes one."""
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: requests.get(f"{url}/healthz", timeout=5, headers={"Connection": "close"}), range(8)))
    return False
