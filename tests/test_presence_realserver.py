"""Pod presence and ingest counts with real processes on the real server: a Celery worker keeps
its presence record while it runs (idle, busy with the run, idle again), a pool child killed
without a clean exit shows as gone, a stopped worker's record goes; and the ingest counts of
real gunicorn requests reach `operations.overview`."""

from __future__ import annotations

import json
import os
import signal
import uuid
from typing import Any

import pymongo
import pytest
import requests

from orchestrator import operations, pods
from orchestrator.events import make_event, seq_for
from orchestrator.runs import create_hypothesis_and_run
from tests.cluster import TOKEN, Cluster
from tests.servers import wait_until

pytestmark = [pytest.mark.realserver, pytest.mark.slow]

INTERVAL_S = 0.3


@pytest.fixture
def cluster(real_server, tmp_path):
    name = f"presence_{uuid.uuid4().hex[:10]}"
    client = pymongo.MongoClient(real_server.url(name), tz_aware=True, serverSelectionTimeoutMS=5000)
    c = Cluster(real_server, name, tmp_path, PRESENCE_INTERVAL_S=str(INTERVAL_S))
    c.db = client[name]
    yield c
    c.stop()
    client.drop_database(name)
    client.close()


def _of(db: Any, pod: str) -> list[dict[str, Any]]:
    return [p for p in pods.live(db) if p["podId"] == pod]


def _only(db: Any, pod: str, state: str) -> dict[str, Any] | None:
    """The pod's one live record, when there is exactly one besides gone ones and it is in `state`."""
    present = [p for p in _of(db, pod) if p["state"] != pods.GONE]
    return present[0] if len(present) == 1 and present[0]["state"] == state else None


def test_a_worker_is_idle_then_busy_with_its_run_then_idle_and_its_record_goes_when_it_stops(cluster):
    cluster.start_ingest()
    worker = cluster.start_worker("pod-p")
    idle = wait_until(lambda: _only(cluster.db, "pod-p", pods.IDLE), 60, "the idle worker's presence")
    assert idle["queues"] == ["gpu"] and idle["pid"] != worker.pid, "the pool child that runs tasks writes it"
    assert idle["id"] == f"pod-p/{idle['host']}:{idle['pid']}"

    cluster.start_dispatcher()
    run_id = create_hypothesis_and_run(cluster.db, "t", "idea", idea_json={"stage_s": 1.0}, pipeline="sleepy")[1]
    busy = wait_until(lambda: _only(cluster.db, "pod-p", pods.BUSY), 60, "the busy presence")
    assert busy["run"] == {"runId": run_id, "attempt": 1} and busy["slot"] == idle["slot"]
    view = operations.overview(cluster.db)
    assert view["podsBusy"] == 1 and view["podsIdle"] == 0
    assert [p["run"] for p in view["pods"] if p["state"] == pods.BUSY] == [{"runId": run_id, "attempt": 1}]

    cluster.wait_status(run_id, {"AWAITING_HUMAN"}, 90)
    after = wait_until(lambda: _only(cluster.db, "pod-p", pods.IDLE), 30, "the worker idle again")
    assert after["run"] is None
    # One run per pool child (celeryconfig): the child that ran it exited cleanly and took its record along.
    wait_until(lambda: len(_of(cluster.db, "pod-p")) == 1, 30, "one record: the new pool child's")

    # A pool child killed without a clean exit leaves its record, shown as gone; its successor is idle.
    os.kill(after["pid"], signal.SIGKILL)
    wait_until(lambda: {p["pid"]: p["state"] for p in _of(cluster.db, "pod-p")}.get(after["pid"]) == pods.GONE, 30,
               "the killed child's record to show as gone")
    successor = wait_until(lambda: _only(cluster.db, "pod-p", pods.IDLE), 60, "the next pool child's presence")
    assert successor["pid"] != after["pid"]

    os.kill(worker.pid, signal.SIGTERM)  # as Kubernetes stops a pod: the worker's main process tells its pool children
    wait_until(lambda: not worker.alive(), 30, "the worker to exit")
    try:
        wait_until(lambda: [p["state"] for p in _of(cluster.db, "pod-p")] == [pods.GONE], 30,
                   "only the killed child's gone record left")
    except TimeoutError as exc:  # seen once under CI load: say which records stayed, and in what state
        left = [{k: p.get(k) for k in ("pid", "state", "run", "lastSeen")} for p in _of(cluster.db, "pod-p")]
        raise AssertionError(f"{exc}; records left: {left}") from None
    assert cluster.db.pods.find_one({"pid": successor["pid"]}) is None, "a clean exit removes the record"
    view = operations.overview(cluster.db)
    assert (view["podsBusy"], view["podsIdle"], view["podsGone"]) == (0, 0, 1)


def test_ingest_counts_of_real_requests_appear_in_the_overview(cluster):
    cluster.start_ingest()
    run_id = create_hypothesis_and_run(cluster.db, "t", "idea")[1]
    url = f"http://127.0.0.1:{cluster.port}/api/ingest/events"
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/x-ndjson"}
    events = [make_event("ai.run.log", run_id, seq_for(1, n), "worker://counting", {"level": "info", "message": f"m{n}"})
              for n in range(1, 6)]

    def post(body: str) -> requests.Response:
        with requests.Session() as session:  # a fresh connection: gunicorn spreads them over its workers
            return session.post(url, data=body, headers=headers, timeout=10)

    first = post("\n".join(json.dumps(e) for e in events[:3]) + "\n{broken\n")
    assert (first.status_code, first.json()["accepted"], first.json()["invalid"]) == (200, 3, 1)
    second = post("\n".join(json.dumps(e) for e in events[2:]) + "\n")
    assert (second.json()["accepted"], second.json()["duplicate"]) == (2, 1)
    unparseable = requests.post(url.removesuffix("s"), data='{"id": ', timeout=10,
                                headers={**headers, "Content-Type": "application/cloudevents+json"})
    assert unparseable.status_code == 400

    ingest = operations.overview(cluster.db)["ingest"]
    assert (ingest["acceptedLastHour"], ingest["duplicatesLastHour"], ingest["rejectedLastHour"]) == (5, 1, 2)
    assert ingest["eventsPerSecond"] == round(5 / 300, 3)
    assert sum(row["accepted"] for row in ingest["perMinute"][-2:]) == 5, "counted in the current minute (or the one before)"
    assert cluster.db.ingest_stats.count_documents({}) >= 1
