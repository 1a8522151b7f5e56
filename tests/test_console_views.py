"""What the console's templates show, worked out in Python: spans, numbers, the step timeline,
the charts' geometry, which artifacts show inline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ingest_app.console import views
from orchestrator.events import STAGE_NAMES, seq_for

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("seconds", "shown"), [
    (0.42, "0.4 s"), (42, "42 s"), (185, "3 min 05 s"), (7440, "2 h 04 min"), (3 * 86400 + 7200, "3 d 02 h"),
    (-1, "-"), (float("nan"), "-"), (None, "-"), ("7", "-"),
])
def test_a_span_reads_as_people_say_it(seconds: object, shown: str) -> None:
    assert views.duration(seconds) == shown


def test_times_read_as_ago_and_as_a_clock() -> None:
    assert views.ago(NOW - timedelta(minutes=3), NOW) == "3 min 00 s ago"
    assert views.ago(NOW + timedelta(seconds=5), NOW) == "just now"
    assert views.ago(None) == "-" and views.clock(NOW.replace(tzinfo=None)) == "12:00:00"


def test_a_run_waiting_for_review_has_stopped_its_clock() -> None:
    run = {"status": "AWAITING_HUMAN", "startedAt": NOW - timedelta(minutes=10), "updatedAt": NOW - timedelta(minutes=4)}
    assert views.run_duration(run, NOW) == "6 min 00 s"
    assert views.run_duration({**run, "status": "RUNNING"}, NOW) == "10 min 00 s"
    assert views.run_duration({"status": "QUEUED"}, NOW) == "-"


def test_numbers_sizes_seqs_and_progress() -> None:
    assert [views.number(v) for v in (3, 0.123456, 14.7789, None, True)] == ["3", "0.1235", "14.78", "-", "True"]
    assert [views.size(v) for v in (10, 2048, 5 * 1024**3, -1, "x")] == ["10 B", "2.0 KiB", "5.0 GiB", "-", "-"]
    assert views.seq_label(seq_for(2, 17)) == "2·17" and views.seq_label("x") == "x"
    assert [views.percent(v) for v in (0.456, 2, -1, None, float("inf"))] == [46, 100, 0, 0, 0]


def test_the_timeline_lists_every_step_in_order_unreached_ones_pending() -> None:
    steps = views.timeline([{"name": "Stage_1", "status": "RUNNING", "progress": 0.5, "startedAt": NOW - timedelta(seconds=90)}],
                           NOW)
    assert [s.name for s in steps] == list(STAGE_NAMES)
    stage_1 = steps[1]
    assert (stage_1.status, stage_1.progress, stage_1.duration) == ("RUNNING", 50, "1 min 30 s")
    assert steps[0].status == "PENDING" and steps[0].duration == "-"


def test_a_chart_plots_value_against_step_and_skips_what_cannot_be_drawn() -> None:
    series = {"Stage_2": {"loss": [{"step": 1, "value": 1.0}, {"step": 2, "value": float("nan")}, {"step": 3, "value": 0.0}]},
              "Stage_1": {"acc": [{"step": None, "value": 0.5}, {"step": None, "value": 0.7}]}}
    acc, loss = views.charts(series)
    assert (acc.stage, acc.x_label, acc.count) == ("Stage_1", "point", 2)
    assert (loss.x_label, loss.count, loss.low, loss.high, loss.last) == ("step", 2, "0", "1", "0")
    first, last = loss.points.split(" ")
    assert first == f"{views.CHART_PAD:.1f},{views.CHART_PAD:.1f}"
    assert last == f"{views.CHART_W - views.CHART_PAD:.1f},{views.CHART_H - views.CHART_PAD:.1f}"


def test_only_images_a_browser_cannot_run_script_in_show_inline() -> None:
    assert views.artifact_view({"contentType": "image/png"}) == "image"
    assert views.artifact_view({"contentType": "application/pdf"}) == "pdf"
    assert views.artifact_view({"contentType": "image/svg+xml"}) == "file"
    assert views.artifact_view({}) == "file"


def test_events_read_as_one_line_at_a_level() -> None:
    failed = {"type": "ai.run.failed", "data": {"code": "Oom", "message": "out of memory"}}
    log = {"type": "ai.run.log", "data": {"level": "warning", "message": "slow"}}
    assert (views.event_level(failed), views.event_text(failed)) == ("error", "Oom: out of memory")
    assert (views.event_level(log), views.event_text(log)) == ("warning", "slow")
    assert views.event_level({"type": "ai.run.log", "data": "junk"}) == "info"
