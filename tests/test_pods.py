"""Pod presence: the core's records (orchestrator/pods.py), the worker's presence thread
(tasks/pod/presence.py) and its life with the pod runtime, on mongomock."""

from __future__ import annotations

import logging
import sys
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import pipeline
from orchestrator import pods
from orchestrator.dispatcher import dispatch_once
from orchestrator.errors import SettingsError
from orchestrator.runs import create_hypothesis_and_run
from orchestrator.storage import LocalStorage
from orchestrator.sweeper import sweep_once
from pipeline.base import Pipeline, Step
from tasks.pod import presence as presence_mod
from tasks.pod import runtime as runtime_mod
from tasks.pod.attempt import Attempt
from tasks.pod.presence import Presence
from tasks.pod.runtime import Runtime
from tests.fakes import DownDb, FakeSender, InProcessEmitter
from tests.helpers import make_settings
from tests.servers import wait_until

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
GPU = {"gpu_util": 87.0, "mem_gb": 31.5, "temp_c": 71.0}


def _beat(db: Any, pod: str, *, run: tuple[str, int] | None = None, at: datetime = NOW, interval_s: float = 10.0) -> None:
    pods.beat(db, pod, "host:1", run_id=run[0] if run else None, attempt=run[1] if run else None, gpu=GPU, now=at,
              interval_s=interval_s, host="host", pid=1, queues=["gpu"])


def _states(db: Any, now: datetime = NOW) -> dict[str, str]:
    return {p["podId"]: p["state"] for p in pods.live(db, now)}


def test_a_pod_on_a_run_is_busy_one_without_is_idle_and_one_silent_for_three_intervals_is_gone(mock_db):
    _beat(mock_db, "pod-busy", run=("r-1", 2))
    _beat(mock_db, "pod-idle", at=NOW - timedelta(seconds=29))
    _beat(mock_db, "pod-gone", run=("r-2", 1), at=NOW - timedelta(seconds=31))
    assert _states(mock_db) == {"pod-busy": "busy", "pod-idle": "idle", "pod-gone": "gone"}
    busy, idle, gone = pods.live(mock_db, NOW)
    assert busy["id"] == "pod-busy/host:1" and busy["run"] == {"runId": "r-1", "attempt": 2}
    assert busy["gpu"] == {"util": 87.0, "memGb": 31.5, "tempC": 71.0} and busy["queues"] == ["gpu"]
    assert (busy["host"], busy["pid"], busy["lastSeenAgoS"]) == ("host", 1, 0.0)
    assert idle["run"] is None and idle["lastSeenAgoS"] == 29.0
    assert gone["run"] == {"runId": "r-2", "attempt": 1}, "a gone pod shows the run it was last on"


def test_gone_is_judged_on_each_pods_own_interval(mock_db):
    _beat(mock_db, "slow-beats", at=NOW - timedelta(seconds=100), interval_s=60)
    _beat(mock_db, "fast-beats", at=NOW - timedelta(seconds=4), interval_s=1)
    assert _states(mock_db) == {"slow-beats": "idle", "fast-beats": "gone"}


def test_a_pod_is_shown_gone_for_an_hour_then_no_more(mock_db):
    _beat(mock_db, "pod-a", at=NOW - timedelta(minutes=59))
    _beat(mock_db, "pod-b", at=NOW - timedelta(minutes=61))
    assert _states(mock_db) == {"pod-a": "gone"}


def test_a_beat_replaces_the_processs_own_record_and_leave_deletes_it(mock_db):
    started = NOW - timedelta(hours=1)
    pods.beat(mock_db, "pod-a", "h:7", run_id="r-1", attempt=1, gpu={}, now=NOW, started_at=started)
    pods.beat(mock_db, "pod-a", "h:7", run_id=None, attempt=None, gpu={}, now=NOW + timedelta(seconds=10), started_at=started)
    [doc] = mock_db.pods.find()
    assert doc["_id"] == "pod-a/h:7" and doc["run"] is None and doc["gpu"] is None
    assert doc["lastSeen"] == NOW + timedelta(seconds=10) and doc["startedAt"] == started
    pods.leave(mock_db, "pod-a", "h:7")
    assert mock_db.pods.count_documents({}) == 0


def test_prune_deletes_only_records_older_than_the_cutoff_in_bounded_batches(mock_db, monkeypatch):
    monkeypatch.setattr(pods, "PRUNE_BATCH", 2)
    monkeypatch.setattr(pods, "PRUNE_MAX_BATCHES", 2)
    for n in range(5):
        _beat(mock_db, f"old-{n}", at=NOW - timedelta(hours=2))
    _beat(mock_db, "recent", at=NOW - timedelta(minutes=30))
    assert pods.prune(mock_db, NOW - timedelta(hours=1)) == 4, "two batches of two"
    assert pods.prune(mock_db, NOW - timedelta(hours=1)) == 1
    assert pods.prune(mock_db, NOW - timedelta(hours=1)) == 0
    assert [d["podId"] for d in mock_db.pods.find()] == ["recent"]


def test_the_sweeper_pass_prunes_presence_records_gone_for_over_an_hour(mock_db):
    _beat(mock_db, "long-gone", at=datetime.now(UTC) - timedelta(hours=2))
    _beat(mock_db, "here", at=datetime.now(UTC))
    assert sweep_once(mock_db, make_settings(), FakeSender())["podsPruned"] == 1
    assert [d["podId"] for d in mock_db.pods.find()] == ["here"]


def _presence(db: Any, on: list[tuple[str, int] | None], interval_s: float = 60.0) -> Presence:
    return Presence(db, "pod-t", interval_s=interval_s, current=lambda: on[0], gpu=lambda: dict(GPU))


def test_a_presence_beat_never_raises_on_a_database_error_and_says_so_in_the_log(caplog):
    beat = _presence(DownDb(), [None])
    with caplog.at_level(logging.WARNING, logger="tasks.pod.presence"):
        assert beat.beat() is False
        assert beat.beat() is False
    assert "could not be written" in caplog.text and caplog.text.count("could not be written") == 1, "logged once, not per beat"
    beat.stop()  # leave fails too: logged, not raised
    assert "not removed at exit" in caplog.text


def test_a_presence_beat_survives_a_bug_in_the_telemetry(mock_db):
    def broken() -> dict[str, Any]:
        raise RuntimeError("nvml exploded")
    beat = Presence(mock_db, "pod-t", interval_s=60, current=lambda: None, gpu=broken)
    assert beat.beat() is False and mock_db.pods.count_documents({}) == 0


def test_the_presence_thread_retries_after_a_database_outage(mock_db, monkeypatch):
    down = threading.Event()
    down.set()
    real_beat = pods.beat

    def flaky(*args: Any, **kwargs: Any) -> None:
        if down.is_set():
            DownDb()()
        real_beat(*args, **kwargs)

    monkeypatch.setattr(pods, "beat", flaky)
    thread = _presence(mock_db, [None], interval_s=0.05)
    thread.start()
    try:
        wait_until(lambda: thread._failures >= 2, 5, "two failed beats")
        assert thread.is_alive() and mock_db.pods.count_documents({}) == 0
        down.clear()
        wait_until(lambda: mock_db.pods.count_documents({}) == 1, 5, "the presence written once the database is back")
    finally:
        thread.stop()
    assert not thread.is_alive() and mock_db.pods.count_documents({}) == 0


def test_a_poke_writes_the_new_run_at_once_not_at_the_next_interval(mock_db):
    on: list[tuple[str, int] | None] = [None]
    thread = _presence(mock_db, on, interval_s=60)
    thread.start()
    try:
        wait_until(lambda: _states(mock_db, datetime.now(UTC)) == {"pod-t": "idle"}, 5, "the first beat")
        on[0] = ("r-9", 3)
        thread.poke()
        wait_until(lambda: (mock_db.pods.find_one() or {}).get("run") == {"runId": "r-9", "attempt": 3}, 5, "the busy beat")
    finally:
        thread.stop()


@pytest.fixture
def rt(mock_db, tmp_path):
    settings = make_settings(WORK_DIR=str(tmp_path / "work"), HEARTBEAT_INTERVAL_S="0.05", LEASE_S="5",
                             PRESENCE_INTERVAL_S="60")
    runtime = Runtime(settings=settings, db=mock_db, emitter=InProcessEmitter(mock_db), storage=LocalStorage(tmp_path / "art"))
    yield runtime
    if runtime.presence is not None:
        runtime.presence.stop()


def test_the_runtime_says_busy_with_the_run_while_an_attempt_runs_and_idle_at_once_after(rt, mock_db, monkeypatch):
    seen: list[Any] = []

    def step(ctx: Any) -> dict[str, Any]:
        wait_until(lambda: mock_db.pods.find_one({"run": {"$ne": None}}), 5, "the busy presence")
        seen.append(pods.live(mock_db)[0])
        return {}

    monkeypatch.setitem(pipeline.PIPELINES, "presence", lambda: Pipeline("presence", (Step("auto_validation", step),)))
    _, run_id = create_hypothesis_and_run(mock_db, "t", "idea", pipeline="presence")
    assert dispatch_once(mock_db, lambda *a, **k: None) == 1
    rt.start_presence()
    wait_until(lambda: mock_db.pods.count_documents({}) == 1, 5, "the first beat")
    Attempt(rt, run_id, 1).execute()
    [busy] = seen
    assert busy["state"] == "busy" and busy["run"] == {"runId": run_id, "attempt": 1} and busy["podId"] == "pod-test"
    wait_until(lambda: mock_db.pods.find_one({"run": None}), 5, "idle again well before the 60 s interval")
    assert _states(mock_db, datetime.now(UTC)) == {"pod-test": "idle"}


def test_the_presence_thread_starts_with_the_process_runtime_and_its_record_goes_with_it(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # runtime() installs its hooks; undone after the test
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    monkeypatch.setattr(presence_mod, "_queues", ("gpu",))
    settings = make_settings(SPOOL_DIR=str(tmp_path / "spool"), WORK_DIR=str(tmp_path / "work"), PRESENCE_INTERVAL_S="0.05")
    runtime = runtime_mod.runtime(settings)
    try:
        assert runtime.presence is not None and runtime.presence.is_alive()
        [doc] = wait_until(lambda: list(runtime.db.pods.find()), 5, "the presence record")  # type: ignore[misc]
        assert doc["_id"] == f"pod-test/{presence_mod.slot()}" and doc["queues"] == ["gpu"] and doc["intervalS"] == 0.05
        first = doc["lastSeen"]
        wait_until(lambda: runtime.db.pods.find_one()["lastSeen"] > first, 5, "a second beat")
    finally:
        thread = runtime.presence
        runtime_mod.shutdown_runtime()
    assert thread is not None and not thread.is_alive()
    assert runtime.db.pods.count_documents({}) == 0, "a clean exit removes the record"


def test_presence_interval_s_defaults_to_10_seconds_and_a_bad_value_names_the_variable() -> None:
    assert make_settings().presence_interval_s == 10.0
    assert make_settings(PRESENCE_INTERVAL_S="2.5").presence_interval_s == 2.5
    for bad in ("soon", "0", "nan"):
        with pytest.raises(SettingsError, match="PRESENCE_INTERVAL_S"):
            make_settings(PRESENCE_INTERVAL_S=bad)
