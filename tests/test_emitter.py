"""The event emitter against a fake ingest HTTP server on loopback: batching, retries, Retry-After,
invalid events, 413, outages, restarts, seq numbering, flush and close."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest

from orchestrator.events import SEQ_BLOCK, validate_event
from orchestrator.retry import Backoff, retry_after_s
from tasks.pod.emitter import Emitter, EmitterConfig
from tasks.pod.spool import DEAD_LETTERS
from tests.fakes import FakeIngest, answer, results
from tests.helpers import WORKER_TOKEN, make_settings
from tests.servers import free_port, process_env, wait_until

#: Short times so the lane stays fast: linger 0.1 s, poll every 10 ms, retries within 50 ms.
FAST = EmitterConfig(max_delay_s=0.1, poll_s=0.01, backoff=Backoff(base_s=0.01, cap_s=0.05))
#: The same, but a batch goes only when full or flushed: for tests that count what one POST holds.
FULL_BATCHES = replace(FAST, max_delay_s=60.0)


@pytest.fixture
def emitters(tmp_path: Path) -> Iterator[Callable[..., Emitter]]:
    """Make emitters on one spool directory; all are closed and their threads checked after."""
    made: list[Emitter] = []

    def make(url: str, config: EmitterConfig = FAST, spool: Path | None = None) -> Emitter:
        settings = make_settings(INGEST_URL=url, SPOOL_DIR=str(spool or tmp_path / "spool"))
        emitter = Emitter(settings, config=config)
        made.append(emitter)
        return emitter

    yield make
    for emitter in made:
        emitter.close(timeout=0)
    wait_until(lambda: not any(e.running for e in made), 5, "event sender threads to stop")


def test_events_go_out_as_ndjson_batches_of_at_most_50_with_the_bearer_token(ingest: FakeIngest, emitters: Callable[..., Emitter]) -> None:
    emitter = emitters(ingest.url)
    events = emitter.stream("run-1", 1)
    emitted = [events.emit("ai.run.stage_progress", stage="Stage_1", progress=i / 120) for i in range(120)]
    assert emitter.flush(5)
    assert [e["id"] for e in ingest.delivered] == [e["id"] for e in emitted]
    assert max(len(r.events) for r in ingest.received) <= 50 and len(ingest.received) >= 3
    headers = ingest.received[0].headers
    assert headers["Content-Type"] == "application/x-ndjson"
    assert headers["Authorization"] == f"Bearer {WORKER_TOKEN}"
    assert emitter.stats().sent == 120 and emitter.stats().backlog == 0


def test_emitted_events_are_valid_cloudevents_numbered_from_the_attempts_block(ingest: FakeIngest, emitters: Callable[..., Emitter]) -> None:
    emitter = emitters(ingest.url)
    events = emitter.stream("run-1", 3)
    events.emit("ai.run.started", pod_id="pod-test", attempt=3)
    events.emit("ai.run.stage_metric", stage="Stage_2", name="loss", value=0.25, step=7)
    assert emitter.flush(5)
    for n, event in enumerate(ingest.delivered, start=1):
        checked = validate_event(event)
        assert checked["source"] == "worker://pod-test" and checked["subject"] == "run/run-1"
        assert checked["seq"] == 3 * SEQ_BLOCK + n


def test_a_lone_event_is_sent_within_about_a_second_without_a_flush(ingest: FakeIngest, emitters: Callable[..., Emitter]) -> None:
    emitter = emitters(ingest.url, EmitterConfig(max_delay_s=1.0, poll_s=0.05))
    emitted_at = time.monotonic()
    emitter.stream("run-1", 1).emit("ai.run.log", level="info", message="hello")
    time.sleep(0.4)
    assert ingest.received == []  # waiting for company, up to max_delay_s
    wait_until(lambda: ingest.delivered, 5, "the event to arrive")
    assert 0.9 <= ingest.received[0].at - emitted_at < 3.0


def test_server_errors_are_retried_with_backoff_and_nothing_is_lost(ingest: FakeIngest, emitters: Callable[..., Emitter]) -> None:
    ingest.then(answer(500), answer(502, b"bad gateway"), answer(503))
    emitter = emitters(ingest.url, FULL_BATCHES)
    emitted = [emitter.stream("run-1", 1).emit("ai.run.log", level="info", message=str(i)) for i in range(10)]
    assert emitter.flush(5)
    assert [e["id"] for e in ingest.delivered] == [e["id"] for e in emitted]
    assert len(ingest.received) == 4
    assert all(r.events == ingest.received[0].events for r in ingest.received)  # the same batch again
    assert emitter.stats().retries == 3 and emitter.stats().sent == 10


def test_retry_after_is_honoured_even_when_the_backoff_would_retry_sooner(ingest: FakeIngest, emitters: Callable[..., Emitter]) -> None:
    ingest.then(answer(503, Retry_After="1"), answer(429, Retry_After="0"))
    emitter = emitters(ingest.url, EmitterConfig(max_delay_s=0.01, poll_s=0.01, backoff=Backoff(0.001, 0.002)))
    emitter.stream("run-1", 1).emit("ai.run.log", level="info", message="x")
    assert emitter.flush(5)
    first, second, third = ingest.received
    assert second.at - first.at >= 0.9
    assert len(ingest.delivered) == 1 and emitter.stats().retries == 2


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert retry_after_s("7", now) == 7.0
    assert retry_after_s(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30.0
    assert retry_after_s(format_datetime(now - timedelta(seconds=30), usegmt=True), now) == 0.0
    assert retry_after_s("soon", now) is None
    assert retry_after_s(None, now) is None


def test_invalid_events_are_dropped_and_logged_with_the_reason(ingest: FakeIngest, emitters: Callable[..., Emitter], caplog: pytest.LogCaptureFixture) -> None:
    ingest.then(lambda events: results(events, invalid=frozenset({1})))
    emitter = emitters(ingest.url, FULL_BATCHES)
    events = emitter.stream("run-1", 1)
    emitted = [events.emit("ai.run.stage_progress", stage="Stage_1", progress=p) for p in (0.1, 0.2, 0.3)]
    with caplog.at_level(logging.ERROR, logger="tasks.pod.emitter"):
        assert emitter.flush(5)
    sent_ids = [e["id"] for r in ingest.received for e in r.events]
    assert sent_ids.count(emitted[1]["id"]) == 1  # the invalid one is not sent again
    delivered = ingest.delivered
    assert [e["id"] for e in delivered[:2]] == [emitted[0]["id"], emitted[2]["id"]]
    [notice] = delivered[2:]  # the run's history says what was dead-lettered, and why
    assert notice["type"] == "ai.run.log" and notice["data"]["level"] == "warning"
    assert notice["data"]["kv"]["deadLetter"] is True and notice["data"]["kv"]["eventId"] == emitted[1]["id"]
    record = next(r for r in caplog.records if r.levelno == logging.ERROR)
    assert emitted[1]["id"] in record.getMessage() and "ai.run.stage_progress" in record.getMessage()
    assert "Must be within 0..1." in record.getMessage()
    assert emitter.stats().dropped_invalid == 1 and emitter.stats().sent == 3
    [letter] = _dead_letters(emitter)
    assert letter["event"]["id"] == emitted[1]["id"] and "Must be within 0..1." in letter["reason"]


def test_413_halves_the_batch_until_it_fits(ingest: FakeIngest, emitters: Callable[..., Emitter]) -> None:
    ingest.rule = lambda events: answer(413) if len(events) > 10 else ingest.accept(events)
    emitter = emitters(ingest.url, FULL_BATCHES)
    events = emitter.stream("run-1", 1)
    emitted = [events.emit("ai.run.log", level="info", message=str(i)) for i in range(50)]
    assert emitter.flush(5)
    assert [e["id"] for e in ingest.delivered] == [e["id"] for e in emitted]
    assert [len(r.events) for r in ingest.received][:4] == [50, 25, 12, 6]
    assert emitter.stats().dropped_invalid == 0


def test_an_event_too_large_even_alone_is_dropped_not_retried_forever(ingest: FakeIngest, emitters: Callable[..., Emitter], caplog: pytest.LogCaptureFixture) -> None:
    ingest.rule = lambda events: answer(413)
    emitter = emitters(ingest.url)
    emitter.stream("run-1", 1).emit("ai.run.log", level="info", message="x" * 1000)
    with caplog.at_level(logging.ERROR, logger="tasks.pod.emitter"):
        assert emitter.flush(5)
    # the event, then the notice about it (refused too here); no notice about the notice
    assert emitter.stats().dropped_invalid == 2
    assert "413 Payload Too Large" in caplog.text
    assert [(d["event"]["data"].get("kv") or {}).get("deadLetter", False) for d in _dead_letters(emitter)] == [False, True]


def test_a_rejected_token_is_logged_loudly_and_retried_without_dropping_events(ingest: FakeIngest, emitters: Callable[..., Emitter], caplog: pytest.LogCaptureFixture) -> None:
    ingest.then(answer(401, b'{"title": "Unauthorized"}'), answer(403))
    emitter = emitters(ingest.url)
    emitter.stream("run-1", 1).emit("ai.run.log", level="info", message="x")
    with caplog.at_level(logging.ERROR, logger="tasks.pod.emitter"):
        assert emitter.flush(5)
    assert "check INGEST_TOKEN" in caplog.text
    assert len(ingest.delivered) == 1 and emitter.stats().dropped_invalid == 0


def test_an_unusable_200_answer_is_retried_not_taken_as_delivered(ingest: FakeIngest, emitters: Callable[..., Emitter]) -> None:
    ingest.then(answer(200, b"<html>proxy</html>"), answer(200, b'{"results": []}'))
    emitter = emitters(ingest.url)
    emitter.stream("run-1", 1).emit("ai.run.log", level="info", message="x")
    assert emitter.flush(5)
    assert len(ingest.received) == 3 and len(ingest.delivered) == 1
    assert emitter.stats().retries == 2


def test_nothing_is_lost_across_an_outage_and_emit_does_not_wait_for_it(emitters: Callable[..., Emitter]) -> None:
    port = free_port()
    emitter = emitters(f"http://127.0.0.1:{port}")  # nothing listens yet
    events = emitter.stream("run-1", 1)
    emitted = [events.emit("ai.run.log", level="info", message=str(i)) for i in range(300)]
    assert not emitter.flush(0.3)
    stats = emitter.stats()
    assert stats.retries >= 1 and stats.backlog == 300 and stats.sent == 0
    assert stats.blocked_max_s < 0.5  # generous: the target (< 10 ms) is measured by the benchmark

    ingest = FakeIngest(port)  # ingest is back
    try:
        assert emitter.flush(10)
        assert [e["id"] for e in ingest.delivered] == [e["id"] for e in emitted]
    finally:
        ingest.stop()


def test_a_new_emitter_on_the_same_spool_sends_what_the_old_one_could_not(ingest: FakeIngest, emitters: Callable[..., Emitter]) -> None:
    old = emitters(f"http://127.0.0.1:{free_port()}")
    run_a, run_b = old.stream("run-a", 1), old.stream("run-b", 1)
    emitted = [(run_a if i % 3 else run_b).emit("ai.run.log", level="info", message=str(i)) for i in range(30)]
    assert not old.close(timeout=0.2)  # ingest down: the events stay in the spool
    assert not old.running

    new = emitters(ingest.url)  # the restarted worker
    assert new.flush(5)
    for run in ("run-a", "run-b"):
        sent = [e["id"] for e in ingest.delivered if e["data"]["run_id"] == run]
        assert sent == [e["id"] for e in emitted if e["data"]["run_id"] == run]


def test_seq_goes_on_after_a_restart_and_each_attempt_has_its_own_block(emitters: Callable[..., Emitter]) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    old = emitters(down)
    seqs = [old.stream("run-1", 2).emit("ai.run.log", level="info", message="x")["seq"] for _ in range(3)]
    assert seqs == [2 * SEQ_BLOCK + 1, 2 * SEQ_BLOCK + 2, 2 * SEQ_BLOCK + 3]
    old.close(timeout=0)

    new = emitters(down)
    assert new.stream("run-1", 2).emit("ai.run.log", level="info", message="x")["seq"] == 2 * SEQ_BLOCK + 4
    assert new.stream("run-1", 3).emit("ai.run.log", level="info", message="x")["seq"] == 3 * SEQ_BLOCK + 1


def test_one_stream_per_attempt_while_open_and_numbering_goes_on_after_close(emitters: Callable[..., Emitter]) -> None:
    emitter = emitters(f"http://127.0.0.1:{free_port()}")
    first = emitter.stream("run-1", 1)
    assert emitter.stream("run-1", 1) is first
    first.emit("ai.run.log", level="info", message="x")
    first.close()
    again = emitter.stream("run-1", 1)
    assert again is not first
    assert again.emit("ai.run.log", level="info", message="x")["seq"] == SEQ_BLOCK + 2


def test_two_threads_on_one_stream_get_distinct_seqs_spooled_in_seq_order(ingest: FakeIngest, emitters: Callable[..., Emitter]) -> None:
    emitter = emitters(ingest.url)
    events = emitter.stream("run-1", 1)

    def burst() -> None:
        for _ in range(200):
            events.emit("ai.run.heartbeat", gpu_util=50.0)

    threads = [threading.Thread(target=burst) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert emitter.flush(5)
    assert [e["seq"] for e in ingest.delivered] == [SEQ_BLOCK + n for n in range(1, 401)]


def test_a_closed_run_leaves_no_spool_files_once_delivered(ingest: FakeIngest, emitters: Callable[..., Emitter], tmp_path: Path) -> None:
    emitter = emitters(ingest.url)
    done, ongoing = emitter.stream("run-done", 1), emitter.stream("run-on", 1)
    done.emit("ai.run.log", level="info", message="x")
    ongoing.emit("ai.run.log", level="info", message="x")
    done.close()
    assert emitter.flush(5)
    spool = tmp_path / "spool"
    wait_until(lambda: not list(spool.glob("run-done.*")), 5, "the closed run's files to go")
    assert (spool / "run-on.ndjson").exists()


def test_emit_refuses_unknown_types_and_turns_numpy_like_scalars_into_numbers(ingest: FakeIngest, emitters: Callable[..., Emitter]) -> None:
    class Scalar:  # what numpy.float32 looks like to the encoder
        def item(self) -> float:
            return 0.5

    emitter = emitters(ingest.url)
    events = emitter.stream("run-1", 1)
    with pytest.raises(ValueError, match="unknown event type 'ai.run.oops'"):
        events.emit("ai.run.oops")
    events.emit("ai.run.stage_metric", stage="Stage_1", name="acc", value=Scalar())
    assert emitter.flush(5)
    assert ingest.delivered[0]["data"]["value"] == 0.5
    assert ingest.delivered[0]["seq"] == SEQ_BLOCK + 1  # the refused call used no number


def test_close_is_idempotent_and_reports_whether_everything_went(ingest: FakeIngest, emitters: Callable[..., Emitter]) -> None:
    emitter = emitters(ingest.url)
    emitter.stream("run-1", 1).emit("ai.run.log", level="info", message="x")
    assert emitter.close(timeout=5)
    assert not emitter.running
    assert emitter.close(timeout=5)
    assert len(ingest.delivered) == 1


#: A worker that emits forever with ingest down, printing each event id once `emit` returned.
_DOOMED_WORKER = """
import sys
from tasks.pod.emitter import Emitter
from tests.helpers import make_settings
emitter = Emitter(make_settings(INGEST_URL=sys.argv[1], SPOOL_DIR=sys.argv[2]))
events = emitter.stream("run-1", 1)
while True:
    print(events.emit("ai.run.log", level="info", message="x")["id"], flush=True)
"""


def test_events_emitted_before_a_sigkill_are_sent_by_the_next_process(ingest: FakeIngest, emitters: Callable[..., Emitter], tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    child = subprocess.Popen([sys.executable, "-c", _DOOMED_WORKER, f"http://127.0.0.1:{free_port()}", str(spool)],
                             env=process_env(), stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    emitted = [child.stdout.readline().strip() for _ in range(200)]
    child.send_signal(signal.SIGKILL)  # no flush, no close, maybe mid-write
    child.wait()
    child.stdout.close()

    emitter = emitters(ingest.url)  # the kernel released the dead process's spool lock
    assert emitter.flush(10)
    replayed = [e["id"] for e in ingest.delivered]
    assert replayed[: len(emitted)] == emitted  # every acknowledged emit survived, in order
    assert [e["seq"] for e in ingest.delivered] == [SEQ_BLOCK + n for n in range(1, len(replayed) + 1)]


def _dead_letters(emitter: Emitter) -> list[dict[str, Any]]:
    path = Path(emitter._spool.directory) / DEAD_LETTERS
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_an_event_that_keeps_breaking_ingest_is_found_and_dead_lettered_and_the_rest_flow(
    ingest: FakeIngest, emitters: Callable[..., Emitter]
) -> None:
    emitter = emitters(ingest.url, FULL_BATCHES)
    events = emitter.stream("run-1", 1)
    emitted = [events.emit("ai.run.log", level="info", message=f"line {i}") for i in range(20)]
    poison = emitted[13]["id"]
    ingest.rule = lambda batch: answer(500, b"Internal Server Error") if any(e["id"] == poison for e in batch) \
        else ingest.accept(batch)
    assert emitter.flush(10)
    delivered = [e["id"] for e in ingest.delivered if not (e["data"].get("kv") or {}).get("deadLetter")]
    assert delivered == [e["id"] for e in emitted if e["id"] != poison], "every other event, in order"
    [letter] = _dead_letters(emitter)
    assert letter["event"]["id"] == poison and "HTTP 500" in letter["reason"] and "3 times" in letter["reason"]
    assert any((e["data"].get("kv") or {}).get("eventId") == poison for e in ingest.delivered)


@pytest.mark.parametrize("status", [401, 403, 429, 502, 503, 504])
def test_outages_throttles_and_rejected_tokens_never_dead_letter(
    ingest: FakeIngest, emitters: Callable[..., Emitter], status: int
) -> None:
    ingest.then(*[answer(status)] * 6)
    emitter = emitters(ingest.url)
    emitted = [emitter.stream("run-1", 1).emit("ai.run.log", level="info", message=str(i)) for i in range(3)]
    assert emitter.flush(10)
    assert [e["id"] for e in ingest.delivered] == [e["id"] for e in emitted]
    assert emitter.stats().dropped_invalid == 0 and _dead_letters(emitter) == []
