"""Ingest end to end on the real server: gunicorn with several workers as a separate process,
the server (FerretDB on PostgreSQL by default) behind it, HTTP in front. Each result is compared with the same events applied
in-process on mongomock, so "nothing lost or doubled" means "exactly the reference documents"."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import mongomock
import pytest
import requests
from pymongo.database import Database

from orchestrator import db as dbmod
from tests.ingest_helpers import SHA, TOKEN, Worker, apply, documents, full_run, insert_run
from tests.servers import PYTHON, Child, MongoServer, free_port, process_env, wait_until

WORKERS = 3
HEADERS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/x-ndjson"}
#: MONGODB_TIMEOUT_S for the app: how long a request waits for a stopped server before its 503.
TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def ingest_url(real_server: MongoServer, real_db: Database) -> Iterator[str]:
    port = free_port()
    env = process_env(
        MONGODB_URL=real_server.url(real_db.name), INGEST_TOKEN=TOKEN, MONGODB_TIMEOUT_S=str(TIMEOUT_S),
        POD_ID="ingest-test",
    )
    argv = [PYTHON, "-m", "gunicorn", "--workers", str(WORKERS), "--bind", f"127.0.0.1:{port}",
            "--graceful-timeout", "2", "ingest_app:create_app()"]
    child = Child("gunicorn-ingest", argv, env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: requests.get(f"{url}/healthz", timeout=0.5).ok, 30, "gunicorn to serve /healthz")
    except TimeoutError:
        child.stop()
        pytest.fail(f"gunicorn did not start:\n{child.output()[-3000:]}")
    yield url
    child.stop()


def _ndjson(events: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(e) + "\n" for e in events)


def _post(url: str, events: list[dict[str, Any]], timeout: float = 30) -> requests.Response:
    return requests.post(f"{url}/api/ingest/events", data=_ndjson(events), headers=HEADERS, timeout=timeout)


def _answer(url: str, events: list[dict[str, Any]]) -> dict[str, Any] | None:
    response = _post(url, events, timeout=10)
    return response.json() if response.status_code == 200 else None


def _new_run(real_db: Database, **fields: Any) -> tuple[str, Database]:
    """A run on the real server and the same run in a fresh mongomock reference database."""
    reference = mongomock.MongoClient(tz_aware=True)["reference"]
    dbmod.ensure_indexes(reference)
    run_id = insert_run(real_db, **fields)
    run = real_db.runs.find_one({"_id": run_id})
    insert_run(reference, run_id=run_id, hypothesis_id=run["hypothesisId"], **fields)
    return run_id, reference


def _long_run(worker: Worker, per_stage: int = 40) -> list[dict[str, Any]]:
    """Four experiment stages with many metrics each, ending in a retryable failure."""
    events = [worker.event("ai.run.started", pod_id="pod-a", attempt=worker.attempt)]
    for stage in ("Stage_1", "Stage_2", "Stage_3", "Stage_4"):
        events.append(worker.event("ai.run.stage_started", stage=stage))
        for step in range(per_stage):
            events.append(worker.event("ai.run.stage_metric", stage=stage, name="loss", value=1.0 / (step + 1), step=step))
            events.append(worker.event("ai.run.stage_progress", stage=stage, progress=step / per_stage))
        events.append(worker.event("ai.artifact.registered", key=f"runs/{worker.run_id}/1/{stage}.json", bytes=5, sha256=SHA,
                                   content_type="application/json", kind="results"))
        events.append(worker.event("ai.run.stage_completed", stage=stage, duration_s=1.0, summary={"stage": stage}))
    events.append(worker.event("ai.run.failed", code="CudaOutOfMemory", message="oom", retryable=True))
    return events


def test_http_end_to_end_in_every_mode_gives_the_reference_documents(ingest_url: str, real_db: Database) -> None:
    run_id, reference = _new_run(real_db)
    events = full_run(Worker(run_id))
    assert requests.post(f"{ingest_url}/api/ingest/events", data=_ndjson(events[:3]), timeout=10).status_code == 401
    assert requests.post(f"{ingest_url}/api/ingest/events", data=_ndjson(events[:3]),
                         headers={**HEADERS, "Authorization": "Bearer nope"}, timeout=10).status_code == 403
    first = requests.post(f"{ingest_url}/api/ingest/event", data=json.dumps(events[0]),
                          headers={**HEADERS, "Content-Type": "application/cloudevents+json"}, timeout=10)
    assert first.status_code == 201, first.text
    batch = requests.post(f"{ingest_url}/api/ingest/events", data=json.dumps(events[:10]),
                          headers={**HEADERS, "Content-Type": "application/cloudevents-batch+json"}, timeout=10)
    assert (batch.json()["accepted"], batch.json()["duplicate"]) == (9, 1)
    rest = _post(ingest_url, events[10:] + ["{broken"])  # type: ignore[list-item]
    assert (rest.json()["accepted"], rest.json()["invalid"]) == (len(events) - 10, 1)
    apply(reference, events)
    assert documents(real_db, run_id) == documents(reference, run_id)
    assert real_db.runs.find_one({"_id": run_id})["status"] == "AWAITING_HUMAN"


def test_concurrent_duplicate_posts_are_accepted_exactly_once(ingest_url: str, real_db: Database) -> None:
    run_id, reference = _new_run(real_db)
    events = full_run(Worker(run_id), outcome="failure")
    posters = 8
    barrier = threading.Barrier(posters)
    answers: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def post() -> None:
        try:
            barrier.wait(10)
            response = _post(ingest_url, events)
            response.raise_for_status()
            answers.append(response.json())
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=post) for _ in range(posters)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors and len(answers) == posters
    for index, event in enumerate(events):
        statuses = [answer["results"][index]["status"] for answer in answers]
        assert statuses.count("accepted") == 1 and statuses.count("duplicate") == posters - 1, (event["type"], statuses)
    apply(reference, events)
    assert documents(real_db, run_id) == documents(reference, run_id)


def test_concurrent_batches_of_many_runs_never_wedge_the_server(ingest_url: str, real_db: Database) -> None:
    """Every gunicorn worker applying a batch of several runs at once: the update commands in
    flight together stay under FerretDB's connection pool (one update command of 20 from each
    of 3 workers deadlocked FerretDB on PostgreSQL for good, seen)."""
    batches = []
    for _ in range(WORKERS * 2):
        runs = [_new_run(real_db) for _ in range(4)]
        batches.append((runs, [e for run_id, _ in runs for e in full_run(Worker(run_id))]))
    barrier = threading.Barrier(len(batches))
    answers: list[requests.Response] = []

    def post(events: list[dict[str, Any]]) -> None:
        barrier.wait(10)
        answers.append(_post(ingest_url, events, timeout=60))

    threads = [threading.Thread(target=post, args=(events,)) for _, events in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert [a.status_code for a in answers] == [200] * len(batches), [a.text[:300] for a in answers]
    for runs, events in batches:
        for run_id, reference in runs:
            apply(reference, [e for e in events if e["data"]["run_id"] == run_id])
            assert documents(real_db, run_id) == documents(reference, run_id)


#: Which process of the server dies: FerretDB, or (on the PostgreSQL backend) PostgreSQL behind
#: a FerretDB that stays up and answers every command with an error.
PROCESSES = ("ferretdb", "postgresql")


def _outage(real_server: MongoServer, process: str) -> None:
    if process not in real_server.processes():
        pytest.skip(f"{real_server.description} has no {process} process of ours to stop")


def _check_unavailable(answer: dict[str, Any], waited: float) -> None:
    response = answer.get("response")
    assert response is not None, answer
    assert response.status_code == 503, response.text[:500]
    assert response.headers["Content-Type"] == "application/problem+json" and response.headers["Retry-After"] == "5"
    assert waited < 3 * TIMEOUT_S + 2, f"the 503 took {waited:.1f}s"


def _resend_completes(
    url: str, events: list[dict[str, Any]], real_db: Database, reference: Database, run_id: str
) -> None:
    resend: Any = wait_until(lambda: _answer(url, events), 20, "ingest to answer 200 after the restart")
    assert resend["invalid"] == 0 and resend["accepted"] + resend["duplicate"] == len(events)
    apply(reference, events)
    assert documents(real_db, run_id) == documents(reference, run_id)


@pytest.mark.parametrize("process", PROCESSES)
def test_server_killed_mid_batch_is_503_quickly_and_a_resend_completes_the_batch(
    ingest_url: str, real_db: Database, real_server: MongoServer, process: str
) -> None:
    """A crash, not a clean stop: FerretDB's SIGTERM lets the requests in flight finish first,
    and PostgreSQL's immediate stop ends every session at once, so only a crash lands in the
    middle of a batch's writes."""
    _outage(real_server, process)
    run_id, reference = _new_run(real_db)
    events = _long_run(Worker(run_id))
    assert _post(ingest_url, events[:5]).json()["accepted"] == 5
    answer: dict[str, Any] = {}

    def post_all() -> None:
        try:
            answer["response"] = _post(ingest_url, events)
        except requests.RequestException as exc:
            answer["error"] = exc

    poster = threading.Thread(target=post_all)
    try:
        poster.start()
        # The batch's documents to create are in: its updates and dedup records are in flight.
        last_stage = {"runId": run_id, "name": "Stage_4"}
        wait_until(lambda: real_db.stages.count_documents(last_stage), 10, "the batch to start applying")
        real_server.take_down(process, crash=True)
        killed_at = time.monotonic()
        poster.join(20)
        waited = time.monotonic() - killed_at
    finally:
        real_server.start()
    _check_unavailable(answer, waited)
    assert real_db.events_seen.count_documents({"runId": run_id}) < len(events)  # it really was cut short
    _resend_completes(ingest_url, events, real_db, reference, run_id)


@pytest.mark.parametrize("process", PROCESSES)
def test_server_stopped_between_batches_is_503_quickly_and_a_resend_completes(
    ingest_url: str, real_db: Database, real_server: MongoServer, process: str
) -> None:
    _outage(real_server, process)
    run_id, reference = _new_run(real_db)
    events = full_run(Worker(run_id), outcome="failure")
    assert _post(ingest_url, events[:5]).json()["accepted"] == 5
    real_server.take_down(process)
    try:
        started = time.monotonic()
        answer = {"response": _post(ingest_url, events)}
        waited = time.monotonic() - started
    finally:
        real_server.start()
    _check_unavailable(answer, waited)
    _resend_completes(ingest_url, events, real_db, reference, run_id)
