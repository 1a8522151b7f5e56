"""Integration lane with OS processes on the real server: a gunicorn ingest app, Celery worker
processes and dispatcher processes, the way a deployment runs them.

Covers: a run end to end through every process; a second delivery is a no-op; ingest down
during a run loses no event; a SIGKILLed worker's run is finished by another; cancel stops a
RUNNING run in time; two dispatchers and three workers execute fifty runs exactly once; an
`ai_scientist` run on the stand-in of upstream AI-Scientist-v2 end to end, and canceled in the
middle of its tree search.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import Counter
from pathlib import Path

import pytest

from orchestrator.runs import cancel_run, create_hypothesis_and_run
from tests.cluster import cluster_on
from tests.servers import wait_until
from tests.upstream_standin import IDEA, install_upstream

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(real_server, tmp_path):
    with cluster_on(real_server, tmp_path, "p") as c:
        yield c


def _enqueue(db, pipeline="sleepy", stage_s=0.3, **kw) -> str:
    return create_hypothesis_and_run(db, "t", "idea", idea_json={"stage_s": stage_s}, pipeline=pipeline, **kw)[1]


def test_a_worker_process_runs_a_run_end_to_end_and_the_api_shows_every_stage_and_artifact(cluster):
    cluster.start_ingest()
    cluster.start_worker("pod-a")
    cluster.start_dispatcher()
    run_id = _enqueue(cluster.db)
    cluster.wait_status(run_id, {"AWAITING_HUMAN"}, 90)
    detail = cluster.api(f"/api/runs/{run_id}")
    stages = {s["name"]: s["status"] for s in detail["stages"]}
    assert stages == {n: "COMPLETED" for n in ("Stage_1", "Stage_2", "Stage_3", "Stage_4", "auto_validation")}
    [artifact] = detail["artifacts"]
    assert artifact["key"] == f"runs/{run_id}/1/stage2.txt"
    assert detail["validation"]["verdict"] == "pass"
    assert detail["pod"]["id"] == "pod-a" and detail["metrics"]["Stage_4_score"] == 1.0


def test_a_second_delivery_of_the_same_task_is_a_no_op(cluster):
    from tasks.celery import app

    cluster.start_ingest()
    cluster.start_worker("pod-a")
    run_id = _enqueue(cluster.db)
    cluster.db.runs.update_one({"_id": run_id}, {"$set": {"status": "SCHEDULED", "attempt": 1}})
    app.conf.broker_url = cluster.base_env["MONGODB_URL"]
    with app.connection_for_write() as conn:
        for _ in range(2):
            app.send_task("tasks.run_experiment", args=(run_id, 1), queue="gpu", connection=conn)
    cluster.wait_status(run_id, {"AWAITING_HUMAN"}, 90)
    wait_until(lambda: cluster.db.messages.count_documents({"queue": "gpu"}) == 0, 30, "the duplicate to be consumed")
    time.sleep(1)
    started = cluster.db.events.count_documents({"runId": run_id, "type": "ai.run.started"})
    stage_starts = cluster.db.events.count_documents({"runId": run_id, "type": "ai.run.stage_started"})
    assert (started, stage_starts) == (1, 5)
    assert cluster.db.claims.count_documents({"runId": run_id}) == 1


def test_ingest_down_during_a_run_loses_no_event(cluster):
    ingest = cluster.start_ingest()
    cluster.start_worker("pod-a")
    cluster.start_dispatcher()
    run_id = _enqueue(cluster.db, stage_s=1.0)
    cluster.wait_status(run_id, {"RUNNING"}, 60)
    ingest.stop()
    time.sleep(3)
    assert cluster.db.runs.find_one({"_id": run_id})["status"] == "RUNNING"
    cluster.start_ingest()
    cluster.wait_status(run_id, {"AWAITING_HUMAN"}, 90)
    pod = {"runId": run_id, "source": "worker://pod-a"}

    def applied_and_recorded() -> list[int] | None:
        """The pod's seqs once every event stored has its dedup record. Read together: the
        spool's last batches (a final log line, a heartbeat) may land after the run's status
        changed, and a batch's dedup records are written after its effects."""
        seqs = sorted(e["seq"] for e in cluster.db.events.find(pod, {"seq": 1}))
        return seqs if seqs and cluster.db.events_seen.count_documents(pod) == len(seqs) else None

    try:
        seqs = wait_until(applied_and_recorded, 10, "every event's dedup record")
    except TimeoutError:  # say what is missing, and what each process logged
        stored = cluster.db.events.count_documents(pod)
        seen = cluster.db.events_seen.count_documents(pod)
        pytest.fail(f"{seen} dedup records for {stored} events after 10 s\n{cluster.logs()}")
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "every seq from the first to the last arrived"


def test_a_sigkilled_worker_s_run_is_finished_by_another_with_nothing_doubled(cluster):
    cluster.start_ingest()
    doomed = cluster.start_worker("pod-doomed")
    cluster.start_dispatcher()
    run_id = _enqueue(cluster.db, stage_s=1.5, max_attempts=3)
    wait_until(lambda: cluster.db.stages.find_one({"_id": f"{run_id}:Stage_3", "status": "RUNNING"}), 90,
               "the run to be in Stage_3")
    doomed.kill()
    cluster.start_worker("pod-rescue")
    run = cluster.wait_status(run_id, {"AWAITING_HUMAN"}, 120)
    assert run["attempt"] == 2 and run["pod"]["id"] == "pod-rescue"
    assert run["attempts"][0]["code"] == "WorkerLost"
    completed = Counter(e["data"]["stage"] for e in cluster.db.events.find({"runId": run_id, "type": "ai.run.stage_completed"}))
    assert completed == {"Stage_1": 1, "Stage_2": 1, "Stage_3": 1, "Stage_4": 1, "auto_validation": 1}
    assert cluster.db.artifacts.count_documents({"runId": run_id}) == 1, "Stage_2's artifact is not uploaded again"
    assert run["metrics"]["Stage_1_score"] == 1.0 and run["metrics"]["Stage_4_score"] == 2.0
    assert cluster.db.events.find_one({"runId": run_id, "source": "orchestrator://sweeper"}), "the decision is in history"


def test_cancel_stops_a_running_run_within_a_heartbeat_plus_the_grace_period(cluster):
    cluster.start_ingest()
    cluster.start_worker("pod-a")
    cluster.start_dispatcher()
    run_id = _enqueue(cluster.db, stage_s=30)
    cluster.wait_status(run_id, {"RUNNING"}, 60)
    asked = time.monotonic()
    cancel_run(cluster.db, run_id, by="test", reason="changed my mind")
    cluster.wait_status(run_id, {"CANCELED"}, 15)
    took = time.monotonic() - asked
    promised = 0.5 + 1 + 1.0 + 2  # heartbeat + grace + emitter batch delay + slack for a loaded CI box
    assert took < promised, f"cancel took {took:.1f}s"
    assert cluster.db.events.count_documents({"runId": run_id, "type": "ai.run.canceled"}) == 1


def test_two_dispatchers_and_three_workers_execute_fifty_runs_exactly_once(cluster):
    cluster.start_ingest(workers=3)
    for pod in ("pod-1", "pod-2", "pod-3"):
        cluster.start_worker(pod)
    cluster.start_dispatcher("dispatcher-1")
    cluster.start_dispatcher("dispatcher-2")
    run_ids = [_enqueue(cluster.db, pipeline="noop") for _ in range(50)]
    try:
        wait_until(lambda: cluster.db.runs.count_documents({"_id": {"$in": run_ids}, "status": "AWAITING_HUMAN"}) == 50,
                   240, "all fifty runs to finish", interval=0.5)
    except TimeoutError:
        statuses = Counter(r["status"] for r in cluster.db.runs.find({"_id": {"$in": run_ids}}))
        pytest.fail(f"statuses {dict(statuses)}\n{cluster.logs()}")
    started = Counter(e["runId"] for e in cluster.db.events.find({"type": "ai.run.started"}))
    assert all(started[r] == 1 for r in run_ids), "each run started exactly once"
    verdicts = Counter(v["runId"] for v in cluster.db.validations.find({}))
    assert all(verdicts[r] == 1 for r in run_ids)
    assert set(Counter(e["source"] for e in cluster.db.events.find({"type": "ai.run.started"}))) <= {
        "worker://pod-1", "worker://pod-2", "worker://pod-3"}


def _with_upstream(cluster, **env):
    cluster.base_env.update(install_upstream(cluster.tmp), AI_SCIENTIST_POLL_S="0.1", STANDIN_STEP_S="0.02", **env)
    cluster.start_ingest()
    cluster.start_worker("pod-a")
    cluster.start_dispatcher()
    return create_hypothesis_and_run(cluster.db, "Warm restarts", "Cosine restarts beat step decay.",
                                     idea_json=IDEA, pipeline="ai_scientist")[1]


def test_an_ai_scientist_run_on_upstream_code_ends_with_its_plots_paper_review_and_token_usage(cluster):
    run_id = _with_upstream(cluster)
    cluster.wait_status(run_id, {"AWAITING_HUMAN"}, 120)
    detail = cluster.api(f"/api/runs/{run_id}")
    steps = ("ideation", "Stage_1", "Stage_2", "Stage_3", "Stage_4", "plots", "paper", "auto_validation")
    assert {s["name"]: s["status"] for s in detail["stages"]} == {n: "COMPLETED" for n in steps}
    stage_4 = next(s for s in detail["stages"] if s["name"] == "Stage_4")
    assert stage_4["metrics"]["best_metric"] == pytest.approx(0.243)  # upstream's choice among good nodes
    kinds = Counter(a["kind"] for a in detail["artifacts"])
    assert kinds["plot"] >= 4 and kinds["figure"] >= 1 and kinds["paper"] == 1 and kinds["review"] == 2
    assert kinds["token_usage"] >= 2
    for artifact in detail["artifacts"]:
        stored = Path(cluster.base_env["ARTIFACT_DIR"]) / artifact["key"]
        assert artifact["key"].startswith(f"runs/{run_id}/1/ai_scientist/")
        assert hashlib.sha256(stored.read_bytes()).hexdigest() == artifact["sha256"]
    paper = next(a for a in detail["artifacts"] if a["kind"] == "paper")
    assert paper["key"].endswith("warm_restarts_reflection_final_page_limit.pdf")
    assert detail["validation"]["verdict"] == "pass" and detail["validation"]["scores"]["overall"] == 6.0


def _processes_under(path: Path) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{pid}/cwd").startswith(str(path)):
                found.append(int(pid))
        except OSError:
            continue
    return found


def test_a_cancel_in_the_middle_of_the_tree_search_stops_upstreams_processes(cluster):
    run_id = _with_upstream(cluster, STANDIN_HANG_STAGE="3")
    work = cluster.tmp / "work-pod-a" / run_id
    try:
        # Stage_2 may pass between two polls; the stand-in hangs in Stage_3, so either will do.
        running = {"runId": run_id, "name": {"$in": ["Stage_2", "Stage_3"]}, "status": "RUNNING"}
        wait_until(lambda: cluster.db.stages.find_one(running), 90, "Stage_2 or Stage_3 to run")
    except TimeoutError as exc:
        run = cluster.db.runs.find_one({"_id": run_id})
        stages = {s["name"]: s["status"] for s in cluster.db.stages.find({"runId": run_id})}
        pytest.fail(f"{exc}: run {run and run.get('status')}, stages {stages}\n{cluster.logs()}")
    assert _processes_under(work)
    cancel_run(cluster.db, run_id, by="test", reason="wrong idea")
    cluster.wait_status(run_id, {"CANCELED"}, 30)
    wait_until(lambda: not _processes_under(work), 15, "upstream's processes to be gone")
