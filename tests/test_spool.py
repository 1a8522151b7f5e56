"""The durable event spool: order, acknowledgement, restart, torn lines, cleanup, bounded memory."""

from __future__ import annotations

import json
import logging
import os
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from tasks.pod.spool import Spool, SpoolError


def line(n: int, attempt: int = 1, pad: str = "") -> bytes:
    return (json.dumps({"id": f"e{n}", "seq": attempt * 1_000_000_000 + n, "data": {"pad": pad}}) + "\n").encode()


def ids(batch_events: list[dict]) -> list[str]:
    return [event["id"] for event in batch_events]


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    s = Spool(tmp_path / "spool")
    yield s
    s.close()


def drain(spool: Spool, run_id: str, max_events: int = 50) -> list[str]:
    """Read and acknowledge until nothing is left; the ids in the order read."""
    seen: list[str] = []
    while run_id in spool.unsent_runs():
        batch = spool.read(run_id, max_events)
        seen += ids(batch.events)
        spool.ack(batch)
    return seen


def test_events_are_read_back_in_append_order_and_ack_moves_past_them(spool: Spool) -> None:
    for n in range(5):
        spool.append("run-1", line(n))
    first = spool.read("run-1", max_events=3)
    assert ids(first.events) == ["e0", "e1", "e2"]
    assert first.body == b"".join(line(n) for n in range(3))
    assert spool.read("run-1", max_events=3).events == first.events  # not acked: same again
    spool.ack(first)
    assert spool.backlog == 2
    second = spool.read("run-1", max_events=3)
    assert ids(second.events) == ["e3", "e4"] and second.start == first.end
    spool.ack(second)
    assert spool.backlog == 0 and spool.unsent_runs() == []


def test_a_batch_stops_at_max_bytes_but_always_holds_at_least_one_event(spool: Spool) -> None:
    big = line(0, pad="x" * 5000)
    spool.append("run-1", big)
    spool.append("run-1", line(1))
    batch = spool.read("run-1", max_events=50, max_bytes=100)
    assert ids(batch.events) == ["e0"]


def test_runs_are_kept_apart(spool: Spool) -> None:
    spool.append("run-a", line(1))
    spool.append("run-b", line(2))
    spool.append("run-a", line(3))
    assert sorted(spool.unsent_runs()) == ["run-a", "run-b"]
    assert drain(spool, "run-a") == ["e1", "e3"]
    assert drain(spool, "run-b") == ["e2"]


def test_a_new_spool_on_the_same_directory_replays_only_unacknowledged_events(tmp_path: Path) -> None:
    first = Spool(tmp_path)
    for n in range(10):
        first.append("run-1", line(n))
    first.ack(first.read("run-1", max_events=4))
    first.close()  # a restart: nothing of the old process's memory survives

    second = Spool(tmp_path)
    assert second.backlog == 6
    assert drain(second, "run-1", max_events=4) == [f"e{n}" for n in range(4, 10)]
    second.append("run-1", line(10))
    assert drain(second, "run-1") == ["e10"]
    second.close()


def test_a_torn_last_line_is_cut_off_on_open_and_later_appends_read_cleanly(tmp_path: Path) -> None:
    first = Spool(tmp_path)
    first.append("run-1", line(1))
    first.close()
    with open(tmp_path / "run-1.ndjson", "ab") as handle:
        handle.write(line(2)[:17])  # killed mid-write

    second = Spool(tmp_path)
    assert second.backlog == 1
    second.append("run-1", line(3))
    assert drain(second, "run-1") == ["e1", "e3"]
    second.close()


def test_an_unreadable_line_in_the_middle_is_skipped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "run-1.ndjson").write_bytes(line(1) + b"\x00\x00garbage\n" + line(2))
    spool = Spool(tmp_path)
    with caplog.at_level(logging.WARNING, logger="tasks.pod.spool"):
        batch = spool.read("run-1")
    assert ids(batch.events) == ["e1", "e2"] and batch.consumed == 3
    assert "skipped an unreadable line" in caplog.text
    spool.ack(batch)
    assert spool.backlog == 0
    spool.close()


def test_a_closed_run_is_removed_once_delivered_and_not_before(spool: Spool) -> None:
    spool.append("run-1", line(1))
    spool.append("run-2", line(2))
    spool.close_run("run-1")
    assert spool.collect() == []  # still undelivered
    drain(spool, "run-1")
    drain(spool, "run-2")
    assert spool.collect() == ["run-1"]  # run-2 delivered but not closed: kept
    names = sorted(p.name for p in spool.directory.iterdir() if not p.name.startswith("."))
    assert names == ["run-2.ack", "run-2.ndjson"]


def test_the_closed_mark_survives_a_restart(tmp_path: Path) -> None:
    first = Spool(tmp_path)
    first.append("run-1", line(1))
    first.close_run("run-1")
    first.close()
    second = Spool(tmp_path)
    drain(second, "run-1")
    assert second.collect() == ["run-1"]
    assert not (tmp_path / "run-1.ndjson").exists()
    second.close()


def test_a_stream_a_killed_process_never_closed_goes_once_delivered_after_the_restart(tmp_path: Path) -> None:
    """A killed attempt leaves its file without the closed mark: the next process owns the
    directory, nobody writes that stream again, so it goes once delivered (at once if it was)."""
    first = Spool(tmp_path)
    first.append("delivered", line(1))
    drain(first, "delivered")
    first.append("pending", line(2))
    first.close()  # as a SIGKILL leaves it: no close_run
    second = Spool(tmp_path)
    assert not (tmp_path / "delivered.ndjson").exists(), "fully delivered: removed on open"
    assert (tmp_path / "pending.ndjson").exists() and second.backlog == 1
    drain(second, "pending")
    assert second.collect() == ["pending"] and not (tmp_path / "pending.ndjson").exists()
    second.close()


def test_appending_to_a_removed_run_starts_a_new_file(spool: Spool) -> None:
    spool.append("run-1", line(1))
    spool.close_run("run-1")
    drain(spool, "run-1")
    spool.collect()
    spool.append("run-1", line(2))
    assert drain(spool, "run-1") == ["e2"]


def test_run_ids_are_encoded_into_safe_file_names(spool: Spool) -> None:
    spool.append("../evil/run", line(1))
    assert [p.name for p in spool.directory.glob("*.ndjson")] == ["..%2Fevil%2Frun.ndjson"]
    spool.close()
    again = Spool(spool.directory)
    assert again.unsent_runs() == ["../evil/run"]
    again.close()


def test_last_seq_is_the_highest_seq_of_that_attempt(spool: Spool) -> None:
    assert spool.last_seq("run-1", 1) == 0
    for n in (1, 2, 3):
        spool.append("run-1", line(n, attempt=1))
    spool.append("run-1", line(1, attempt=2))
    assert spool.last_seq("run-1", 1) == 1_000_000_003
    assert spool.last_seq("run-1", 2) == 2_000_000_001
    assert spool.last_seq("run-1", 3) == 0


def test_a_second_process_cannot_share_the_directory(tmp_path: Path) -> None:
    first = Spool(tmp_path)
    with pytest.raises(SpoolError, match="in use by another process"):
        Spool(tmp_path, lock_timeout_s=0.1)
    first.close()
    Spool(tmp_path, lock_timeout_s=0.1).close()  # released on close (and by the kernel on death)


def test_stray_bookkeeping_files_are_removed_on_open(tmp_path: Path) -> None:
    (tmp_path / "gone.ack").write_text("10")
    (tmp_path / "gone.closed").touch()
    (tmp_path / "run-1.ack.tmp").write_text("1")
    Spool(tmp_path).close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock"]


def test_concurrent_appends_from_many_threads_lose_nothing(spool: Spool) -> None:
    def writer(k: int) -> None:
        for n in range(200):
            spool.append("run-1", line(k * 1000 + n))

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seen = drain(spool, "run-1")
    assert len(seen) == 800 and len(set(seen)) == 800
    for k in range(4):  # each writer's own order is kept
        mine = [s for s in seen if int(s[1:]) // 1000 == k]
        assert mine == sorted(mine, key=lambda s: int(s[1:]))


def test_memory_stays_bounded_by_one_batch_whatever_the_backlog(tmp_path: Path) -> None:
    pad = "x" * 400
    with open(tmp_path / "run-1.ndjson", "wb") as handle:
        for n in range(25_000):  # ~11 MB of backlog left by a long outage
            handle.write(line(n, pad=pad))
    size = os.path.getsize(tmp_path / "run-1.ndjson")
    tracemalloc.start()
    try:
        spool = Spool(tmp_path)  # counts the backlog and scans for the torn tail
        batch = spool.read("run-1", max_events=50)
        spool.ack(batch)
        seq = spool.last_seq("run-1", 1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert spool.backlog == 25_000 - 50 and seq == 1_000_024_999
    assert size > 10 * 2**20
    assert peak < 3 * 2**20, f"peak {peak} bytes for a {size}-byte backlog (reads go 1 MiB at a time)"
    spool.close()


@hsettings(max_examples=40, deadline=None)
@given(
    plan=st.lists(st.tuples(st.sampled_from(["append", "send", "restart"]), st.integers(1, 7)), max_size=40),
)
def test_any_mix_of_appends_partial_sends_and_restarts_delivers_every_event_once_in_order(
    tmp_path_factory: pytest.TempPathFactory, plan: list[tuple[str, int]]
) -> None:
    directory = tmp_path_factory.mktemp("spool")
    spool = Spool(directory)
    appended: list[str] = []
    delivered: list[str] = []
    for action, k in plan:
        if action == "append":
            for _ in range(k):
                spool.append("run-1", line(len(appended)))
                appended.append(f"e{len(appended)}")
        elif action == "send" and "run-1" in spool.unsent_runs():
            batch = spool.read("run-1", max_events=k)
            delivered += ids(batch.events)
            spool.ack(batch)
        else:
            spool.close()
            spool = Spool(directory)
    delivered += drain(spool, "run-1", 3)
    spool.close()
    assert delivered == appended


def test_a_run_file_deleted_from_outside_is_reported_and_skipped_not_retried_forever(spool: Spool, caplog: pytest.LogCaptureFixture) -> None:
    spool.append("run-1", line(1))
    (spool.directory / "run-1.ndjson").unlink()
    with caplog.at_level(logging.ERROR, logger="tasks.pod.spool"):
        batch = spool.read("run-1")
    assert batch.events == [] and "deleted from outside" in caplog.text
    spool.ack(batch)
    assert spool.backlog == 0 and spool.unsent_runs() == []
    spool.append("run-1", line(2))  # a new file, read from its start
    assert drain(spool, "run-1") == ["e2"]


def test_an_unusable_directory_is_refused_naming_spool_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(SpoolError, match="SPOOL_DIR"):
        Spool(blocker / "spool")


def test_the_backlog_in_bytes_is_what_is_spooled_and_not_yet_acknowledged(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    try:
        written = [line(n) for n in range(1, 4)]
        for one in written:
            spool.append("run-1", one)
        spool.append("run-2", line(9))
        assert spool.backlog_bytes == sum(map(len, written)) + len(line(9))
        spool.ack(spool.read("run-1", max_events=2))
        assert spool.backlog_bytes == len(written[2]) + len(line(9))
        spool.close()
        spool = Spool(tmp_path)  # the next process reads it back from the files
        assert spool.backlog_bytes == len(written[2]) + len(line(9))
    finally:
        spool.close()
