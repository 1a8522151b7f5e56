"""Growth with history: how the hot paths cost as finished runs accumulate.

`python -m bench --history 0 --history 1000 --history 10000` runs this benchmark once per N (and,
without `--only`, nothing else; `--only growth` without `--history` takes `DEFAULT_HISTORY`).
A deployment keeps every run it ever made: on a server that scans a collection to answer a query
(FerretDB evaluates most filters row by row, docs/ferretdb.md), what is fast on an empty database
can be slow after a year. So each N gets a fresh database holding N past runs of real shape
(`bench.history`: copies of one real `manage-runs demo` run, captured once per bench run), and
then the same figures are taken at every N:

1. dispatch latency p50/p95 (insert QUEUED -> `ai.run.started` applied), with gunicorn ingest, a
   Celery worker (`noop` pipeline) and the dispatcher process started as item 2 starts them;
2. one sweeper pass, `sweep_once` in-process (median of `SWEEPS`), with those processes stopped so
   only the pass is measured, and a sender that records instead of sending;
3. `manage-runs list` and `manage-runs stats` as a user runs them (a subprocess, wall time), next
   to the process's start-up alone (`--help`) and with a connection but no command (`FLOOR`), the
   index check every command makes on connecting
   and the core functions timed in-process (`run_list.page`, `operations.overview`), so start-up
   and query time are told apart;
4. ingest throughput, item 1's NDJSON workload (its 200 RUNNING runs added to the history) posted
   by item 1's client threads over a short window; last, so its runs and events are in no other figure.

Targets (issue): at the largest N, dispatch and the sweep at most 2x their figure at the smallest
N (0), ingest at least half of it; `list` and `stats` under 1 s.
"""

from __future__ import annotations

import os
import random
import re
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pymongo.database import Database
from pymongo.errors import PyMongoError

from bench import history, workload
from bench.dispatch import dispatch_one, start_dispatcher, start_worker
from bench.harness import BATCH_HEADERS, Harness, warm_up
from bench.ingest import THREADS
from bench.load import Load, LoadResult
from bench.procs import PYTHON, ROOT, BenchError
from bench.report import Document, Row, Target, number
from bench.stats import Summary, rate
from orchestrator.db import ensure_indexes

NAME = "growth"
#: Past runs measured when `--only growth` comes without `--history`.
DEFAULT_HISTORY = (0, 1000)
#: Sweeper passes per N; the figure is their median.
SWEEPS = 5
#: The longest the dedup prune may catch up before the timed passes (FerretDB on SQLite reads every
#: record for each hour it deletes: a year of history would take most of an hour).
CATCH_UP_S = 180.0
#: Runs of each `manage-runs` command and each core function per N; the figure is their median.
REPEATS = 3
#: Generous: at a large N a slow dispatch is a figure to report, not a reason to stop.
DISPATCH_TIMEOUT_S = 120.0
#: The issue's targets: within 2x of the empty figure (slower or fewer), under 1 s for a user's command.
NO_SLOWER = Target("<=", 2.0, on="ratio")
NO_FEWER = Target(">=", 0.5, on="ratio")
UNDER_1_S = Target("<", 1.0)


@dataclass(frozen=True)
class Measure:
    """One row of the growth table: `key` into `Point.figures`."""

    key: str
    label: str
    unit: str
    target: Target | None = None


MEASURES = (
    Measure("dispatch_p50", "dispatch latency p50 (insert QUEUED -> ai.run.started applied)", "s", NO_SLOWER),
    Measure("dispatch_p95", "dispatch latency p95", "s", NO_SLOWER),
    Measure("sweep", f"one sweeper pass (`sweep_once` in-process, median of {SWEEPS})", "s", NO_SLOWER),
    Measure("ingest", f"ingest throughput, NDJSON batches of 50 ({THREADS} client threads)", "events/s", NO_FEWER),
    Measure("list_cli", f"`manage-runs list` (subprocess, wall time, median of {REPEATS})", "s", UNDER_1_S),
    Measure("stats_cli", f"`manage-runs stats` (subprocess, wall time, median of {REPEATS})", "s", UNDER_1_S),
    Measure("startup_cli", "`manage-runs --help` (start-up alone, no database)", "s"),
    Measure("floor_cli", "start-up, one ping, exit (`python -c`: import `ops.cli`, connect, no query)", "s"),
    Measure("indexes_core", "`ensure_indexes(db)` in-process (each `manage-runs` command's first step on the database)", "s"),
    Measure("list_core", "`run_list.page(db, RunFilter(), None, 20)` in-process", "s"),
    Measure("stats_core", "`operations.overview(db)` in-process", "s"),
)


@dataclass
class Point:
    """Everything measured at one N."""

    runs: int
    figures: dict[str, float] = field(default_factory=dict)
    #: A short note per measure key (sample size, what a pass did).
    notes: dict[str, str] = field(default_factory=dict)
    written: dict[str, int] = field(default_factory=dict)
    prefill_s: float = 0.0
    size_bytes: int | None = None
    #: 1-minute load average when the measures began: the machine may be shared.
    load: float | None = None


class Recorder:
    """A `Sender` that records what the sweeper would send: the pass is measured, not the broker."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int, str]] = []

    def __call__(self, run_id: str, attempt: int, *, queue: str, priority: int, task_id: str) -> None:
        self.sent.append((run_id, attempt, queue))


def run(h: Harness, doc: Document) -> None:
    """The template once (a demo run in its own scratch database), then `measure_at` for each N of
    `h.history`, smallest first, so every ratio is against the emptiest database."""
    counts = sorted(set(h.history or DEFAULT_HISTORY))
    template_db = h.database("template")
    print(f"  [G] growth: capturing one demo run as the history's template ({template_db.name}) ...", flush=True)
    began = time.monotonic()
    template = history.capture(h.server.url(template_db.name), h.tmp / "template-demo")
    captured_s = time.monotonic() - began
    wl = workload.build(seed=1)
    points = [measure_at(h, template, n, wl) for n in counts]
    doc.rows.extend(growth_rows(points))
    doc.sections.append(("Growth with history", _section(doc, template, captured_s, points, h.quick)))


def measure_at(h: Harness, template: history.Template, runs: int, wl: workload.Workload) -> Point:
    """A fresh database with `runs` past runs, every figure taken on it, then the database dropped.
    On a failure the exception leaves the database and any process to `Harness.close`."""
    db = h.database(f"{NAME}{runs}")
    point = Point(runs)
    label = f"  [G] {runs:,} past runs"
    print(f"{label}: pre-filling {db.name} ...", flush=True)
    began = time.monotonic()
    point.written = history.prefill(db, template, runs, datetime.now(UTC), Progress(runs, label, began))
    point.prefill_s = time.monotonic() - began
    point.size_bytes = on_disk(db)
    point.load = os.getloadavg()[0]

    count = 8 if h.quick else 20
    print(f"{label}: dispatch latency, {count} runs ...", flush=True)
    with _unless_it_fails(point, "dispatch_p50", "dispatch_p95"):
        latency = _dispatch(h, db, count)
        point.figures.update(dispatch_p50=latency.p50, dispatch_p95=latency.p95)
        point.notes["dispatch_p50"] = point.notes["dispatch_p95"] = f"n={latency.n}, max {number(latency.max)} s"

    print(f"{label}: {SWEEPS} sweeper passes, manage-runs list and stats ...", flush=True)
    point.figures["sweep"], point.notes["sweep"] = _sweep(h, db)
    with _unless_it_fails(point, "list_cli", "stats_cli"):
        point.figures.update(_commands(h, db))
    point.figures.update(indexes_core=median_time(lambda: ensure_indexes(db)), list_core=median_time(lambda: _page(db)),
                         stats_core=median_time(lambda: _overview(db)))

    window = 8.0 if h.quick else 20.0
    print(f"{label}: ingest throughput for {window:.0f} s ...", flush=True)
    with _unless_it_fails(point, "ingest"):
        result = _ingest(h, db, wl, window)
        point.figures["ingest"] = rate(result.accepted, result.seconds)
        point.notes["ingest"] = f"{result.accepted:,} events in {result.seconds:.0f} s" + (
            f"; {result.failed_requests} failed requests, {result.invalid} invalid events" if result.failed_requests
            or result.invalid else "")
    db.client.drop_database(db.name)  # 10,000 runs are gigabytes: do not keep them until the end
    return point


@contextmanager
def _unless_it_fails(point: Point, *keys: str) -> Iterator[None]:
    """A measure that cannot be taken at this N (FerretDB on SQLite with a history: a run not
    started in time) is reported as such, in place of its figures, and the others go on."""
    try:
        yield
    except BenchError as exc:
        reason = re.sub(r"[;,]?\s*[\w ]+:$", "", str(exc).splitlines()[0])  # a label of the lines cut off
        print(f"  [G] {point.runs:,} past runs: not measured: {reason}", flush=True)
        for key in keys:
            point.notes[key] = f"not measured: {reason}"


class Progress:
    """Prints a line each time the prefill passes another tenth of its runs."""

    def __init__(self, total: int, label: str, began: float):
        self.total, self.label, self.began, self.shown = total, label, began, 0

    def __call__(self, done: int) -> None:
        reached = tenths(done, self.total)
        if reached > self.shown:
            self.shown = reached
            print(f"{self.label}: {done:,} of {self.total:,} written ({done * 100 // self.total}%), "
                  f"{time.monotonic() - self.began:.0f} s", flush=True)


def tenths(done: int, total: int) -> int:
    """How many whole tenths of `total` `done` has reached (0..10); 0 for no total."""
    return min(10, done * 10 // total) if total > 0 else 0


def on_disk(db: Database) -> int | None:
    """The database's size on disk, data and indexes (`dbStats` totalSize); None where the server
    does not say."""
    try:
        found = db.command("dbStats")
    except PyMongoError:
        return None
    total = found.get("totalSize")
    if total is None and "dataSize" in found:
        total = found.get("storageSize", found["dataSize"]) + found.get("indexSize", 0)
    return int(total) if total is not None else None


def _dispatch(h: Harness, db: Database, count: int) -> Summary:
    """Item 2's measurement on this database: the processes up, one run to warm the worker, then
    `count` runs inserted one at a time at random points of the dispatcher's sweep."""
    ingest = h.start_ingest(db.name)
    worker = dispatcher = None
    try:
        warm_up(ingest)
        env = h.env(db.name, INGEST_URL=ingest.url, POD_ID="growth-pod-1")
        worker = start_worker(h, env, env.get("POD_ID", "bench-pod-1"))
        dispatcher = start_dispatcher(h, env)
        dispatch_one(db, worker, dispatcher, timeout=DISPATCH_TIMEOUT_S)  # the worker's first child
        rng = random.Random(2)
        latencies = []
        for _ in range(count):
            time.sleep(rng.uniform(0.3, 1.3))
            latencies.append(dispatch_one(db, worker, dispatcher, timeout=DISPATCH_TIMEOUT_S).latency)
        return Summary.of(latencies)
    finally:
        for child in (dispatcher, worker, ingest.child):
            if child is not None:
                h.stop(child)


def _sweep(h: Harness, db: Database) -> tuple[float, str]:
    """`sweep_once` `SWEEPS` times in this process; (median seconds, what the passes did)."""
    from orchestrator.settings import Settings
    from orchestrator.sweeper import sweep_once

    settings = Settings.from_env(h.env(db.name))
    caught_up = _catch_up_retention(db)
    sender = Recorder()
    found: dict[str, int] = {}
    took = []
    for _ in range(SWEEPS):
        began = time.perf_counter()
        done = sweep_once(db, settings, sender)
        took.append(time.perf_counter() - began)
        for key, n in done.items():
            found[key] = found.get(key, 0) + n
    did = ", ".join(f"{key} {n}" for key, n in found.items() if n) or "nothing to do"
    return statistics.median(took), f"{did}; {len(sender.sent)} sends recorded; {caught_up}"


def _catch_up_retention(db: Database) -> str:
    """Walk the dedup prune up to today before the timed passes, as a sweeper running through the
    history's year would have; the pre-filled records are a year old, so the first passes on them
    are a one-off catch-up (each bounded by `seen_retention.BUDGET_S`), not the steady pass."""
    from datetime import UTC, datetime

    from orchestrator import seen_retention

    began, passes, deleted = time.perf_counter(), 0, 0
    while seen_retention.pending_hours(db, datetime.now(UTC)):
        if time.perf_counter() - began > CATCH_UP_S:
            left = seen_retention.pending_hours(db, datetime.now(UTC))
            return (f"before them, the dedup prune walked for {CATCH_UP_S:.0f} s ({passes} passes, {deleted} records) "
                    f"and stopped with {left:,} hours to go, so each pass below includes its share (at most "
                    f"{seen_retention.BUDGET_S:g} s)")
        deleted += seen_retention.prune(db, datetime.now(UTC))
        passes += 1
    return (f"before them, the dedup prune caught up in {passes} passes, {deleted} records, "
            f"{time.perf_counter() - began:.1f} s")


#: What every `manage-runs` command on the database pays besides its work: the imports, a
#: connection, and an exit as the console script makes it (`cli_core.exit_at_once`: no wait for
#: pymongo's monitor threads).
FLOOR = ("import os, ops.cli, pymongo; pymongo.MongoClient(os.environ['MONGODB_URL']).admin.command('ping'); "
         "os._exit(0)")


def _commands(h: Harness, db: Database) -> dict[str, float]:
    """`manage-runs list`, `stats` and `--help` as a user runs them: `python -m ops.cli` (what the
    console script runs, as tests/test_cli_realserver.py does), output captured, wall time; and
    `FLOOR`, the same process without a command."""
    env = h.env(db.name)

    def command(*args: str) -> Callable[[], None]:
        what = " ".join(args) if args[0] != "-c" else "(the start-up floor)"

        def once() -> None:
            argv = [PYTHON, *args] if args[0] == "-c" else [PYTHON, "-m", "ops.cli", *args]
            try:
                done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
            except subprocess.TimeoutExpired:
                raise BenchError(f"manage-runs {what} did not end within 600 s") from None
            if done.returncode != 0:
                raise BenchError(f"manage-runs {what} exited {done.returncode}:\n{done.stderr[-2000:]}")
        return once

    return {"list_cli": median_time(command("list")), "stats_cli": median_time(command("stats")),
            "startup_cli": median_time(command("--help")), "floor_cli": median_time(command("-c", FLOOR))}


def _page(db: Database) -> None:
    from orchestrator.run_list import RunFilter, page

    page(db, RunFilter(), None, 20)


def _overview(db: Database) -> None:
    from orchestrator.operations import overview

    overview(db)


def median_time(call: Callable[[], object], repeats: int = REPEATS) -> float:
    """The median wall time of `repeats` calls, in seconds."""
    took = []
    for _ in range(repeats):
        began = time.perf_counter()
        call()
        took.append(time.perf_counter() - began)
    return statistics.median(took)


def _ingest(h: Harness, db: Database, wl: workload.Workload, window: float) -> LoadResult:
    """Item 1's batches for `window` seconds, its runs added to the history first."""
    workload.create_runs(db, wl)
    ingest = h.start_ingest(db.name)
    try:
        warm_up(ingest)
        return Load(ingest.batch_url, wl.ndjson_bodies(), BATCH_HEADERS, threads=THREADS, batch=True,
                    deadline_s=window, events_per_body=[len(b) for b in wl.batches]).run()
    finally:
        h.stop(ingest.child)


def growth_rows(points: Sequence[Point]) -> list[Row]:
    """Rows of the main results table (item G): each measure at each N, against the same measure at
    the smallest N; with a single N, its figures alone."""
    if not points:
        return []
    base = points[0]
    shown = points[1:] or points[:1]
    rows = []
    for point in shown:
        for m in MEASURES:
            baseline = base.figures.get(m.key) if point is not base else None
            if m.key not in point.figures:
                continue
            rows.append(Row("G", f"{m.label}, {point.runs:,} past runs", point.figures[m.key], m.unit, baseline,
                            f"same, {base.runs:,} past runs" if baseline is not None else "", m.target,
                            note=point.notes.get(m.key, "")))
    return rows


def growth_table(points: Sequence[Point]) -> str:
    """The Markdown table of the section: a row per measure, a column per N, then the largest N's
    figure over the smallest's and the target, judged at the largest N."""
    if not points:
        return "(no history measured)"
    first, last = points[0], points[-1]
    ratio_head = f"{last.runs:,} / {first.runs:,}" if len(points) > 1 else "ratio"
    lines = ["| measure | " + " | ".join(f"{p.runs:,} runs" for p in points) + f" | {ratio_head} | target | met? |",
             "|---|" + "---|" * len(points) + "---|---|---|"]
    for m in MEASURES:
        cells = [f"{number(p.figures[m.key])} {m.unit}" if m.key in p.figures else "—" for p in points]
        judged = Row("G", m.label, last.figures.get(m.key, float("nan")), m.unit,
                     first.figures.get(m.key) if len(points) > 1 else None, "", m.target)
        ratio = "—" if judged.ratio is None or m.key not in last.figures else f"{number(judged.ratio)}×"
        target = "—" if m.target is None else m.target.text(m.unit)
        met = {True: "met", False: "**missed**", None: "—"}[judged.met if m.key in last.figures else None]
        lines.append(f"| {m.label} | " + " | ".join(cells) + f" | {ratio} | {target} | {met} |")
    return "\n".join(lines)


def history_table(points: Sequence[Point]) -> str:
    """What each database held: documents written, the prefill's time, the size on disk."""
    lines = ["| past runs | documents written | prefill | runs/s | on disk | load (1 min) when measured |",
             "|---|---|---|---|---|---|"]
    for p in points:
        docs = sum(p.written.values())
        size = "—" if p.size_bytes is None else size_text(p.size_bytes)
        speed = number(rate(p.runs, p.prefill_s)) if p.runs else "—"
        load = "—" if p.load is None else f"{p.load:.2f}"
        lines.append(f"| {p.runs:,} | {docs:,} | {p.prefill_s:.0f} s | {speed} | {size} | {load} |")
    return "\n".join(lines)


def size_text(n: int) -> str:
    """Bytes in the largest binary unit that keeps a whole number in front."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _section(doc: Document, template: history.Template, captured_s: float, points: Sequence[Point], quick: bool) -> str:
    largest = max(points, key=lambda p: p.runs)
    per_run = ", ".join(f"{name} {len(template.get(name, []))}" for name in history.PER_RUN)
    endings = ", ".join(f"{status} {weight}" for status, weight in history.ENDINGS)
    lines = [
        f"Server: {doc.machine.server}. Each N below is a fresh database holding N past runs, then the same "
        f"figures taken on it (`python -m bench --history N`, repeatable; this run: "
        f"{', '.join(f'{p.runs:,}' for p in points)}{', --quick' if quick else ''}).",
        "",
        growth_table(points),
        "",
        "Targets (issue): at the largest N, dispatch and the sweep within 2× their figure with no history "
        "(ratio ≤ 2), ingest at least half of it (ratio ≥ 0.5); `manage-runs list` and `stats` under 1 s. The ratio "
        "is the largest N's figure over the smallest's.",
        "",
        "### What the history holds",
        "",
        f"- Each past run is a copy of one real `manage-runs demo` run made against a scratch database on the same "
        f"server (captured in {captured_s:.0f} s): {history.per_run(template)} documents per run ({per_run}), "
        f"with fresh ids, its dates moved back to a point of the past {history.SPAN.days} days and its status one "
        f"of the ends a run reaches ({endings}, in these proportions). Written with `insert_many`, "
        f"{history.CHUNK} runs a round, into a database that has every index first.",
        "",
        history_table(points),
        "",
        f"- The largest history, {largest.runs:,} runs, per collection: "
        + (", ".join(f"{name} {n:,}" for name, n in largest.written.items()) or "nothing") + ". On disk is "
        "`dbStats`' totalSize (data and indexes) after the prefill, before anything was measured. The machine "
        "may be shared: the load column is its 1-minute load average as each N's measures began.",
        "",
        "### How each figure is taken",
        "",
        f"- Dispatch: gunicorn ingest, one Celery worker (`noop` pipeline) and the dispatcher process (which also "
        f"runs the sweeper, in a thread of its own), as in item 2; one run to warm the worker, then "
        f"{'8' if quick else '20'} runs inserted one at a time after a random 0.3-1.3 s pause. "
        + _notes_of(points, "dispatch_p50"),
        f"- Sweep: with every process stopped, `orchestrator.sweeper.sweep_once` in the bench process {SWEEPS} times "
        "on the same database, settings from the environment our processes get, a sender that records instead of "
        "sending; the median pass. The pre-filled dedup records are as old as their runs, so first the prune "
        "catches up to today (passes of at most `seen_retention.BUDGET_S` each, untimed): the steady pass is "
        "what is measured, the catch-up is reported. " + _notes_of(points, "sweep"),
        "- `manage-runs list` and `stats`: `python -m ops.cli list` / `stats` as subprocesses (what the console "
        "script runs), output captured, wall time including the interpreter's start-up and imports, which "
        "`--help` measures alone. A command on the database also connects, checks every index "
        "(`ensure_indexes`, timed in-process) and ends at once after its output (`cli_core.exit_at_once`: "
        "the interpreter's shutdown would wait up to 0.5 s for pymongo's monitor threads): the start-up floor row "
        "is a process that imports `ops.cli`, pings the database and exits that way, so a command's own work is "
        "about its figure less that floor. The other in-process rows time the core functions on an open "
        "connection: `run_list.page` is the list of `manage-runs list`, the web console and `GET /api/runs`, "
        "`operations.overview` is `stats`' and the console's `/ops` page's.",
        f"- Ingest: item 1's workload (its 200 RUNNING runs added to the history), batches of 50 posted by {THREADS} "
        f"client threads to gunicorn for {'8' if quick else '20'} s; taken last, so its runs and events are in no "
        "other figure. " + _notes_of(points, "ingest"),
    ]
    return "\n".join(lines)


def _notes_of(points: Sequence[Point], key: str) -> str:
    found = [f"{p.runs:,} runs: {p.notes[key]}" for p in points if p.notes.get(key)]
    return ("By N: " + "; ".join(found) + ".") if found else ""

