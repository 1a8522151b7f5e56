"""Smoke test of the benchmark harness's pure helpers: percentiles, targets, the table, the
workload, the proxy's reading of a command, and the idle benchmark's arithmetic and text. No
timing is measured or asserted here; `python -m bench` does that."""

from __future__ import annotations

import random
import struct
from collections import Counter
from datetime import UTC, datetime, timedelta

import bson
import pytest

from bench import growth, idle, idle_report, memory, workload
from bench.cli import parse_args, selection
from bench.dispatch import Sample
from bench.idle_report import Fleet, Interval, Window
from bench.procs import BenchError, cpu_ticks
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


def _point(runs, **figures):
    return growth.Point(runs, figures={k: float(v) for k, v in figures.items()})


def test_the_growth_table_has_a_column_per_history_and_judges_the_largest_against_the_smallest():
    points = [_point(0, dispatch_p50=0.5, sweep=0.01, ingest=800, list_cli=0.9),
              _point(1000, dispatch_p50=0.6, sweep=0.05, ingest=300, list_cli=0.95),
              _point(10_000, dispatch_p50=0.9, sweep=0.03, ingest=500, list_cli=1.2)]
    lines = growth.growth_table(points).splitlines()
    assert lines[0] == "| measure | 0 runs | 1,000 runs | 10,000 runs | 10,000 / 0 | target | met? |"
    assert lines[1].count("---") == 7
    by_label = {line.split(" | ")[0][2:]: line for line in lines[2:]}
    p50 = by_label["dispatch latency p50 (insert QUEUED -> ai.run.started applied)"]
    assert p50.endswith("| 0.5 s | 0.6 s | 0.9 s | 1.80× | ratio ≤ 2 | met |")
    sweep = next(line for label, line in by_label.items() if label.startswith("one sweeper pass"))
    assert sweep.endswith("| 3.00× | ratio ≤ 2 | **missed** |")  # judged at the largest N, not the worst
    ingest = next(line for label, line in by_label.items() if label.startswith("ingest throughput"))
    assert ingest.endswith("| 800 events/s | 300 events/s | 500 events/s | 0.625× | ratio ≥ 0.5 | met |")
    listed = next(line for label, line in by_label.items() if label.startswith("`manage-runs list`"))
    assert listed.endswith("| 1.33× | < 1 s | **missed** |")  # the ceiling is on the figure at the largest N
    p95 = by_label["dispatch latency p95"]
    assert p95.endswith("| — | — | — | — | ratio ≤ 2 | — |")  # not measured: no verdict
    assert len(lines) == 2 + len(growth.MEASURES) and any("ensure_indexes" in line for line in lines)


def test_a_growth_table_of_one_history_judges_only_the_ceilings():
    lines = growth.growth_table([_point(1000, sweep=0.5, stats_cli=0.4)]).splitlines()
    assert lines[0] == "| measure | 1,000 runs | ratio | target | met? |"
    sweep = next(line for line in lines if line.startswith("| one sweeper pass"))
    assert sweep.endswith("| 0.5 s | — | ratio ≤ 2 | — |")
    stats = next(line for line in lines if line.startswith("| `manage-runs stats`"))
    assert stats.endswith("| 0.4 s | — | < 1 s | met |")
    assert growth.growth_table([]) == "(no history measured)"


def test_growth_rows_compare_each_history_with_the_smallest():
    rows = growth.growth_rows([_point(0, sweep=0.01, ingest=800), _point(200, sweep=0.04, ingest=600),
                               _point(1000, sweep=0.02, ingest=300)])
    assert [(r.item, r.measure.rsplit(", ", 1)[1], r.baseline) for r in rows] == [
        ("G", "200 past runs", 0.01), ("G", "200 past runs", 800.0),
        ("G", "1,000 past runs", 0.01), ("G", "1,000 past runs", 800.0)]
    assert [r.met for r in rows] == [False, True, True, False]
    assert rows[0].baseline_what == "same, 0 past runs"
    alone = growth.growth_rows([_point(0, sweep=0.01)])
    assert [(r.figure, r.baseline, r.met) for r in alone] == [(0.01, None, None)]
    assert growth.growth_rows([]) == []


def test_prefill_progress_counts_whole_tenths_and_the_history_table_sums_what_was_written():
    assert [growth.tenths(done, 200) for done in (0, 19, 20, 50, 199, 200, 250)] == [0, 0, 1, 2, 9, 10, 10]
    assert growth.tenths(0, 0) == 0
    assert [growth.size_text(n) for n in (512, 2048, 56 << 20, 3 << 30)] == ["512 B", "2.0 KiB", "56.0 MiB", "3.0 GiB"]
    point = growth.Point(200, written={"runs": 200, "events": 21_800}, prefill_s=7.2, size_bytes=56 << 20, load=1.5)
    lines = growth.history_table([growth.Point(0), point]).splitlines()
    assert lines[2] == "| 0 | 0 | 0 s | — | — | — |"
    assert lines[3] == "| 200 | 22,000 | 7 s | 27.8 | 56.0 MiB | 1.50 |"


def test_the_sweepers_sender_records_instead_of_sending():
    sender = growth.Recorder()
    sender("run-1", 2, queue="gpu", priority=5, task_id="run-1:2")
    assert sender.sent == [("run-1", 2, "gpu")]


def test_history_runs_growth_alone_and_growth_runs_only_when_asked():
    args = parse_args(["--history", "1000", "--history", "0", "--history", "1000"])
    assert args.history == [1000, 0, 1000] and selection(args) == ["growth"]
    assert "growth" not in selection(parse_args([]))
    assert selection(parse_args(["--only", "growth"])) == ["growth"]
    assert selection(parse_args(["--only", "dispatch", "--only", "growth", "--history", "5"])) == ["dispatch", "growth"]


@pytest.mark.parametrize("argv", [["--history", "-1"], ["--history", "ten"], ["--only", "ingest", "--history", "10"]])
def test_history_refuses_a_bad_count_or_a_selection_without_growth(argv, capsys):
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert "--history" in capsys.readouterr().err
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


def _window(commands: dict[tuple[str, str], int], seconds: float = 10.0, server_cpu_s: float | None = 0.05) -> Window:
    return Window(seconds, Counter(commands), server_cpu_s, 0.1)


def _interval(interval_s: float, polls: int, waits_ms: list[int], cores: float | None = 0.5) -> Interval:
    created = datetime(2026, 3, 1, tzinfo=UTC)
    samples = [Sample(latency=0.5 + w / 1000, created=created, scheduled=created + timedelta(seconds=0.4),
                      claimed=created + timedelta(seconds=0.4, milliseconds=w),
                      started=created + timedelta(seconds=0.45, milliseconds=w), seen_after_started=0.05)
               for w in waits_ms]
    commands = {("findAndModify", "messages"): polls, ("find", "messages.routing"): 5, ("update", "pods"): 1}
    fleet = Fleet(100, 20.0, 1000.0, 19_000, None if cores is None else cores * 20)
    return Interval(interval_s, _window(commands), fleet, samples)


def test_a_window_gives_rates_by_command_and_collection_and_names_their_source():
    window = _window({("findAndModify", "messages"): 103, ("hello", ""): 4, ("getMore", "x"): 1})
    assert window.rate == pytest.approx(10.8)
    assert window.rates()[0] == (("findAndModify", "messages"), pytest.approx(10.3))
    assert window.server_ms_per_s == pytest.approx(5.0)
    text = idle_report.breakdown(window)
    assert text.startswith("`findAndModify` messages 10.3/s (broker poll")
    assert "`hello` 0.4/s (pymongo" in text and "`getMore` x 0.1/s (other)" in text
    assert _window({}, server_cpu_s=None).server_ms_per_s is None
    assert _window({}, server_cpu_s=-0.01).server_ms_per_s == 0, "background noise never makes a negative cost"


def test_the_fleet_is_read_per_second_and_per_pod():
    fleet = Fleet(pods=100, seconds=20.0, target_rate=1130.0, sent=22_000, server_cpu_s=16.0)
    assert (fleet.rate, fleet.cores, fleet.ms_per_pod) == (1100.0, 0.8, 8.0)
    assert Fleet(100, 20.0, 1.0, 1, None).cores is None and Fleet(100, 20.0, 1.0, 1, -0.5).cores == 0


def test_the_replay_schedule_sends_each_pods_commands_at_its_rates_in_time_order():
    pod = _window({("findAndModify", "messages"): 100, ("update", "pods"): 1, ("getMore", "x"): 7}, seconds=10.0)
    plan = idle.schedule(pod, pods=20, seconds=5.0, rng=random.Random(1))
    assert [at for at, _, _ in plan] == sorted(at for at, _, _ in plan)
    by_key = Counter(key for _, _, key in plan)
    assert by_key[("findAndModify", "messages")] == 20 * 50, "10/s for 5 s, each pod"
    assert 0 < by_key[("update", "pods")] <= 20, "one per 10 s: a pod sends it at most once in 5 s"
    assert ("getMore", "x") not in by_key, "a command with no probe is not replayed"
    assert {pod for _, pod, _ in plan} == set(range(20))


def test_the_trade_off_table_multiplies_one_pod_by_the_fleet_and_marks_the_default():
    intervals = [_interval(0.1, 103, [50, 60, 70]), _interval(0.5, 25, [200, 250, 300], cores=0.2)]
    lines = idle_report.tradeoff_table(intervals, default_s=0.5, pods=100).splitlines()
    assert lines[2].startswith("| 0.1 s | 10.9 (10.3) | 1,090 | 0.5 | 60 / 69 ms |")
    assert lines[3].startswith("| 0.5 s (default) | 3.10 (2.50) | 310 | 0.2 |")
    assert lines[3].endswith("| 250 / 295 ms | 650 / 695 ms | 750 / 795 ms (3) |")
    no_runs = Interval(1.0, _window({("findAndModify", "messages"): 15}, server_cpu_s=None))
    assert idle_report.tradeoff_table([no_runs], default_s=0.1).splitlines()[2] == \
        "| 1 s | 1.50 (1.50) | 150 | — | — | — | — |"


def test_the_comparisons_say_what_the_default_saves_and_what_it_costs_in_latency():
    intervals = [_interval(0.1, 103, [50, 60, 70], cores=0.9), _interval(0.5, 25, [200, 250, 300], cores=0.3)]
    [line] = idle_report.comparisons(intervals, default_s=0.5, pods=100)
    assert line.startswith("- 0.5 s against 0.1 s: 100 idle pods send 780 commands/s fewer (72%) and keep 0.6 "
                           "server cores less busy")
    assert "+190 / +226 ms (p50 / p95) for its pod's poll" in line
    assert idle_report.comparisons(intervals, default_s=0.25) == []


def test_the_proxied_url_keeps_credentials_database_and_options():
    assert idle.proxied_url("mongodb://u:p@db.example:27017/x?authSource=admin", 4100) == \
        "mongodb://u:p@127.0.0.1:4100/x?authSource=admin"
    assert idle.proxied_url("mongodb://127.0.0.1:5000/bench_idle", 4100) == "mongodb://127.0.0.1:4100/bench_idle"
    for url in ("mongodb+srv://cluster.example/x", "mongodb://a:1,b:2/x"):
        with pytest.raises(BenchError):
            idle.proxied_url(url, 4100)


def test_more_idle_pods_take_a_send_sooner():
    assert idle_report.expected_wait_s(1.0, 1) == 0.5
    assert idle_report.expected_wait_s(0.5, 9) == pytest.approx(0.05)


def test_the_idle_section_names_the_default_and_why_from_the_figures():
    intervals = [_interval(0.1, 103, [50, 60, 70], cores=0.9), _interval(0.5, 25, [200, 250, 300], cores=0.3),
                 _interval(1.0, 15, [300, 500, 900], cores=0.2)]
    dispatcher = _window({("find", "runs"): 15, ("hello", ""): 1})
    text = idle_report.notes(dispatcher, intervals, default_s=0.5, window_s=10, how="How: counted.")
    assert text.startswith("How: counted.\n\n| `BROKER_POLLING_INTERVAL_S` |")
    assert "**The default for 100 pods: `BROKER_POLLING_INTERVAL_S` = 0.5 s.**" in text
    assert "| 0.5 s (default) |" in text
    assert "Why 0.5 s: against 0.1 s it takes 780 commands/s (72%) off the server for 100 idle pods, and 0.6 of" in text
    assert "1 s would take only 100 commands/s more (13% of that again)" in text
    assert "What dominates: broker polls, 94% at 0.1 s, 81% at 0.5 s, 71% at 1 s" in text
    assert "target, p95 < 1.5 s from insert to `ai.run.started` applied, holds at 0.5 s" in text
    assert idle_report.why(intervals, default_s=0.1) == "", "nothing to justify against a shorter interval"


def test_a_measure_that_fails_at_one_history_is_reported_and_the_others_go_on():
    point = growth.Point(1000)
    with growth._unless_it_fails(point, "dispatch_p50", "dispatch_p95"):
        raise BenchError("run r1 not started after 120.0s (status SCHEDULED); worker log:\n...pages of it...")
    with growth._unless_it_fails(point, "ingest"):
        point.figures["ingest"] = 12.0
    assert point.notes["dispatch_p50"] == point.notes["dispatch_p95"] == (
        "not measured: run r1 not started after 120.0s (status SCHEDULED)")
    lines = growth.growth_table([_point(0, dispatch_p50=0.5, ingest=800), point]).splitlines()
    p50 = next(line for line in lines if line.startswith("| dispatch latency p50"))
    assert p50.endswith("| 0.5 s | — | — | ratio ≤ 2 | — |")  # no ratio, no verdict
    with pytest.raises(ValueError):
        with growth._unless_it_fails(point, "sweep"):
            raise ValueError("a bug in the bench is not a measure that failed")


def test_the_tracing_workload_gives_each_run_one_trace_context_on_every_event():
    from bench.tracing import _with_traceparents
    from orchestrator.tracing import parse

    wl = workload.build(pods=3, runs_per_pod=2, ticks=2, seed=3, prefix="tr")
    _with_traceparents(wl)
    by_run: dict[str, set[str]] = {}
    for batch in wl.batches:
        for event in batch:
            assert parse(event["traceparent"]) is not None
            by_run.setdefault(event["data"]["run_id"], set()).add(event["traceparent"])
    assert all(len(contexts) == 1 for contexts in by_run.values())
    assert len({next(iter(c)) for c in by_run.values()}) == len(by_run) > 1
