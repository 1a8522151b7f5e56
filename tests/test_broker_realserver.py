"""Integration lane, first: the broker path end to end on the real server.

kombu's MongoDB transport round-trips messages with priority, and a Celery worker started as a
separate OS process (`celery -A tasks worker -Q gpu`) consumes a task routed to `gpu`.
"""

from __future__ import annotations

import uuid

import pytest
from kombu import Connection, Exchange, Queue

from tests.helpers import WORKER_TOKEN
from tests.servers import PYTHON, Child, process_env, wait_until


def test_kombu_round_trips_messages_in_priority_order(real_server, real_db):
    url = real_server.url(real_db.name)
    queue = Queue(f"probe-{uuid.uuid4().hex[:6]}", Exchange("probe", type="direct"), routing_key="probe", max_priority=9)
    with Connection(url, transport_options={"polling_interval": 0.05}) as conn:
        producer = conn.Producer()
        for priority in (1, 9, 5):
            producer.publish({"p": priority}, exchange=queue.exchange, routing_key="probe", declare=[queue], priority=priority)
        received: list[int] = []

        def on_message(body, message):
            received.append(body["p"])
            message.ack()

        with conn.Consumer(queue, callbacks=[on_message]):
            while len(received) < 3:
                conn.drain_events(timeout=5)
    assert received == [9, 5, 1]
    assert real_db.messages.count_documents({"queue": queue.name}) == 0, "fetched messages leave MongoDB"


@pytest.fixture
def gpu_worker(real_server, real_db, tmp_path):
    env = process_env(MONGODB_URL=real_server.url(real_db.name), INGEST_TOKEN=WORKER_TOKEN, POD_ID="probe-pod",
                      SPOOL_DIR=str(tmp_path / "spool"), WORK_DIR=str(tmp_path / "work"), ARTIFACT_DIR=str(tmp_path / "art"))
    worker = Child("celery-worker", [PYTHON, "-m", "celery", "-A", "tasks", "worker", "-Q", "gpu", "--pool", "solo",
                                     "--without-mingle", "--without-gossip", "--loglevel", "INFO"], env)
    yield worker
    worker.stop()


def test_a_separate_celery_worker_process_consumes_a_task_routed_to_gpu(real_server, real_db, gpu_worker, monkeypatch):
    monkeypatch.setenv("MONGODB_URL", real_server.url(real_db.name))
    from tasks.celery import app

    app.conf.broker_url = real_server.url(real_db.name)
    token = uuid.uuid4().hex
    with app.connection_for_write() as conn:
        app.send_task("tasks.ping", args=(token,), queue="gpu", connection=conn)
    try:
        ping = wait_until(lambda: real_db.worker_pings.find_one({"_id": token}), 40, "the worker to run tasks.ping")
    except TimeoutError:
        pytest.fail(f"worker did not consume the task; its log:\n{gpu_worker.output()[-4000:]}")
    assert ping["podId"] == "probe-pod"
    assert ping["pid"] != __import__("os").getpid(), "consumed by the worker process, not this one"
