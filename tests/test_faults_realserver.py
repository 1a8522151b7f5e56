"""Faults over real processes. Lease fencing: a worker cut off from the database stops its
pipeline before its lease can end, and the attempt the sweeper starts instead never runs beside
it; a worker that dies between its claim and its first event does not strand the run; the
database killed while runs work and while one finishes ends every run once. Poison events: one
event that breaks ingest and one it refuses are dead-lettered, and the rest of the run arrives.

Leases here are 10 s or more: on these 2-core machines shorter ones expire from load alone.
"""

from __future__ import annotations

import http.server
import json
import signal
import threading
import time
import uuid
from pathlib import Path

import pymongo
import pytest
import requests

from devtools.proxy import WireProxy
from orchestrator import claims, pods
from orchestrator.runs import create_hypothesis_and_run
from tests.cluster import Cluster
from tests.helpers import status_chain
from tests.servers import wait_until

pytestmark = pytest.mark.slow

LEASE_S = 10


@pytest.fixture
def cluster(real_server, tmp_path, request):
    """Ingest, dispatcher and workers on a database of their own; `@pytest.mark.lease_s(n)` sets
    a test's lease (LEASE_S otherwise)."""
    name = f"f_{uuid.uuid4().hex[:10]}"
    client = pymongo.MongoClient(real_server.url(name), tz_aware=True, serverSelectionTimeoutMS=5000)
    marker = request.node.get_closest_marker("lease_s")
    lease_s = marker.args[0] if marker else LEASE_S
    c = Cluster(real_server, name, tmp_path, LEASE_S=str(lease_s), HEARTBEAT_INTERVAL_S="1", CLOCK_SKEW_S="1",
                CANCEL_GRACE_S="2", SCHEDULE_TIMEOUT_S="30")
    c.db = client[name]
    host_port = real_server.url(name).split("://", 1)[1].split("/", 1)[0]
    c.proxy = WireProxy(int(host_port.rsplit(":", 1)[1]))
    yield c
    c.stop(timeout=3)  # a worker cut off from its broker waits long for a warm shutdown that cannot come
    c.proxy.close()
    client.drop_database(name)
    client.close()


def _activity(path: Path) -> list[tuple[float, int, str, str]]:
    """(wall time, attempt, stage, what) for every moment a step was at work."""
    rows = []
    for line in path.read_text().splitlines():
        at, attempt, stage, what = line.split()
        rows.append((float(at), int(attempt), stage, what))
    return rows


@pytest.mark.parametrize("step", ["checkpoints", "blocked"])
def test_a_worker_cut_off_longer_than_its_lease_stops_before_it_ends_and_a_new_attempt_finishes(
    cluster, tmp_path, step
) -> None:
    """`checkpoints`: the step reaches checkpoints, so the soft stop ends it. `blocked`: the
    step sits in one long C call (no checkpoint, no interrupt), so the hard deadline ends the
    pool child. Either way attempt 1's last moment of work comes before its lease could end,
    and attempt 2's first after that."""
    activity = tmp_path / "activity.txt"
    idea = {"stage_s": 3, "activity": str(activity), **({"block_s": 60} if step == "blocked" else {})}
    cluster.start_ingest()
    cluster.start_dispatcher()
    cluster.start_worker("pod-cut", env={"MONGODB_URL": cluster.proxy.url(cluster.db.name)})
    run_id = create_hypothesis_and_run(cluster.db, "t", "idea", idea_json=idea, pipeline="sleepy")[1]
    wait_until(lambda: cluster.db.stages.find_one({"runId": run_id, "name": "Stage_2", "status": "RUNNING"}), 60,
               "attempt 1 to reach Stage_2")
    cluster.proxy.cut("blackhole")
    cluster.start_worker("pod-b")
    run = cluster.wait_status(run_id, {"AWAITING_HUMAN"}, 150)
    assert run["attempt"] == 2 and run["claimedBy"] == "pod-b"
    lost = claims.get_claim(cluster.db, run_id, 1)
    expired_at = lost["leaseExpiresAt"].timestamp()
    rows = _activity(activity)
    first, second = [r for r in rows if r[1] == 1], [r for r in rows if r[1] == 2]
    assert first and second
    assert max(r[0] for r in first) < expired_at, "attempt 1 worked past the end of its lease"
    assert max(r[0] for r in first) < min(r[0] for r in second), "the two attempts overlapped"
    cut_log = next(c for c in cluster.children if c.name == "worker-pod-cut").output()
    assert "stopping this attempt before its lease can end" in cut_log
    if step == "blocked":
        assert ("Stage_2", "unblocked") not in {(r[2], r[3]) for r in first}, "the blocked step was never ended"
        assert "did not stop by its deadline: ending this process" in cut_log
    assert [a["code"] for a in run.get("attempts", [])] == ["WorkerLost"]
    changes = _chain(cluster, run_id)
    assert ("RUNNING", "QUEUED", "sweeper") in {(c["from"], c["to"], c["by"]) for c in changes}


def test_a_worker_dead_between_claim_and_starting_has_its_run_dispatched_again(cluster) -> None:
    """The claim is in, the first event never came (the worker died, or lost the database):
    the run is requeued and dispatched again once that claim's lease ends, well within
    SCHEDULE_TIMEOUT_S (30 s here), and finishes."""
    cluster.start_ingest()
    cluster.start_dispatcher()
    run_id = create_hypothesis_and_run(cluster.db, "t", "idea", idea_json={"stage_s": 0.2}, pipeline="sleepy")[1]
    run = cluster.wait_status(run_id, {"SCHEDULED"}, 30)
    assert claims.claim_attempt(cluster.db, run_id, run["attempt"], "pod-died", LEASE_S) is not None
    cluster.db.messages.delete_many({"queue": "gpu"})  # the died worker had taken its message
    cluster.start_worker("pod-b")
    run = cluster.wait_status(run_id, {"AWAITING_HUMAN"}, 120)
    assert run["attempt"] == 2 and run["claimedBy"] == "pod-b"
    assert run["attempts"][0]["code"] == "WorkerLost" and "pod-died" in run["attempts"][0]["message"]


@pytest.mark.parametrize("process", ["ferretdb", "postgresql"])
@pytest.mark.lease_s(30)
def test_the_database_killed_while_runs_work_and_while_one_finishes_ends_every_run_once(
    cluster, real_server, process
) -> None:
    """The database dies (SIGKILL / immediate stop) for ~4 s, twice: while three runs are in a
    stage, and while one is finishing. No run is requeued for it, each ends once, and no attempt's
    steps are run twice.

    The workers see more than the 4 s: up to a heartbeat before it, and PostgreSQL's restart after
    it, whose crash recovery replays every write since the last checkpoint (late in the suite, seconds
    on a loaded machine). A worker fences itself 6 s after its last renewal under a 10 s lease, so
    this test's lease is 30 s: the whole outage stays well within it."""
    if process not in real_server.processes():
        pytest.skip(f"{real_server.description} has no {process} process of ours to stop")
    cluster.start_ingest()
    cluster.start_dispatcher()
    for pod in ("pod-a", "pod-b"):
        cluster.start_worker(pod)
    run_ids = [create_hypothesis_and_run(cluster.db, "t", "idea", idea_json={"stage_s": 2}, pipeline="sleepy")[1]
               for _ in range(3)]
    wait_until(lambda: cluster.db.stages.count_documents({"name": "Stage_2", "status": "RUNNING"}) >= 2, 90,
               "two runs to be in Stage_2")
    away = [_outage(real_server, process)]
    wait_until(lambda: cluster.db.stages.find_one({"name": "auto_validation", "status": {"$in": ["RUNNING", "COMPLETED"]}}),
               120, "a run to be finishing")
    away.append(_outage(real_server, process))
    for run_id in run_ids:
        run = cluster.wait_status(run_id, {"AWAITING_HUMAN"}, 180)
        assert run["attempt"] == 1 and not run.get("attempts"), (run_id, away, run.get("attempts"), cluster.logs())
        steps = list(cluster.db.events.find({"runId": run_id, "type": "ai.run.stage_completed"}))
        assert sorted(e["data"]["stage"] for e in steps) == sorted(
            ["Stage_1", "Stage_2", "Stage_3", "Stage_4", "auto_validation"]), "each step completed exactly once"
        assert cluster.db.validations.count_documents({"runId": run_id}) == 1
        changes = _chain(cluster, run_id)
        assert {c["attempt"] for c in changes} == {1}, changes


def test_the_database_down_longer_than_a_lease_while_a_run_finishes_ends_it_once(cluster, real_server) -> None:
    """The outage the fencing exists for: the database gone for longer than a lease while a run
    finishes. Whether its outcome arrives before the sweeper judges the lease, or after it as a
    late outcome, or the run is executed again, no step completes twice and it ends once."""
    process = real_server.processes()[0] if real_server.processes() else None
    if process is None:
        pytest.skip(f"{real_server.description} has no process of ours to stop")
    cluster.start_ingest()
    cluster.start_dispatcher()
    cluster.start_worker("pod-a")
    idea = {"stage_s": 1, "validate_s": 2}
    run_id = create_hypothesis_and_run(cluster.db, "t", "idea", idea_json=idea, pipeline="sleepy")[1]
    wait_until(lambda: cluster.db.stages.find_one({"runId": run_id, "name": "auto_validation"}), 120,
               "the run to be finishing")
    _outage(real_server, process, seconds=LEASE_S + 4)  # the verdict is reported in the dark
    run = cluster.wait_status(run_id, {"AWAITING_HUMAN"}, 240)
    steps = [e["data"]["stage"] for e in cluster.db.events.find({"runId": run_id, "type": "ai.run.stage_completed"})]
    assert sorted(steps) == sorted(set(steps)), f"a step completed twice: {steps}"
    assert cluster.db.validations.count_documents({"runId": run_id}) == 1
    outcomes = cluster.db.events.count_documents(
        {"runId": run_id, "type": {"$in": ["ai.validation.auto_completed", "ai.run.completed"]}})
    assert outcomes <= run["attempt"], (outcomes, run["attempt"])
    _chain(cluster, run_id)


def _chain(cluster, run_id: str) -> list:
    """The run's status history, checked (`status_chain`); a broken one fails with what ingest saw."""
    try:
        return status_chain(cluster.db)(run_id)
    except AssertionError as exc:
        run = cluster.db.runs.find_one({"_id": run_id}, {"status": 1, "statusSeq": 1, "lastEventSeq": 1})
        events = [(e["seq"], e["type"], str(e["receivedAt"])) for e in
                  cluster.db.events.find({"runId": run_id}).sort("seq", -1).limit(12)]
        pytest.fail(f"{exc}\nrun: {run}\nlast events: {events}\n{cluster.logs()}")


def _outage(real_server, process: str, seconds: float = 4.0) -> float:
    """Down for `seconds`, then started again; how long the database was away in all."""
    began = time.monotonic()
    real_server.take_down(process, crash=True)
    time.sleep(seconds)
    real_server.start()
    return time.monotonic() - began


class _PoisonProxy:
    """An HTTP proxy in front of ingest: a batch holding the line "poison-pill" gets a 500 (as
    an event that breaks ingest would), and the event logging "make-me-invalid" is rewritten to
    a type ingest refuses. Everything else goes through unchanged."""

    def __init__(self, target: str):
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if b"poison-pill" in body:
                    proxy.poisoned += 1
                    self._answer(500, b"Internal Server Error", "text/plain")
                    return
                lines = []
                for line in body.splitlines():
                    event = json.loads(line)
                    if (event.get("data") or {}).get("message") == "make-me-invalid":
                        event["type"] = "ai.run.bogus"
                    lines.append(json.dumps(event).encode())
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("authorization", "content-type")}
                answer = requests.post(f"{target}{self.path}", data=b"\n".join(lines) + b"\n", headers=headers, timeout=30)
                self._answer(answer.status_code, answer.content, answer.headers.get("Content-Type", "application/json"))

            def _answer(self, status: int, payload: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.poisoned = 0
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def test_a_poison_event_and_an_invalid_one_are_dead_lettered_and_the_rest_of_the_run_arrives(cluster, tmp_path) -> None:
    cluster.start_ingest()
    cluster.start_dispatcher()
    proxy = _PoisonProxy(cluster.base_env["INGEST_URL"])
    try:
        cluster.start_worker("pod-p", env={"INGEST_URL": proxy.url})
        idea = {"stage_s": 0.3, "log_lines": ["before", "poison-pill", "make-me-invalid", "after"]}
        run_id = create_hypothesis_and_run(cluster.db, "t", "idea", idea_json=idea, pipeline="sleepy")[1]
        run = cluster.wait_status(run_id, {"AWAITING_HUMAN"}, 120)
    finally:
        proxy.close()
    messages = [e["data"].get("message") for e in cluster.db.events.find({"runId": run_id, "type": "ai.run.log"})]
    assert "before" in messages and "after" in messages
    assert "poison-pill" not in messages and "make-me-invalid" not in messages
    assert proxy.poisoned >= 3
    letters = [line for line in (tmp_path / "spool-pod-p" / "dead-letters.jsonl").read_text().splitlines()]
    reasons = {json.loads(line)["event"]["data"]["message"]: json.loads(line)["reason"] for line in letters}
    assert "HTTP 500" in reasons["poison-pill"] and "type" in reasons["make-me-invalid"], reasons
    # A notice is emitted when its event is given up, so it may arrive after the run's outcome.
    wait_until(lambda: cluster.db.events.count_documents({"runId": run_id, "data.kv.deadLetter": True}) == 2, 30,
               "both dead-letter notices")
    assert run["status"] == "AWAITING_HUMAN"
    shown = cluster.api(f"/api/runs/{run_id}")
    assert shown["deadLetters"] == 2


def test_a_worker_told_to_stop_hands_its_run_back_and_exits_in_bounded_time(cluster) -> None:
    """Kubernetes (and a spot preemption) sends SIGTERM to the worker's main process only."""
    cluster.start_ingest()
    cluster.start_dispatcher()
    doomed = cluster.start_worker("pod-stopping")
    run_id = create_hypothesis_and_run(cluster.db, "t", "idea", idea_json={"stage_s": 4}, pipeline="sleepy",
                                       max_attempts=1)[1]
    wait_until(lambda: cluster.db.stages.find_one({"runId": run_id, "name": "Stage_2", "status": "RUNNING"}), 60,
               "the run to be in Stage_2")
    told = time.monotonic()
    doomed.process.send_signal(signal.SIGTERM)
    doomed.process.wait(30)
    exited_after = time.monotonic() - told
    assert exited_after < 15, f"the worker took {exited_after:.1f}s to exit"
    # The claim released as preempted; the dispatcher's sweeper requeues the run on its next pass.
    run = wait_until(lambda: (r := cluster.db.runs.find_one({"_id": run_id}))["status"] in ("QUEUED", "SCHEDULED") and r,
                     30, "the sweeper to hand the run back")
    assert run["maxAttempts"] == 2, run
    cluster.start_worker("pod-b")
    run = cluster.wait_status(run_id, {"AWAITING_HUMAN"}, 120)
    assert (run["attempt"], run["claimedBy"]) == (2, "pod-b") and not run.get("attempts"), run.get("attempts")
    assert claims.get_claim(cluster.db, run_id, 1)["releaseReason"] == "preempted"
    handed = [c for c in status_chain(cluster.db)(run_id) if c["to"] == "QUEUED"]
    assert [(c["from"], c["by"], c["attempt"]) for c in handed] == [("RUNNING", "sweeper", 1)], handed


def test_an_idle_worker_told_to_stop_ends_its_pool_child_cleanly_and_forks_no_other(cluster) -> None:
    """The stop signal a warm shutdown sends each pool child used to kill an idle one (billiard
    made it a terminate signal: exit code 70); the pool then forked a fresh child mid-shutdown,
    and the worker took longer than honcho waits before SIGKILL."""
    cluster.start_ingest()
    idle = cluster.start_worker("pod-idle")
    wait_until(lambda: cluster.db[pods.PODS].find_one({"podId": "pod-idle"}), 60,
               "the pool child's presence record")
    idle.process.send_signal(signal.SIGTERM)
    idle.process.wait(30)
    log = idle.output()
    assert "exited with 'exitcode" not in log and "exited with 'signal" not in log, log[-3000:]
    assert idle.process.returncode == 0
    wait_until(lambda: cluster.db[pods.PODS].count_documents({"podId": "pod-idle"}) == 0, 10,
               "the child's presence record to go with it")
