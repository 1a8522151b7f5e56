"""The pod's attempt (tasks/pod/attempt.py) on mongomock, with events applied by the real ingest code
in-process (no HTTP), so run documents move exactly as they would in production."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import pytest

import pipeline
from orchestrator import claims
from orchestrator.dispatcher import dispatch_once
from orchestrator.runs import cancel_run, create_hypothesis_and_run
from orchestrator.storage import LocalStorage
from orchestrator.sweeper import sweep_once
from pipeline.base import Pipeline, Step
from tasks.pod.attempt import Attempt
from tasks.pod.runtime import Runtime
from tests.fakes import BrokenStorage, InProcessEmitter
from tests.helpers import make_settings


@pytest.fixture
def rt(mock_db, tmp_path):
    settings = make_settings(WORK_DIR=str(tmp_path / "work"), ARTIFACT_DIR=str(tmp_path / "art"),
                             HEARTBEAT_INTERVAL_S="0.05", LEASE_S="5", CANCEL_GRACE_S="0.3")
    return Runtime(settings=settings, db=mock_db, emitter=InProcessEmitter(mock_db), storage=LocalStorage(tmp_path / "art"),
                   on_fence_deadline=_no_exit)


def _no_exit() -> None:
    raise AssertionError("a fenced attempt reached its hard deadline in a unit test (it would end the process)")


@pytest.fixture
def register(monkeypatch):
    def add(name: str, *steps: Step) -> str:
        monkeypatch.setitem(pipeline.PIPELINES, name, lambda: Pipeline(name, steps))
        return name
    return add


def _scheduled(db, pipeline_name: str, max_attempts: int = 3) -> str:
    _, run_id = create_hypothesis_and_run(db, "t", "idea", pipeline=pipeline_name, max_attempts=max_attempts)
    assert dispatch_once(db, lambda *a, **k: None) == 1
    return run_id


def _ok(outputs: dict[str, Any]):
    def step(ctx):
        ctx.progress(0.5)
        ctx.metric("score", outputs.get("score", 1.0))
        ctx.checkpoint()
        return outputs
    return step


def test_a_run_goes_through_every_stage_and_its_outputs_become_checkpoints(rt, register):
    name = register("two", Step("Stage_1", _ok({"score": 0.7})), Step("Stage_2", _ok({"score": 0.9})))
    run_id = _scheduled(rt.db, name)
    assert Attempt(rt, run_id, 1).execute() == "completed"
    types = rt.emitter.types()
    assert types[0] == "ai.run.started"
    assert types.count("ai.run.stage_started") == 2 and types.count("ai.run.stage_completed") == 2
    stages = {s["name"]: s for s in rt.db.stages.find({"runId": run_id})}
    assert stages["Stage_2"]["status"] == "COMPLETED" and stages["Stage_2"]["summary"] == {"score": 0.9}
    run = rt.db.runs.find_one({"_id": run_id})
    assert run["status"] == "RUNNING" and run["claimedBy"] == "pod-test" and run["metrics"]["score"] == 0.9
    assert rt.db.claims.find_one({"_id": f"{run_id}:1"})["releasedAt"] is not None


def test_a_second_delivery_of_the_same_attempt_does_nothing(rt, register):
    name = register("one", Step("Stage_1", _ok({})))
    run_id = _scheduled(rt.db, name)
    claims.claim_attempt(rt.db, run_id, 1, "other-pod", 90)
    assert Attempt(rt, run_id, 1).execute() == "duplicate"
    assert rt.emitter.events == []


def test_a_canceled_or_newer_run_is_not_started(rt, register):
    name = register("one", Step("Stage_1", _ok({})))
    run_id = _scheduled(rt.db, name)
    assert Attempt(rt, run_id, 0).execute() == "stale", "an older attempt's message"
    cancel_run(rt.db, run_id)
    assert Attempt(rt, run_id, 1).execute() == "stale"
    assert rt.emitter.events == [] and rt.db.claims.count_documents({}) == 0


def test_a_run_canceled_between_the_claim_and_the_start_is_released_not_started(rt, register, monkeypatch):
    name = register("one", Step("Stage_1", _ok({})))
    run_id = _scheduled(rt.db, name)
    claim = claims.claim_attempt

    def claim_then_cancel(*args, **kwargs):
        claimed = claim(*args, **kwargs)
        cancel_run(rt.db, run_id, by="alice")
        return claimed

    monkeypatch.setattr(claims, "claim_attempt", claim_then_cancel)
    assert Attempt(rt, run_id, 1).execute() == "stale"
    assert rt.emitter.events == []
    assert rt.db.claims.find_one({"_id": f"{run_id}:1"})["releaseReason"] == claims.NOT_STARTABLE
    # The cancel saw the claim, so it asked the worker to stop; the released claim ends it.
    assert rt.db.runs.find_one({"_id": run_id})["cancelRequested"] is True
    assert sweep_once(rt.db, rt.settings, lambda *a, **k: None)["recovered"] == 1
    assert rt.db.runs.find_one({"_id": run_id})["status"] == "CANCELED"


def test_a_worker_that_claims_after_a_cancel_was_filed_does_not_start(rt, register):
    name = register("one", Step("Stage_1", _ok({})))
    run_id = _scheduled(rt.db, name)
    claims.request_cancel(rt.db, run_id, 1, by="alice", reason="r")  # cancel_run's first write
    assert Attempt(rt, run_id, 1).execute() == "stale" and rt.emitter.events == []
    assert rt.db.claims.find_one({"_id": f"{run_id}:1"})["releaseReason"] == claims.NOT_STARTABLE
    assert sweep_once(rt.db, rt.settings, lambda *a, **k: None)["recovered"] == 1
    assert rt.db.runs.find_one({"_id": run_id})["status"] == "CANCELED"


def test_canceling_a_run_a_worker_holds_before_its_first_event_asks_it_to_stop(rt, register, monkeypatch):
    """The run is SCHEDULED and claimed: ending it at once could let a retry run beside this
    attempt, so the worker is asked to stop, and its own ai.run.canceled ends the run."""
    started = threading.Event()

    def waits(ctx):
        started.set()
        for _ in range(200):
            ctx.checkpoint()
            time.sleep(0.01)
        return {}

    name = register("slow", Step("Stage_1", waits))
    run_id = _scheduled(rt.db, name)
    apply, ingest_down = rt.emitter.apply, threading.Event()
    ingest_down.set()  # none of the attempt's events is applied until the cancel was asked
    monkeypatch.setattr(rt.emitter, "apply", lambda event: None if ingest_down.is_set() else apply(event))
    attempt = Attempt(rt, run_id, 1)
    runner = threading.Thread(target=attempt.execute)
    runner.start()
    assert started.wait(5)
    asked = cancel_run(rt.db, run_id, by="alice", reason="wrong idea")
    assert (asked["status"], asked["cancelRequested"]) == ("SCHEDULED", True)
    ingest_down.clear()
    runner.join(10)
    run = rt.db.runs.find_one({"_id": run_id})
    assert run["status"] == "CANCELED" and run["attempt"] == 1


def test_the_worker_writes_no_run_document(rt, register, monkeypatch):
    """docs/security.md: a pod's database role has no write on runs, status_history or events;
    what changes them is ingest applying the worker's events (here in-process, not counted)."""
    name = register("two", Step("Stage_1", _ok({})), Step("Stage_2", _ok({})))
    run_id = _scheduled(rt.db, name)
    in_ingest = threading.local()
    writes: list[str] = []
    collection = type(rt.db.runs)

    def spy_on(method: str) -> Any:
        real = getattr(collection, method)

        def spy(self, *args, **kwargs):
            if not getattr(in_ingest, "on", False):
                writes.append(f"{self.name}.{method}")
            return real(self, *args, **kwargs)
        return spy

    for method in ("insert_one", "insert_many", "update_one", "update_many", "find_one_and_update", "bulk_write",
                   "replace_one", "delete_one", "delete_many"):
        monkeypatch.setattr(collection, method, spy_on(method))
    apply = rt.emitter.apply

    def applying(event):
        in_ingest.on = True
        try:
            apply(event)
        finally:
            in_ingest.on = False

    monkeypatch.setattr(rt.emitter, "apply", applying)
    assert Attempt(rt, run_id, 1).execute() == "completed"
    assert writes and {w.split(".")[0] for w in writes} <= {"claims"}, writes


def test_a_failure_inside_a_stage_is_reported_exactly_once_with_its_stage(rt, register):
    def boom(ctx):
        raise FileNotFoundError("data.csv")
    name = register("bad", Step("Stage_1", _ok({})), Step("Stage_2", boom), Step("Stage_3", _ok({})))
    run_id = _scheduled(rt.db, name)
    assert Attempt(rt, run_id, 1).execute() == "failed"
    failed = [e for e in rt.emitter.events if e["type"] == "ai.run.failed"]
    assert len(failed) == 1
    assert failed[0]["data"]["stage"] == "Stage_2" and failed[0]["data"]["code"] == "MissingFile"
    assert failed[0]["data"]["retryable"] is False and "data.csv" in failed[0]["data"]["traceback"]
    run = rt.db.runs.find_one({"_id": run_id})
    assert run["status"] == "FAILED" and run["error"]["code"] == "MissingFile"
    assert "ai.run.stage_started" not in [e["type"] for e in rt.emitter.events if e["data"].get("stage") == "Stage_3"]


def test_a_retryable_failure_requeues_the_run_and_the_retry_reuses_completed_stages(rt, register):
    calls = {"Stage_1": 0}

    def first(ctx):
        calls["Stage_1"] += 1
        return {"baseline": 0.5}

    def flaky(ctx):
        if ctx.attempt == 1:
            raise TimeoutError("dataset server timed out")
        assert ctx.results["Stage_1"] == {"baseline": 0.5}, "outputs of the earlier attempt are handed on"
        return {"done": True}

    name = register("flaky", Step("Stage_1", first), Step("Stage_2", flaky))
    run_id = _scheduled(rt.db, name)
    Attempt(rt, run_id, 1).execute()
    run = rt.db.runs.find_one({"_id": run_id})
    assert run["status"] == "QUEUED" and run["notBefore"] and run["attempts"][0]["code"] == "Timeout"
    rt.db.runs.update_one({"_id": run_id}, {"$set": {"notBefore": None}})
    assert dispatch_once(rt.db, lambda *a, **k: None) == 1
    assert Attempt(rt, run_id, 2).execute() == "completed"
    assert calls["Stage_1"] == 1, "a stage completed in an earlier attempt is not run again"
    assert rt.db.stages.find_one({"_id": f"{run_id}:Stage_2"})["status"] == "COMPLETED"


def test_an_unknown_pipeline_fails_the_run_at_claim_time_without_retry(rt):
    run_id = _scheduled(rt.db, "no-such-pipeline")
    Attempt(rt, run_id, 1).execute()
    run = rt.db.runs.find_one({"_id": run_id})
    assert run["status"] == "FAILED" and run["error"]["code"] == "UnknownPipeline"
    assert "demo" in run["error"]["message"]


def _checkpointing_for_4s(ctx):
    for _ in range(400):
        ctx.checkpoint()
        time.sleep(0.01)
    return {}


def test_cancel_stops_the_run_at_its_next_checkpoint_and_is_reported_once(rt, register):
    name = register("long", Step("Stage_1", _checkpointing_for_4s))
    run_id = _scheduled(rt.db, name)
    threading.Timer(0.2, lambda: cancel_run(rt.db, run_id, by="alice", reason="wrong idea")).start()
    began = time.monotonic()
    assert Attempt(rt, run_id, 1).execute() == "canceled"
    assert time.monotonic() - began < 3
    canceled = [e for e in rt.emitter.events if e["type"] == "ai.run.canceled"]
    assert len(canceled) == 1 and canceled[0]["data"]["by"] == "alice"
    assert rt.db.runs.find_one({"_id": run_id})["status"] == "CANCELED"


def test_a_step_that_never_checks_in_is_interrupted_after_the_grace_period(rt, register):
    def stubborn(ctx):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            sum(range(1000))
        return {}
    name = register("stubborn", Step("Stage_1", stubborn))
    run_id = _scheduled(rt.db, name)
    threading.Timer(0.1, lambda: cancel_run(rt.db, run_id)).start()
    began = time.monotonic()
    assert Attempt(rt, run_id, 1).execute() == "canceled"
    assert time.monotonic() - began < 5
    assert rt.db.runs.find_one({"_id": run_id})["status"] == "CANCELED"


def test_a_worker_whose_lease_was_taken_stops_and_writes_nothing_more(rt, register):
    name = register("long", Step("Stage_1", _checkpointing_for_4s))
    run_id = _scheduled(rt.db, name)

    def sweep():
        rt.db.claims.update_one({"_id": f"{run_id}:1"}, {"$set": {"releasedAt": "swept"}})
    threading.Timer(0.2, sweep).start()
    assert Attempt(rt, run_id, 1).execute() == "lease-lost"
    after = len(rt.emitter.events)
    types = rt.emitter.types()
    assert "ai.run.failed" not in types and "ai.run.canceled" not in types
    time.sleep(0.2)
    assert len(rt.emitter.events) == after


def test_artifacts_are_uploaded_under_the_exact_key_that_is_registered(rt, register):
    def write(ctx):
        path = ctx.workdir / "figures" / "loss.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\x89PNG fake")
        key = ctx.save_artifact(path, kind="figure", content_type="image/png")
        return {"key": key}
    name = register("art", Step("plots", write))
    run_id = _scheduled(rt.db, name)
    Attempt(rt, run_id, 1).execute()
    artifact = rt.db.artifacts.find_one({"runId": run_id})
    assert artifact["key"] == f"runs/{run_id}/1/figures/loss.png"
    assert rt.storage.path_of(artifact["key"]).read_bytes() == b"\x89PNG fake"
    assert artifact["bytes"] == 9 and len(artifact["sha256"]) == 64


def test_a_failed_upload_is_reported_and_the_run_goes_on_unless_it_is_the_paper(rt, register, tmp_path):
    rt.storage = BrokenStorage(tmp_path / "x")

    def figure(ctx):
        (ctx.workdir / "f.png").write_bytes(b"png")
        ctx.save_artifact(ctx.workdir / "f.png", kind="figure")
        return {}

    def paper(ctx):
        (ctx.workdir / "paper.pdf").write_bytes(b"%PDF")
        ctx.report_paper(ctx.workdir / "paper.pdf", word_count=10)
        return {}
    name = register("uploads", Step("plots", figure), Step("paper", paper))
    run_id = _scheduled(rt.db, name)
    Attempt(rt, run_id, 1).execute()
    types = rt.emitter.types()
    assert types.count("ai.artifact.failed") == 2
    failed = [e for e in rt.emitter.events if e["type"] == "ai.run.failed"]
    assert len(failed) == 1 and failed[0]["data"]["stage"] == "paper" and failed[0]["data"]["retryable"] is True


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_an_exception_that_escapes_a_pipeline_thread_goes_into_the_run_history(rt, register, monkeypatch):
    import tasks.pod.runtime as runtime_module

    monkeypatch.setattr(runtime_module, "_runtime", rt)
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    runtime_module._install_excepthooks()

    def spawns_a_dying_thread(ctx):
        worker = threading.Thread(target=lambda: 1 / 0, name="loader")
        worker.start()
        worker.join()
        return {}
    name = register("threads", Step("Stage_1", spawns_a_dying_thread))
    run_id = _scheduled(rt.db, name)
    assert Attempt(rt, run_id, 1).execute() == "completed"
    logs = [e["data"]["message"] for e in rt.emitter.events if e["type"] == "ai.run.log"]
    assert any("ZeroDivisionError in thread loader" in m for m in logs)


@pytest.mark.parametrize("second_step, outcome", [("ok", "completed"), ("fails", "failed"), ("cancel", "canceled")])
def test_the_pipelines_close_runs_once_however_the_attempt_ends(rt, monkeypatch, second_step, outcome):
    closed = []

    def cancel_between_steps(ctx):
        cancel_run(rt.db, ctx.run_id, by="bob", reason="stop")
        return {}

    def boom(ctx):
        raise RuntimeError("step 2 failed")

    first = cancel_between_steps if second_step == "cancel" else _ok({})
    second = {"ok": _ok({}), "fails": boom, "cancel": _checkpointing_for_4s}[second_step]
    steps = (Step("Stage_1", first), Step("Stage_2", second))
    monkeypatch.setitem(pipeline.PIPELINES, "closing",
                        lambda: Pipeline("closing", steps, close=lambda ctx: closed.append((ctx.run_id, ctx.attempt))))
    run_id = _scheduled(rt.db, "closing")
    assert Attempt(rt, run_id, 1).execute() == outcome
    assert closed == [(run_id, 1)]


def test_a_close_that_fails_is_logged_and_does_not_change_the_outcome(rt, monkeypatch, caplog):
    def broken(ctx):
        raise OSError("cannot stop the child")

    monkeypatch.setitem(pipeline.PIPELINES, "bad-close", lambda: Pipeline("bad-close", (Step("Stage_1", _ok({})),),
                                                                       close=broken))
    run_id = _scheduled(rt.db, "bad-close")
    assert Attempt(rt, run_id, 1).execute() == "completed"
    assert "did not close cleanly" in caplog.text and "cannot stop the child" in caplog.text


def test_clean_up_retries_the_release_through_an_outage_and_skips_nothing(rt, register, monkeypatch):
    """The database drops out just as the attempt ends: the release is retried until it lands,
    and the stream is closed and flushed whatever the release did."""
    from pymongo.errors import AutoReconnect

    name = register("one", Step("Stage_1", _ok({})))
    run_id = _scheduled(rt.db, name)
    real_release, tries = claims.release, []

    def flaky(*args, **kwargs):
        tries.append(1)
        if len(tries) < 3:
            raise AutoReconnect("connection refused")
        return real_release(*args, **kwargs)

    monkeypatch.setattr(claims, "release", flaky)
    closed = []
    attempt = Attempt(rt, run_id, 1)
    real_close = attempt.events.close
    attempt.events.close = lambda: (closed.append(1), real_close())  # type: ignore[method-assign]
    assert attempt.execute() == "completed"
    assert len(tries) == 3 and rt.db.claims.find_one({"_id": f"{run_id}:1"})["releaseReason"] == "completed"
    assert closed == [1]


def test_a_release_that_keeps_failing_gives_up_by_the_lease_and_still_closes_the_stream(rt, register, monkeypatch):
    from pymongo.errors import AutoReconnect

    name = register("one", Step("Stage_1", _ok({})))
    run_id = _scheduled(rt.db, name)

    def down(*_, **__):
        raise AutoReconnect("connection refused")

    monkeypatch.setattr(claims, "release", down)
    attempt = Attempt(rt, run_id, 1)
    closed = []
    real_close = attempt.events.close
    attempt.events.close = lambda: (closed.append(1), real_close())  # type: ignore[method-assign]
    began = time.monotonic()
    assert attempt.execute() == "completed"
    assert time.monotonic() - began < 5, "gave up before the 5 s lease would end"
    assert closed == [1] and "ai.run.stage_completed" in rt.emitter.types()


def _verdict_step(ctx):
    ctx.validation_started("test-model", "1")
    ctx.report_verdict("pass", {"overall": 7.0}, "fine")
    return {"verdict": "pass"}


def _requeue_as_lost(db, run_id):
    """The sweeper presumed the attempt lost after its events arrived: QUEUED, same attempt."""
    db.runs.update_one({"_id": run_id}, {"$set": {"status": "QUEUED"}, "$unset": {"verdict": ""}})
    assert dispatch_once(db, lambda *a, **k: None) == 1


def test_an_attempt_that_finds_every_step_done_reports_the_earlier_verdict_once(rt, register):
    name = register("v", Step("Stage_1", _ok({})), Step("auto_validation", _verdict_step))
    run_id = _scheduled(rt.db, name)
    assert Attempt(rt, run_id, 1).execute() == "completed"
    [first] = list(rt.db.validations.find({"runId": run_id}))
    _requeue_as_lost(rt.db, run_id)
    before = len(rt.emitter.events)
    assert Attempt(rt, run_id, 2).execute() == "completed"
    second = [e["type"] for e in rt.emitter.events[before:]]
    assert "ai.run.stage_started" not in second and "ai.validation.auto_completed" not in second
    [completed] = [e for e in rt.emitter.events[before:] if e["type"] == "ai.run.completed"]
    assert completed["data"]["verdict"] == "pass" and completed["data"]["validation_id"] == first["_id"]
    assert completed["data"]["from_attempt"] == 1
    run = rt.db.runs.find_one({"_id": run_id})
    assert (run["status"], run["attempt"], run["verdict"]) == ("AWAITING_HUMAN", 2, "pass")
    assert rt.db.validations.count_documents({"runId": run_id}) == 1, "no second validation"


def test_a_completed_validation_step_without_its_verdict_on_record_runs_again(rt, register):
    name = register("v", Step("Stage_1", _ok({})), Step("auto_validation", _verdict_step))
    run_id = _scheduled(rt.db, name)
    assert Attempt(rt, run_id, 1).execute() == "completed"
    rt.db.validations.delete_many({"runId": run_id})
    _requeue_as_lost(rt.db, run_id)
    before = len(rt.emitter.events)
    assert Attempt(rt, run_id, 2).execute() == "completed"
    second = [e["type"] for e in rt.emitter.events[before:]]
    assert second.count("ai.run.stage_started") == 1 and "ai.validation.auto_completed" in second
    assert "ai.run.completed" not in second
    assert rt.db.runs.find_one({"_id": run_id})["status"] == "AWAITING_HUMAN"


# --- wall-clock limits ------------------------------------------------------------------------------


def _looping(seconds: float):
    def step(ctx):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ctx.checkpoint()
            time.sleep(0.02)
        return {}
    return step


def _failed_event(rt):
    [failed] = [e for e in rt.emitter.events if e["type"] == "ai.run.failed"]
    return failed["data"]


def test_a_step_past_its_limit_fails_the_attempt_with_a_retryable_timeout(rt, register):
    name = register("slow", Step("Stage_1", _looping(30), timeout_s=0.3))
    run_id = _scheduled(rt.db, name)
    began = time.monotonic()
    assert Attempt(rt, run_id, 1).execute() == "failed"
    assert time.monotonic() - began < 3
    failed = _failed_event(rt)
    assert (failed["code"], failed["retryable"], failed["stage"]) == ("Timeout", True, "Stage_1")
    assert "step Stage_1 (limit 0.3 s)" in failed["message"]
    run = rt.db.runs.find_one({"_id": run_id})
    assert run["status"] == "QUEUED" and run["error"]["code"] == "Timeout", "retried by the policy"


def test_a_run_s_limits_override_the_pipeline_s(rt, register):
    name = register("slow", Step("Stage_1", _ok({})), Step("Stage_2", _looping(30)))
    _, run_id = create_hypothesis_and_run(rt.db, "t", "idea", pipeline=name)
    rt.db.runs.update_one({"_id": run_id}, {"$set": {"limits": {"runS": 0.4}}})
    assert dispatch_once(rt.db, lambda *a, **k: None) == 1
    assert Attempt(rt, run_id, 1).execute() == "failed"
    failed = _failed_event(rt)
    assert failed["code"] == "Timeout" and failed["stage"] == "Stage_2" and "the attempt (limit 0.4 s" in failed["message"]


def test_bad_limits_on_a_run_are_reported_and_the_defaults_apply(rt, register):
    name = register("ok", Step("Stage_1", _ok({})))
    _, run_id = create_hypothesis_and_run(rt.db, "t", "idea", pipeline=name)
    rt.db.runs.update_one({"_id": run_id}, {"$set": {"limits": {"stepS": {"Stage_1": -5}}}})
    assert dispatch_once(rt.db, lambda *a, **k: None) == 1
    assert Attempt(rt, run_id, 1).execute() == "completed"
    [warning] = [e for e in rt.emitter.events if e["type"] == "ai.run.log" and e["data"]["level"] == "warning"]
    assert "limits.stepS.Stage_1 must be a positive number" in warning["data"]["message"]


def test_a_step_stuck_where_no_interrupt_reaches_is_reported_and_its_process_ended(rt, register):
    """A call into C that never returns: the timeout is reported, the claim handed back, and the
    process ended (recorded here) a grace period after the interrupt found no bytecode to land on."""
    release = threading.Event()
    ended = []

    def stuck(ctx):
        release.wait(20)  # one C call
        return {}

    rt.on_fence_deadline = lambda: (ended.append(time.monotonic()), release.set())
    name = register("stuck", Step("Stage_1", stuck, timeout_s=0.3))
    run_id = _scheduled(rt.db, name)
    outcome = Attempt(rt, run_id, 1).execute()
    assert ended, "the process would have been ended"
    assert outcome == "failed"
    failed = _failed_event(rt)
    assert failed["code"] == "Timeout" and "its process was ended" in failed["message"]
    assert rt.db.claims.find_one({"_id": f"{run_id}:1"})["releasedAt"] is not None


# --- a pod told to stop ----------------------------------------------------------------------------


def test_a_pod_told_to_stop_hands_its_run_back_without_counting_the_attempt(rt, register):
    name = register("slow", Step("Stage_1", _ok({})), Step("Stage_2", _looping(30)))
    run_id = _scheduled(rt.db, name, max_attempts=1)
    attempt = Attempt(rt, run_id, 1)
    threading.Timer(0.4, attempt.preempt, args=("SIGTERM",)).start()
    began = time.monotonic()
    assert attempt.execute() == "preempted"
    assert time.monotonic() - began < 3
    assert rt.db.claims.find_one({"_id": f"{run_id}:1"})["releaseReason"] == "preempted"
    assert rt.db.runs.find_one({"_id": run_id})["status"] == "RUNNING", "the worker writes no run document"
    assert sweep_once(rt.db, rt.settings, lambda *a, **k: None)["recovered"] == 1, "the sweeper's next pass"
    run = rt.db.runs.find_one({"_id": run_id})
    assert (run["status"], run["attempt"], run["maxAttempts"]) == ("QUEUED", 1, 2), "one more attempt allowed"
    assert not run.get("attempts") and not run.get("error"), "not a failure"
    types = rt.emitter.types()
    assert "ai.run.failed" not in types and "ai.run.canceled" not in types
    decision = rt.db.events.find_one({"runId": run_id, "source": "orchestrator://sweeper"})
    assert "handed back" in decision["data"]["message"] and "preempted" in decision["data"]["message"]
    assert dispatch_once(rt.db, lambda *a, **k: None) == 1, "dispatched again at once"
    assert rt.db.runs.find_one({"_id": run_id})["attempt"] == 2


def test_a_step_that_ignores_the_stop_is_ended_with_its_process_and_the_run_still_handed_back(rt, register):
    release = threading.Event()
    ended = []

    def stuck(ctx):
        release.wait(20)
        return {}

    rt.on_fence_deadline = lambda: (ended.append(1), release.set())
    name = register("stuck", Step("Stage_1", stuck))
    run_id = _scheduled(rt.db, name)
    attempt = Attempt(rt, run_id, 1)
    threading.Timer(0.3, attempt.preempt, args=("SIGTERM",)).start()
    attempt.execute()
    assert ended == [1]
    assert sweep_once(rt.db, rt.settings, lambda *a, **k: None)["recovered"] == 1
    run = rt.db.runs.find_one({"_id": run_id})
    assert run["status"] == "QUEUED" and not run.get("attempts")


def test_each_step_s_duration_is_recorded_with_its_pipeline_and_outcome(rt, register):
    from tasks.pod.metrics import REGISTRY

    def count(step: str, outcome: str) -> float:
        labels = {"pipeline": "timed", "step": step, "outcome": outcome}
        return REGISTRY.get_sample_value("orchestrator_worker_step_duration_seconds_count", labels) or 0.0

    def boom(ctx):
        raise RuntimeError("boom")

    name = register("timed", Step("Stage_1", _ok({"score": 0.5})), Step("Stage_2", boom))
    before = count("Stage_1", "completed"), count("Stage_2", "failed")
    assert Attempt(rt, _scheduled(rt.db, name, max_attempts=1), 1).execute() == "failed"
    assert (count("Stage_1", "completed"), count("Stage_2", "failed")) == (before[0] + 1, before[1] + 1)
