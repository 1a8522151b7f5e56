"""The heartbeat thread's rules: renew the lease and report, see a cancel request, stop on a lost
lease, interrupt a step that does not reach a checkpoint in time, and survive a database error."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pymongo.errors import AutoReconnect

from orchestrator import claims
from pipeline.context import Canceled
from tasks.pod import heartbeat as heartbeat_module
from tasks.pod.heartbeat import Heartbeat, LeaseLost

RUN, ATTEMPT, POD = "run-hb", 1, "pod-hb"


class Emitted:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, event_type: str, **data: Any) -> None:
        self.events.append((event_type, data))


@pytest.fixture
def beats(mock_db: Any) -> Iterator[Any]:
    """Makes heartbeats of RUN's attempt 1 (claimed by POD) for the calling thread; stops them after."""
    claims.claim_attempt(mock_db, RUN, ATTEMPT, POD, lease_s=5)
    started: list[Heartbeat] = []

    def make(*, grace_s: float = 5.0, interval_s: float = 0.02, lease_s: float = 5,
             on_fence_deadline: Any = None) -> tuple[Heartbeat, Emitted]:
        emitted = Emitted()
        hb = Heartbeat(mock_db, RUN, ATTEMPT, POD, interval_s=interval_s, lease_s=lease_s, grace_s=grace_s,
                       emit=emitted, target_thread=threading.get_ident(),
                       on_fence_deadline=on_fence_deadline or _must_not_exit)
        started.append(hb)
        return hb, emitted

    yield make
    for hb in started:
        hb.stop()


def _must_not_exit() -> None:
    raise AssertionError("the fence's hard deadline fired in a test that renews its lease")


def _wait(condition: Any, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_each_beat_renews_the_lease_and_reports_a_heartbeat(mock_db: Any, beats: Any) -> None:
    before = claims.get_claim(mock_db, RUN, ATTEMPT)["leaseExpiresAt"]
    hb, emitted = beats()
    hb.start()
    _wait(lambda: len(emitted.events) >= 2)
    assert {t for t, _ in emitted.events} == {"ai.run.heartbeat"}
    assert claims.get_claim(mock_db, RUN, ATTEMPT)["leaseExpiresAt"] > before
    hb.check()  # nothing asked the run to stop


def test_a_cancel_request_is_seen_and_the_next_checkpoint_raises_canceled_with_the_reason(mock_db: Any, beats: Any) -> None:
    hb, _ = beats()
    hb.start()
    claims.request_cancel(mock_db, RUN, ATTEMPT, by="alice", reason="wrong dataset")
    _wait(hb.cancel_requested.is_set)
    assert hb.cancel_info == {"by": "alice", "reason": "wrong dataset"}
    with pytest.raises(Canceled, match="wrong dataset"):
        hb.check()


def test_a_lease_the_sweeper_ended_stops_the_run_without_a_report(mock_db: Any, beats: Any) -> None:
    hb, emitted = beats()
    mock_db.claims.update_one({"_id": claims.claim_id(RUN, ATTEMPT)}, {"$set": {"releasedAt": "swept"}})
    hb.start()
    _wait(hb.lease_lost.is_set)
    with pytest.raises(LeaseLost):
        hb.check()
    assert emitted.events == []  # another pod owns the run now


def test_a_step_that_does_not_reach_a_checkpoint_is_interrupted_after_the_grace_period(mock_db: Any, beats: Any) -> None:
    hb, _ = beats(grace_s=0.2)
    hb.start()
    claims.request_cancel(mock_db, RUN, ATTEMPT, by="bob", reason=None)
    began = time.monotonic()
    with pytest.raises(Canceled):
        while time.monotonic() - began < 10:  # a busy step that never calls check()
            sum(range(1000))
    assert 0.2 <= time.monotonic() - began < 5


def test_a_database_error_in_a_beat_is_logged_and_the_next_beat_goes_on(
    mock_db: Any, beats: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_renew = claims.renew_lease
    failures = [AutoReconnect("connection reset")]

    def flaky(*args: Any, **kwargs: Any) -> bool:
        if failures:
            raise failures.pop()
        return real_renew(*args, **kwargs)

    monkeypatch.setattr(heartbeat_module.claims, "renew_lease", flaky)
    hb, emitted = beats()
    hb.start()
    _wait(lambda: len(emitted.events) >= 1)
    assert "could not reach MongoDB" in caplog.text
    assert hb.is_alive() and not hb.lease_lost.is_set()


# --- fencing: a worker that cannot renew stops before its lease can end ----------------------------


def _unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    def down(*_: Any, **__: Any) -> bool:
        raise AutoReconnect("connection refused")

    monkeypatch.setattr(claims, "renew_lease", down)


def test_a_worker_that_cannot_renew_is_fenced_before_its_lease_ends(
    mock_db: Any, beats: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lease 2 s: the hard deadline is 1.5 s after the claim (a quarter of the lease before its
    end), the soft stop 0.5 s before that; the step gets LeaseLost at its next bytecode."""
    _unreachable(monkeypatch)
    ended: list[float] = []
    began = time.monotonic()
    hb, emitted = beats(lease_s=2, grace_s=5, interval_s=0.1, on_fence_deadline=lambda: ended.append(time.monotonic()))
    hb.start()
    with pytest.raises(LeaseLost):
        while True:  # a step in pure Python: interrupted at once
            time.sleep(0.01)
    stopped = time.monotonic() - began
    assert 0.9 <= stopped < 1.5, stopped
    assert hb.lease_lost.is_set() and hb.fence.fenced.is_set()
    with pytest.raises(LeaseLost):
        hb.check()
    hb.stop()
    time.sleep(0.7)
    assert ended == [], "a step that stopped in time does not end the process"
    assert [e for e, _ in emitted.events if e == "ai.run.heartbeat"] == []


def test_a_step_that_does_not_stop_ends_the_process_by_the_deadline(
    mock_db: Any, beats: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step blocked in C (here: a sleep in another thread we cannot interrupt) is past help:
    by the deadline the process ends (recorded here instead)."""
    _unreachable(monkeypatch)
    ended = threading.Event()
    blocked = threading.Event()
    began = time.monotonic()

    def step() -> None:
        hb, _ = beats(lease_s=2, grace_s=5, interval_s=0.1, on_fence_deadline=ended.set)
        hb.start()
        try:
            blocked.wait(5)  # one C call: the asynchronous LeaseLost waits until it returns
        except LeaseLost:
            pass

    thread = threading.Thread(target=step)
    thread.start()
    assert ended.wait(3)
    assert 1.4 <= time.monotonic() - began < 2.0, "the hard stop comes before the lease (2 s) ends"
    blocked.set()
    thread.join(5)


def test_renewals_move_the_deadline_on(mock_db: Any, beats: Any) -> None:
    hb, _ = beats(lease_s=1, interval_s=0.1)
    hb.start()
    time.sleep(2.5)  # over twice the lease, renewing every 0.1 s
    hb.check()
    assert not hb.fence.fenced.is_set()


def test_the_heartbeat_thread_works_in_the_starting_thread_s_run_and_span_for_its_logs(beats: Any) -> None:
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext

    from orchestrator import tracing

    hb, emitted = beats()
    seen: list[Any] = []
    hb.emit = lambda *_, **__: seen.append((tracing.current_run(), trace.get_current_span().get_span_context().trace_id))
    with trace.use_span(NonRecordingSpan(SpanContext(7, 9, is_remote=True))), tracing.run_scope(RUN, ATTEMPT):
        hb.start()
    _wait(lambda: seen)
    assert seen[0] == ((RUN, ATTEMPT), 7)


def test_the_beat_s_database_calls_make_no_span_but_its_log_lines_keep_the_run(mock_db: Any, beats: Any, monkeypatch: Any) -> None:
    """Every few seconds for a day's run: traced, the lease renewals alone would make a trace of
    tens of thousands of spans. The run's scope still reaches the thread, for the logs."""
    from opentelemetry.instrumentation.utils import is_instrumentation_enabled

    from orchestrator import tracing

    seen: list[tuple[bool, Any]] = []
    renew = claims.renew_lease

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append((is_instrumentation_enabled(), tracing.current_run()))
        return renew(*args, **kwargs)

    monkeypatch.setattr(heartbeat_module.claims, "renew_lease", spy)
    with tracing.run_scope(RUN, ATTEMPT):
        hb, _ = beats()
        hb.start()
    _wait(lambda: len(seen) >= 2)
    assert set(seen) == {(False, (RUN, ATTEMPT))}
