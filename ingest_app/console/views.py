"""What the console's templates show, worked out in Python: times, durations, the step timeline,
the metric charts' geometry, which artifacts a browser can show inline.

Charts are drawn by the server as SVG, so a page shows them without JavaScript and a live update
replaces them like any other part of the page.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ingest_app import downloads
from orchestrator.events import SEQ_BLOCK, STAGES
from orchestrator.numbers import mean_pm
from orchestrator.statuses import ACTIVE, TERMINAL, RunStatus
from orchestrator.utc import as_utc

#: The chart's drawing box, in SVG user units.
CHART_W, CHART_H, CHART_PAD = 320.0, 120.0, 6.0

#: A digest of the console's script and style sheet, appended to their URLs: a new release's
#: pages never run with an old cached script.
ASSET_VERSION = hashlib.sha256(b"".join(
    p.read_bytes() for p in sorted((Path(__file__).parent / "static").glob("*")) if p.is_file()
)).hexdigest()[:12]

STATUS_TONE = {
    RunStatus.QUEUED: "muted", RunStatus.SCHEDULED: "muted", RunStatus.STARTING: "info", RunStatus.RUNNING: "info",
    RunStatus.AUTO_VALIDATING: "info", RunStatus.AWAITING_HUMAN: "attention", RunStatus.HUMAN_VALIDATED: "good",
    RunStatus.HUMAN_REJECTED: "bad", RunStatus.FAILED: "bad", RunStatus.CANCELED: "muted",
}


def tone(status: Any) -> str:
    """The colour family of a status badge (CSS class `tone-...`)."""
    try:
        return STATUS_TONE[RunStatus(status)]
    except ValueError:
        return "muted"


def is_live(status: Any) -> bool:
    """Whether a run's page should keep polling: it can still change without a person."""
    try:
        return RunStatus(status) not in TERMINAL and RunStatus(status) != RunStatus.AWAITING_HUMAN
    except ValueError:
        return False


def is_active(status: Any) -> bool:
    try:
        return RunStatus(status) in ACTIVE
    except ValueError:
        return False



def when(value: Any) -> str:
    """An absolute UTC time, to the second."""
    return as_utc(value).strftime("%Y-%m-%d %H:%M:%S UTC") if isinstance(value, datetime) else "-"


def clock(value: Any) -> str:
    """The time of day, for a log whose date is in the tooltip."""
    return as_utc(value).strftime("%H:%M:%S") if isinstance(value, datetime) else "-"


def seq_label(seq: Any) -> str:
    """A seq as attempt·n: seqs run in blocks of `SEQ_BLOCK` per attempt."""
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        return str(seq)
    return f"{seq // SEQ_BLOCK}·{seq % SEQ_BLOCK}"


def iso(value: Any) -> str:
    return as_utc(value).isoformat() if isinstance(value, datetime) else ""


def ago(value: Any, now: datetime | None = None) -> str:
    """How long ago, in the largest unit that fits ("12 s ago", "3 min ago", "2 h ago", "4 d ago")."""
    if not isinstance(value, datetime):
        return "-"
    seconds = ((now or datetime.now(UTC)) - as_utc(value)).total_seconds()
    if seconds < 0:
        return "just now"
    return f"{duration(seconds)} ago"


def duration(seconds: Any) -> str:
    """A span as people read it: 42 s, 3 min 05 s, 2 h 04 min, 3 d 02 h."""
    if not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds < 0:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f} s"
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600:02d} h"


def run_duration(run: dict[str, Any], now: datetime | None = None) -> str:
    """From start to end (or to now while it runs)."""
    started = run.get("startedAt")
    if not isinstance(started, datetime):
        return "-"
    finished = run.get("finishedAt")
    if run.get("status") == RunStatus.AWAITING_HUMAN.value and isinstance(run.get("updatedAt"), datetime):
        finished = run["updatedAt"]  # its last event's write: the work ended there, the review has not
    ended = finished if isinstance(finished, datetime) else (now or datetime.now(UTC))
    return duration((as_utc(ended) - as_utc(started)).total_seconds())


def number(value: Any) -> str:
    """A metric or score: 4 significant digits, integers as they are."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "-" if value is None else str(value)
    if isinstance(value, int):
        return str(value)
    return f"{value:.4g}" if math.isfinite(value) else str(value)


def percent(progress: Any) -> int:
    if isinstance(progress, bool) or not isinstance(progress, (int, float)) or not math.isfinite(progress):
        return 0
    return max(0, min(100, round(progress * 100)))


@dataclass(frozen=True)
class Step:
    name: str
    title: str
    status: str
    progress: int
    duration: str
    summary: Any


def timeline(stages: list[dict[str, Any]], now: datetime | None = None) -> list[Step]:
    """Every step of the pipeline in order, those not reached yet as PENDING."""
    found = {stage.get("name"): stage for stage in stages}
    steps = []
    for name, title in STAGES:
        stage = found.get(name) or {}
        status = str(stage.get("status") or "PENDING")
        seconds = stage.get("durationS")
        started, completed = stage.get("startedAt"), stage.get("completedAt")
        if not isinstance(seconds, (int, float)) and isinstance(started, datetime):
            end = completed if isinstance(completed, datetime) else (now or datetime.now(UTC))
            seconds = (as_utc(end) - as_utc(started)).total_seconds()
        steps.append(Step(name, title, status, percent(stage.get("progress")), duration(seconds), stage.get("summary")))
    return steps


@dataclass(frozen=True)
class Chart:
    """One metric's line: an SVG polyline's points, with the range it spans."""

    stage: str
    metric: str
    points: str
    low: str
    high: str
    last: str
    count: int
    x_label: str


def charts(series: dict[str, dict[str, list[dict[str, Any]]]]) -> list[Chart]:
    """One chart per (stage, metric), in pipeline order: value against step where the points
    carry one, else against the order they were logged."""
    order = {name: index for index, (name, _) in enumerate(STAGES)}
    out = []
    for stage in sorted(series, key=lambda s: order.get(s, len(order))):
        for metric, points in sorted(series[stage].items()):
            kept = [p for p in points if math.isfinite(float(p["value"]))]
            if not kept:
                continue
            values = [float(p["value"]) for p in kept]
            steps: list[Any] = [p.get("step") for p in kept]
            by_step = all(isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s) for s in steps)
            xs = [float(s) for s in steps] if by_step else [float(i) for i in range(len(values))]
            out.append(Chart(stage, metric, _polyline(xs, values), number(min(values)), number(max(values)),
                             number(values[-1]), len(values), "step" if by_step else "point"))
    return out


def _polyline(xs: list[float], ys: list[float]) -> str:
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    width, height = CHART_W - 2 * CHART_PAD, CHART_H - 2 * CHART_PAD

    def scale(v: float, lo: float, hi: float) -> float:
        return 0.5 if hi == lo else (v - lo) / (hi - lo)

    return " ".join(
        f"{CHART_PAD + scale(x, x0, x1) * width:.1f},{CHART_H - CHART_PAD - scale(y, y0, y1) * height:.1f}"
        for x, y in zip(xs, ys, strict=False)
    )


@dataclass(frozen=True)
class Bar:
    """One minute of ingest on the dashboard: accepted and rejected heights, in chart units."""

    x: float
    accepted: float
    rejected: float
    label: str


#: The ingest chart's box: 60 one-minute bars.
BARS_W, BARS_H = 600.0, 80.0


def minute_bars(per_minute: list[dict[str, Any]]) -> list[Bar]:
    """Bars for the last hour's minutes, scaled to the busiest minute (accepted + rejected)."""
    top = max([int(m.get("accepted") or 0) + int(m.get("rejected") or 0) for m in per_minute] + [1])
    width = BARS_W / max(len(per_minute), 1)
    bars = []
    for index, minute in enumerate(per_minute):
        accepted, rejected = int(minute.get("accepted") or 0), int(minute.get("rejected") or 0)
        bars.append(Bar(index * width, accepted / top * BARS_H, rejected / top * BARS_H,
                        f"{clock(minute.get('minute'))[:5]}: {accepted} accepted, {rejected} rejected"))
    return bars


def artifact_view(artifact: dict[str, Any]) -> str:
    """How the run page offers an artifact: "image" inline, "pdf" one click away, else "file"."""
    kind = downloads.content_type(artifact)
    if kind in downloads.INLINE_IMAGES:
        return "image"
    return "pdf" if kind == downloads.PDF else "file"


def size(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return "-"
    if value < 1024:
        return f"{value} B"
    amount = float(value)
    for unit in ("KiB", "MiB", "GiB"):
        amount /= 1024
        if amount < 1024 or unit == "GiB":
            return f"{amount:.1f} {unit}"
    return "-"


def event_level(event: dict[str, Any]) -> str:
    """The level an event is shown at: a log's own level, failures as error, the rest info."""
    data: dict[str, Any] = event["data"] if isinstance(event.get("data"), dict) else {}
    if event.get("type") == "ai.run.log" and isinstance(data.get("level"), str):
        return str(data["level"])
    return "error" if event.get("type") in ("ai.run.failed", "ai.artifact.failed") else "info"


def event_text(event: dict[str, Any]) -> str:
    """One line saying what the event says."""
    data: dict[str, Any] = event["data"] if isinstance(event.get("data"), dict) else {}
    kind = str(event.get("type") or "")
    if kind == "ai.run.log":
        return str(data.get("message") or "")
    if kind == "ai.run.stage_metric":
        return f"{data.get('stage')}: {data.get('name')} = {number(data.get('value'))}" + (
            f" (step {data.get('step')})" if data.get("step") is not None else "")
    if kind == "ai.run.stage_progress":
        return f"{data.get('stage')}: {percent(data.get('progress'))}%"
    if kind == "ai.run.failed":
        return f"{data.get('code')}: {data.get('message')}"
    shown = {k: v for k, v in data.items() if k != "run_id" and not isinstance(v, (dict, list))}
    return ", ".join(f"{k}={v}" for k, v in shown.items())


def dict_without(params: dict[str, Any], *names: str) -> dict[str, Any]:
    """The page's query parameters but `names`: a status chip keeps the other filters."""
    return {k: v for k, v in params.items() if k not in names}


#: The template filters the console's pages use, by name.
FILTERS: dict[str, Callable[..., Any]] = {
    "dict_without": dict_without, "clock": clock, "seq_label": seq_label, "tone": tone, "when": when, "iso": iso,
    "ago": ago, "duration": duration,
    "number": number, "percent": percent, "size": size, "event_level": event_level, "event_text": event_text,
    "run_duration": run_duration, "mean_pm": lambda arm: mean_pm(arm.get("mean"), arm.get("stderr")),
}


def viewed_as(artifact: dict[str, Any], view: str) -> bool:
    """Template test: `artifacts | select("viewed_as", "image")`."""
    return artifact_view(artifact) == view


#: The template tests the console's pages use, by name.
TESTS: dict[str, Callable[..., bool]] = {"viewed_as": viewed_as}
