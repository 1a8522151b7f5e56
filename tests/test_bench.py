"""Smoke test of the benchmark harness's pure helpers: percentiles, targets, the table, the
workload. No timing is measured or asserted here; `python -m bench` does that."""

from __future__ import annotations

import struct

import bson
import pytest

from bench import memory, workload
from bench.procs import cpu_ticks
from bench.profile import write_counts
from bench.report import Document, Machine, Row, Target, number, render_table
from bench.stats import Summary, percentile, rate
from devtools.proxy import OP_MSG, OP_QUERY, command_name, command_target
from orchestrator.events import EVENT_TYPES


def test_percentile_interpolates_between_closest_ranks():
    assert percentile([3, 1, 2], 50) == 2
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([10, 20], 95) == pytest.approx(19.5)
    assert percentile([7], 95) == 7
    assert percentile([1, 2, 3], 0) == 1 and percentile([1, 2, 3], 100) == 3


def test_percentile_refuses_no_values_and_a_percent_out_of_range():
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match="outside 0..100"):
        percentile([1], 101)


def test_summary_and_rate():
    summary = Summary.of([0.1, 0.2, 0.3, 0.4])
    assert (summary.n, summary.max) == (4, 0.4)
    assert summary.text(scale=1000, unit="ms", digits=0) == "p50 250 ms, p95 385 ms, max 400 ms (n=4)"
    assert rate(100, 4.0) == 25.0 and rate(5, 0) == 0.0


def test_a_row_computes_its_ratio_and_whether_its_target_is_met():
    fast = Row("1", "ingest", 600.0, "events/s", 1000.0, "raw", Target(">=", 0.5, on="ratio"))
    slow = Row("1", "ingest", 100.0, "events/s", 1000.0, "raw", Target(">=", 0.5, on="ratio"))
    latency = Row("2", "p95", 1.2, "s", target=Target("<", 1.5))
    untargeted = Row("5", "peak", 50.0, "MiB", 0.0, "idle")
    assert (fast.ratio, fast.met) == (0.6, True)
    assert slow.met is False
    assert latency.ratio is None and latency.met is True
    assert untargeted.ratio is None and untargeted.met is None


def test_a_target_refuses_an_unknown_operator_or_subject():
    with pytest.raises(ValueError, match="operator"):
        Target("=~", 1)
    with pytest.raises(ValueError, match="'figure' or 'ratio'"):
        Target("<", 1, on="baseline")


def test_numbers_are_shown_with_three_significant_digits():
    assert [number(x) for x in (15871.2, 56.94, 1.014, 0.00359, 0)] == ["15,871", "56.9", "1.01", "0.00359", "0"]


def test_the_table_shows_figure_baseline_ratio_target_and_verdict():
    table = render_table([
        Row("1", "ingest | batches", 57.0, "events/s", 15871.0, "raw insert_many", Target(">=", 0.5, on="ratio"), "n=1,100"),
        Row("3", "visibility p95", 0.8, "s", target=Target("<", 1.0)),
    ])
    lines = table.splitlines()
    assert lines[0].startswith("| # | measure | figure | baseline (same run) | ratio | target | met? |")
    assert lines[2] == ("| 1 | ingest \\| batches | 57.0 events/s | 15,871 events/s (raw insert_many) | 0.00359 | "
                        "ratio ≥ 0.5 | **missed** | n=1,100 |")
    assert lines[3] == "| 3 | visibility p95 | 0.8 s | — | — | < 1 s | met |  |"


def test_the_document_names_the_machine_and_counts_the_missed_targets():
    machine = Machine("AMD EPYC", "2", "23.5 GiB", "CPython 3.11.7", "Linux", "FerretDB v1.24.2", "pymongo 4.20.1")
    document = Document("python -m bench --quick", machine, rows=[
        Row("2", "dispatch p50", 0.6, "s", 5.8, "10 s poll, simulated", Target("<", 0.5)),
        Row("2", "dispatch p95", 1.0, "s", 9.7, "10 s poll, simulated", Target("<", 1.5)),
    ], sections=[("2. Dispatch latency", "notes")], seconds=31)
    text = document.render()
    assert "- **CPU**: AMD EPYC" in text and "- **server**: FerretDB v1.24.2" in text
    assert "2 figures, 1 targets met, 1 missed: 2 dispatch p50." in text
    assert text.endswith("## 2. Dispatch latency\n\nnotes\n")


def test_the_workload_holds_every_event_type_in_full_batches_of_one_run_each():
    wl = workload.build(pods=20, runs_per_pod=2, seed=5)
    assert set(wl.type_counts()) == set(EVENT_TYPES) and all(wl.type_counts().values())
    assert {len(batch) for batch in wl.batches} == {workload.BATCH}
    assert all(len({e["data"]["run_id"] for e in batch}) == 1 for batch in wl.batches)
    seqs: dict[str, int] = {}
    for event in wl.events:
        run_id = event["data"]["run_id"]
        assert event["seq"] > seqs.get(run_id, 0), "each run's events arrive in seq order"
        seqs[run_id] = event["seq"]


def test_the_stored_documents_are_the_history_records_ingest_writes():
    wl = workload.build(pods=2, runs_per_pod=1, seed=6)
    [document] = workload.stored_documents(wl.events[:1])
    event = wl.events[0]
    assert document["eventId"] == event["id"] and document["runId"] == event["data"]["run_id"]
    assert set(document) >= {"source", "type", "seq", "time", "data", "receivedAt"}


def test_write_counts_are_per_event_and_coalescing_never_adds_updates():
    wl = workload.build(pods=4, runs_per_pod=1, seed=7)
    counts = write_counts(wl.batches[:3])
    assert counts.events == 150
    assert counts.creates["events"] == 150, "one history record per event"
    assert 0 < counts.coalesced_per_event <= counts.updates_per_event


def test_the_memory_cases_are_the_largest_bodies_the_limits_let_in():
    cases = memory.cases()
    assert all(memory.BODY_BYTES - 64 * 1024 < len(c.body) <= memory.BODY_BYTES for c in cases)
    assert {c.path for c in cases} == {"/api/ingest/events", "/api/ingest/event"}
    assert any(c.body.count(b"\n") == memory.BATCH_EVENTS for c in cases)  # 1,001 lines


def test_memory_measures_one_request_as_the_app_serves_it():
    status, peak = memory.measure(memory.Case("tiny lines", "/api/ingest/events", "application/x-ndjson", b"{}\n" * 2000))
    assert status == 413
    assert 0 < peak < 50 * 6000  # refused before any line is parsed: a small multiple of the body


def _op_msg(document: dict[str, object]) -> bytes:
    body = struct.pack("<I", 0) + b"\0" + bson.encode(document)  # flagBits, a kind-0 section
    return struct.pack("<iiii", 16 + len(body), 1, 0, OP_MSG) + body


def _op_query(document: dict[str, object]) -> bytes:
    body = struct.pack("<i", 0) + b"admin.$cmd\0" + struct.pack("<ii", 0, -1) + bson.encode(document)
    return struct.pack("<iiii", 16 + len(body), 1, 0, OP_QUERY) + body


def test_the_proxy_names_a_commands_collection_when_its_first_value_is_a_string():
    assert command_target(_op_msg({"findAndModify": "messages", "query": {"queue": "gpu"}})) == ("findAndModify", "messages")
    assert command_target(_op_msg({"hello": 1, "$db": "admin"})) == ("hello", "")
    assert command_target(_op_query({"ismaster": 1})) == ("ismaster", "")
    assert command_target(_op_query({"find": "runs"})) == ("find", "runs")
    assert command_name(_op_msg({"update": "pods", "updates": []})) == "update"
    assert command_target(b"short") == ("?", "")


def test_cpu_ticks_sums_user_system_and_reaped_children_after_the_name():
    stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 10 0 0 0 7 8 9 10 20 0 1 0"
    assert cpu_ticks(stat) == 7 + 8 + 9 + 10
