"""Integration lane: what Flower and Celery's remote control give operators on the MongoDB broker.

A worker (`celery -A tasks worker -Q gpu`, prefork with the project's concurrency 1) and Flower
(`celery -A tasks flower`) run as OS processes against the real server. What works is asserted;
what does not is asserted as its documented failure mode (docs/operations.md), so a change in
kombu, Celery, Flower or the server is noticed here.

- Works (task events, a topic exchange): Flower's task list and task info with state SUCCESS
  and the worker's name, PENDING for a sent but unconsumed task (`task_send_sent_event`), the
  worker list built from heartbeat events, and `/metrics`.
- Does not work on FerretDB (remote control, the fanout exchange: a tailable cursor on the capped
  `messages.broadcast`, which FerretDB closes at the end of its first batch): once the worker
  has polled, `celery inspect` answers "No nodes replied", Flower's inspect-based `/api/workers`
  is empty, and a revoke is never delivered. Flower's broker view answers 404 for any MongoDB
  server.
- Every event consumer that exits leaves its `celeryev.<uuid>` queue behind, and events keep
  piling up in it: kombu expires them only with its `ttl` option, which FerretDB refuses.
"""

from __future__ import annotations

import base64
import json
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from tests.helpers import WORKER_TOKEN
from tests.servers import PYTHON, Child, free_port, process_env, wait_until

USER, PASSWORD = "operator", "flower-test-secret"
WORKER = "flowerprobe@localhost"


@dataclass
class Http:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


@dataclass
class Stack:
    url: str
    env: dict[str, str]
    worker: Child
    flower: Child
    flower_port: int

    def get(self, path: str, auth: bool = True, timeout: float = 10) -> Http:
        return self.request("GET", path, auth=auth, timeout=timeout)

    def post(self, path: str) -> Http:
        return self.request("POST", path, data=b"")

    def request(self, method: str, path: str, auth: bool = True, timeout: float = 10, data: bytes | None = None) -> Http:
        request = urllib.request.Request(f"http://127.0.0.1:{self.flower_port}{path}", data=data, method=method)
        if auth:
            token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return Http(response.status, response.read())
        except urllib.error.HTTPError as exc:
            return Http(exc.code, exc.read())

    def logs(self) -> str:
        return f"worker log:\n{self.worker.output()[-3000:]}\nflower log:\n{self.flower.output()[-3000:]}"


@pytest.fixture(scope="module")
def sender(real_server, real_db) -> Iterator[Any]:
    """Send through the project's own Celery app (its celeryconfig: sent events on)."""
    from tasks.celery import app

    with app.connection_for_write(real_server.url(real_db.name)) as conn:
        yield lambda name, args, **opts: app.send_task(name, args=args, connection=conn, **opts)


@pytest.fixture(scope="module")
def stack(real_server, real_db, sender, tmp_path_factory) -> Iterator[Stack]:
    """The worker first, then Flower. Two processes connecting at once to a fresh database can
    kill one at boot (kombu: `CollectionInvalid: collection messages.broadcast already exists`);
    and a broadcast published between a worker's connect and its first poll is still answered,
    which would make the remote-control assertions below racy. So Flower starts only once the
    worker has run a ping, i.e. its event loop has polled."""
    url = real_server.url(real_db.name)
    tmp: Path = tmp_path_factory.mktemp("flower")
    env = process_env(MONGODB_URL=url, INGEST_TOKEN=WORKER_TOKEN, POD_ID="flower-pod", SPOOL_DIR=str(tmp / "spool"),
                      WORK_DIR=str(tmp / "work"), ARTIFACT_DIR=str(tmp / "art"))
    port = free_port()
    worker = Child("celery-worker", [PYTHON, "-m", "celery", "-A", "tasks", "worker", "-Q", "gpu", "-n", WORKER,
                                     "--loglevel", "INFO"], env)
    flower: Child | None = None
    try:
        token = f"warm-up-{uuid.uuid4().hex}"
        try:
            wait_until(lambda: f"{WORKER} ready." in worker.output() or not worker.alive(), 40, "the worker to start")
            sender("tasks.ping", (token,), queue="gpu")
            wait_until(lambda: real_db.worker_pings.find_one({"_id": token}) or not worker.alive(), 40, "the warm-up ping")
            assert worker.alive(), "worker exited"
        except (TimeoutError, AssertionError) as exc:
            pytest.fail(f"{exc}\nworker log:\n{worker.output()[-4000:]}")
        # The command line docs/operations.md recommends, on a test port.
        flower = Child("flower", [PYTHON, "-m", "celery", "-A", "tasks", "flower", f"--port={port}", "--address=127.0.0.1",
                                  f"--basic_auth={USER}:{PASSWORD}", "--read_only=True", "--enable_events=False",
                                  "--inspect_timeout=1000"], env)
        s = Stack(url, env, worker, flower, port)
        try:
            wait_until(lambda: s.get("/healthcheck", auth=False, timeout=1).status == 200, 30, "Flower to answer")
            # The worker's heartbeat events (every 2 s) reach Flower over the event exchange.
            wait_until(lambda: s.get("/api/workers?status=1").json().get(WORKER) is True, 40, "Flower to see the worker")
        except TimeoutError as exc:
            pytest.fail(f"{exc}\n{s.logs()}")
        yield s
    finally:
        if flower is not None:
            flower.stop()
        worker.stop()


@pytest.fixture(scope="module")
def control_app(stack) -> Iterator[Celery]:
    """A bare app for remote control: the project app's mailbox publishes through its default
    connection pool, which may point at another test's database."""
    ctl = Celery("control-probe", broker=stack.url, set_as_current=False)
    ctl.conf.broker_transport_options = {"polling_interval": 0.1}
    yield ctl
    ctl.close()


def test_flower_shows_tasks_from_task_events_with_state_and_worker(stack, sender, real_db):
    ids = [sender("tasks.ping", (f"flower-{uuid.uuid4().hex}",), queue="gpu").id for _ in range(3)]

    def all_succeeded() -> dict[str, Any] | None:
        tasks = stack.get("/api/tasks?limit=100").json()
        if all(tasks.get(i, {}).get("state") == "SUCCESS" for i in ids):
            return tasks
        return None

    try:
        tasks = wait_until(all_succeeded, 40, "Flower to list the pings as SUCCESS")
    except TimeoutError as exc:
        pytest.fail(f"{exc}\n{stack.logs()}")
    for task_id in ids:
        assert tasks[task_id]["name"] == "tasks.ping"
        assert tasks[task_id]["worker"] == WORKER
    info = stack.get(f"/api/task/info/{ids[0]}").json()
    assert info["state"] == "SUCCESS" and info["worker"] == WORKER and info["routing_key"] == "gpu"
    assert info["sent"] is not None, "task_send_sent_event puts the publish time in Flower"
    assert info["received"] <= info["started"] <= info["succeeded"]
    assert stack.get("/api/task/info/no-such-task").status == 404
    # A task nobody consumes is visible as PENDING, from its task-sent event alone.
    pending = sender("tasks.ping", ("never-consumed",), queue="nobody-consumes-this").id
    wait_until(lambda: stack.get(f"/api/task/info/{pending}").json()["state"] == "PENDING", 20,
               "Flower to show the unconsumed task as PENDING")
    assert real_db.messages.count_documents({"queue": "nobody-consumes-this"}) == 1


def test_flower_lists_the_worker_from_heartbeat_events(stack):
    status = stack.get("/api/workers?status=1")
    assert status.status == 200 and status.json()[WORKER] is True

    def heartbeat_row() -> dict[str, Any] | None:
        rows = {row["hostname"]: row for row in stack.get("/workers?json=1").json()["data"]}
        return rows[WORKER] if rows.get(WORKER, {}).get("worker-heartbeat", 0) >= 1 else None

    row = wait_until(heartbeat_row, 20, "a worker heartbeat (every 2 s) on Flower's workers page")
    assert row["status"] is True
    assert row["sw_ident"] == "py-celery"


def test_flower_metrics_carry_task_and_worker_series(stack, sender):
    sender("tasks.ping", (f"metrics-{uuid.uuid4().hex}",), queue="gpu")
    expected = [
        f'flower_events_total{{task="tasks.ping",type="task-succeeded",worker="{WORKER}"}}',
        'flower_events_total{task="tasks.ping",type="task-sent",',
        f'flower_task_runtime_seconds_count{{task="tasks.ping",worker="{WORKER}"}}',
        f'flower_worker_online{{worker="{WORKER}"}} 1.0',
        # set from worker heartbeats, so it can trail the task series by one heartbeat (2 s)
        f'flower_worker_number_of_currently_executing_tasks{{worker="{WORKER}"}}',
    ]

    def missing() -> list[str]:
        response = stack.get("/metrics", auth=False)  # no credentials needed
        return [line for line in expected if response.status != 200 or line not in response.text]

    try:
        wait_until(lambda: not missing(), 40, "Flower's /metrics to carry the task and worker series")
    except TimeoutError as exc:
        pytest.fail(f"{exc}; missing: {missing()}")


def test_flower_api_needs_credentials_and_read_only_refuses_operations(stack):
    unauthenticated = stack.get("/api/tasks", auth=False)
    assert unauthenticated.status == 401
    assert "FLOWER_UNAUTHENTICATED_API" not in unauthenticated.text, "--basic_auth, not an open API"
    # --read_only: Flower's buttons and control API would answer 200 for a revoke that no worker
    # ever reads on FerretDB; read-only mode refuses them plainly instead.
    refused = stack.post(f"/api/task/revoke/{uuid.uuid4()}")
    assert refused.status == 403 and "Read only mode is enabled" in refused.text
    assert stack.post(f"/api/worker/shutdown/{WORKER}").status == 403


def test_flower_broker_view_is_not_supported_on_mongodb(stack):
    response = stack.get("/api/queues/length")
    assert response.status == 404
    assert response.text == "'mongodb' broker is not supported"
    page = stack.get("/broker")  # the broker tab: an HTML error page with the same message
    assert page.status == 404 and "broker is not supported" in page.text


def test_remote_control_gets_no_reply_on_ferretdb(stack, real_server, control_app, sender, real_db):
    if not real_server.is_ferretdb:
        pytest.skip("remote control over the fanout exchange was only checked against FerretDB")
    # Flower's inspect-based worker API: empty, since the worker never reads a broadcast.
    assert stack.get("/api/workers?refresh=1").json() == {}
    assert stack.get(f"/api/workers?workername={WORKER}&refresh=1").status == 404
    assert control_app.control.inspect(timeout=1.0).ping() is None
    # A revoke is published to messages.broadcast and never read: the task still runs.
    task_id, token = str(uuid.uuid4()), f"revoked-{uuid.uuid4().hex}"
    control_app.control.revoke(task_id)
    assert real_db["messages.broadcast"].count_documents({"queue": "celery.pidbox"}) >= 1
    sender("tasks.ping", (token,), queue="gpu", task_id=task_id)
    wait_until(lambda: real_db.worker_pings.find_one({"_id": token}), 40, "the revoked ping to run anyway")
    wait_until(lambda: stack.get(f"/api/task/info/{task_id}").json()["state"] == "SUCCESS", 20,
               "Flower to show the revoked ping as SUCCESS")


def test_cli_inspect_reports_no_nodes_on_ferretdb(stack, real_server):
    if not real_server.is_ferretdb:
        pytest.skip("remote control over the fanout exchange was only checked against FerretDB")
    done = subprocess.run([PYTHON, "-m", "celery", "-A", "tasks", "inspect", "ping", "-t", "1"], env=stack.env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 69, done.stdout + done.stderr
    assert "No nodes replied within time constraint" in done.stderr


def test_a_stopped_flower_leaves_its_event_queue_filling(stack, real_db):
    """Last: stops Flower. kombu's MongoDB transport never deletes an auto-delete queue, so the
    `celeryev.<uuid>` queue of every stopped Flower or `celery events` keeps receiving events."""
    routes = [r["queue"] for r in real_db["messages.routing"].find({"exchange": "celeryev"})]
    assert len(routes) == 1, routes  # Flower's own; the worker has no gossip queue on this transport
    queue = routes[0]
    stack.flower.stop()
    assert stack.flower.process.returncode == 0
    assert real_db["messages.routing"].count_documents({"queue": queue}) == 1, "the binding outlives Flower"
    wait_until(lambda: real_db.messages.count_documents({"queue": queue}) >= 2, 20,
               "worker heartbeats to pile up in the stopped Flower's event queue")
