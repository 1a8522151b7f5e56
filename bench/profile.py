"""Where ingest's time goes when item 1 misses its target: cProfile of the ingest path
in-process (Flask test client, same code, same server), summarised; the writes the mappers
make per event; and what the server charges for the operations the profile points at.
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pymongo
from pymongo import monitoring

from bench import workload
from bench.harness import BATCH_HEADERS, TOKEN, Harness
from bench.procs import ROOT
from bench.stats import percentile
from ingest_app import create_app
from orchestrator import mappers
from orchestrator.events import validate_event
from orchestrator.settings import Settings

#: ingest's steps in request order: (label, file, function).
_PHASES = (
    ("read and parse the NDJSON body", "ingest_app/parsing.py", "parse_batch"),
    ("validate (marshmallow schemas)", "orchestrator/ingest.py", "_validate"),
    ("dedup lookup on events_seen", "orchestrator/ingest.py", "_drop_duplicates"),
    ("load the batch's runs", "orchestrator/ingest.py", "_load_runs"),
    ("plan the writes (mappers)", "orchestrator/ingest.py", "_plan"),
    ("insert_many of new documents", "orchestrator/ingest.py", "_insert_missing"),
    ("bulk_write of guarded updates", "orchestrator/ingest.py", "_update_all"),
    ("insert the dedup records", "orchestrator/ingest.py", "_mark_seen"),
)
_SOCKET_WAITS = ("recv_into", "recv", "sendall", "send")
#: Runs (and so run documents) the profiled workload names.
_RUNS = 200


def ingest_profile(h: Harness, *, seconds: float, batch_rate: float, raw_rate: float) -> str:
    """Markdown: the profile's phases and top functions, the writes per event, the server probe,
    and what limits the figure and what would lift it."""
    wl = workload.build(seed=3, prefix="prof")
    db = h.database("profile")
    workload.create_runs(db, wl)
    settings = Settings.from_env({"MONGODB_URL": h.server.url(db.name), "INGEST_TOKEN": TOKEN, "POD_ID": "bench-profile"})
    sent = UpdateCounter()
    with pymongo.MongoClient(settings.mongodb_url, tz_aware=True, event_listeners=[sent]) as watched:
        return _profile_batches(h, wl, watched[db.name], settings, sent, seconds, batch_rate, raw_rate)


def _profile_batches(h: Harness, wl: workload.Workload, db: Any, settings: Settings, sent: UpdateCounter,
                     seconds: float, batch_rate: float, raw_rate: float) -> str:
    client = create_app(settings, db=db).test_client()
    client.post("/api/ingest/events", data=b'{"warm":"up"}\n', headers=BATCH_HEADERS)
    sent.reset()

    profiler = cProfile.Profile()
    posted: list[list[dict[str, Any]]] = []
    wall = 0.0
    began = time.perf_counter()
    for body, batch in zip(wl.ndjson_bodies(), wl.batches, strict=True):
        if time.perf_counter() - began > seconds:
            break
        started = time.perf_counter()
        profiler.enable()
        response = client.post("/api/ingest/events", data=body, headers=BATCH_HEADERS)
        profiler.disable()
        wall += time.perf_counter() - started
        if response.status_code != 200 or response.get_json()["accepted"] != len(batch):
            raise RuntimeError(f"profiled batch not accepted: {response.status_code} {response.get_data(as_text=True)[:300]}")
        posted.append(batch)
    stats = pstats.Stats(profiler)
    events = sum(len(b) for b in posted)
    writes = write_counts(posted)
    writes.sent = sent.updates
    writes.commands = sent.commands
    probe = server_probe(db)
    return "\n".join([
        "### Profile of the ingest path (cProfile, in-process, same server)",
        "",
        f"{len(posted)} batches ({events:,} events of the same workload, fresh database) through the Flask test "
        f"client: {wall:.1f} s under the profiler, {events / wall:.0f} events/s.",
        "",
        _phase_table(stats, wall),
        "",
        f"Waiting for the server (socket reads and writes): {_socket_wait(stats) / wall:.0%} of the profiled time.",
        "",
        "Top functions by own time:",
        "",
        _top_table(stats, 12),
        "",
        "### Writes per event (the batches above)",
        "",
        writes.markdown(),
        "",
        "### What the server charges (probe on a scratch collection, same server)",
        "",
        probe.markdown(),
        "",
        "### What limits it and what would lift it",
        "",
        _verdict(batch_rate, raw_rate, writes, probe, stats, wall, h.ferretdb and h.server.backend),
    ])


def _entries(stats: pstats.Stats) -> dict[tuple[str, int, str], tuple[int, int, float, float, Any]]:
    return stats.stats  # type: ignore[attr-defined]  # pstats keeps its table there, documented in its source


def phase_seconds(stats: pstats.Stats) -> dict[str, float]:
    """Cumulative seconds of each of ingest's steps."""
    out = {}
    for label, path, function in _PHASES:
        out[label] = sum(ct for (file, _, name), (_, _, _, ct, _) in _entries(stats).items()
                         if name == function and file.replace("\\", "/").endswith(path))
    return out


def _phase_table(stats: pstats.Stats, wall: float) -> str:
    lines = ["| step | seconds | share of request time |", "|---|---|---|"]
    for label, seconds in phase_seconds(stats).items():
        lines.append(f"| {label} | {seconds:.2f} | {seconds / wall:.0%} |")
    return "\n".join(lines)


def _socket_wait(stats: pstats.Stats) -> float:
    return sum(tt for (file, _, name), (_, _, tt, _, _) in _entries(stats).items()
               if file == "~" and "_socket.socket" in name and any(f"'{m}'" in name for m in _SOCKET_WAITS))


def _short(file: str) -> str:
    if file == "~":
        return "(built-in)"
    path = file.replace("\\", "/")
    for marker in ("site-packages/", "lib/python3"):
        if marker in path:
            return path.split(marker, 1)[1]
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return path


def _top_table(stats: pstats.Stats, count: int) -> str:
    rows = sorted(_entries(stats).items(), key=lambda item: -item[1][2])[:count]
    lines = ["| function | calls | own s | cumulative s |", "|---|---|---|---|"]
    for (file, line, name), (_, calls, tt, ct, _) in rows:
        where = f"{_short(file)}:{line}" if file != "~" else "(built-in)"
        shown = name.strip("<>").replace("`", "'")
        lines.append(f"| `{shown}` {where} | {calls:,} | {tt:.2f} | {ct:.2f} |")
    return "\n".join(lines)


class UpdateCounter(monitoring.CommandListener):
    """Counts the `update` commands a client sends, and the updates they carry."""

    def __init__(self) -> None:
        self.commands = 0
        self.updates = 0

    def reset(self) -> None:
        self.commands = self.updates = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "update":
            self.commands += 1
            self.updates += len(event.command.get("updates", ()))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


class WriteCounts:
    """Creates and guarded updates the mappers make for some batches, how many would remain if
    each batch kept only the highest-seq update per (document, facet), and (when measured) how
    many ingest sent."""

    def __init__(self) -> None:
        self.events = 0
        self.creates: Counter[str] = Counter()
        self.updates: Counter[str] = Counter()
        self.coalesced = 0
        self.sent: int | None = None
        self.commands: int | None = None

    @property
    def sent_per_event(self) -> float | None:
        return None if self.sent is None or not self.events else self.sent / self.events

    @property
    def coalesces(self) -> bool:
        """Does ingest already send about one update per (document, facet) per batch?"""
        sent = self.sent_per_event
        return sent is not None and sent <= self.coalesced_per_event * 1.1 + 0.01

    @property
    def updates_per_event(self) -> float:
        return sum(self.updates.values()) / self.events if self.events else 0.0

    @property
    def coalesced_per_event(self) -> float:
        return self.coalesced / self.events if self.events else 0.0

    def markdown(self) -> str:
        per = lambda counter: ", ".join(f"{name} {n / self.events:.2f}" for name, n in counter.most_common())  # noqa: E731
        text = (f"- {self.events:,} events; the mappers make, per event, {sum(self.creates.values()) / self.events:.2f} "
                f"inserts ({per(self.creates)}) and {self.updates_per_event:.2f} guarded updates ({per(self.updates)}), "
                f"the run's `lastEventSeq` touch included.\n- Kept to the highest seq per (document, facet) within each "
                f"batch, the same batches need {self.coalesced_per_event:.2f} updates per event: the lower-seq ones are "
                f"no-ops once the highest is applied (every facet is guarded by its seq).")
        if self.sent_per_event is not None:
            text += (f"\n- Sent by ingest (counted on the wire, pymongo command monitoring): **{self.sent_per_event:.2f} "
                     f"updates per event** in {self.commands:,} `update` commands.")
        return text


def _facet(update: mappers.Update) -> tuple[Any, ...]:
    shape = tuple(sorted((op, tuple(sorted(fields))) for op, fields in update.update.items()))
    status = update.update.get("$set", {}).get("status")
    return update.collection, str(update.filter.get("_id", update.filter)), shape, status


def write_counts(batches: list[list[dict[str, Any]]]) -> WriteCounts:
    """Count what `ingest._plan` would write, from the public mappers."""
    counts = WriteCounts()
    received = datetime.now(UTC)
    for batch in batches:
        facets: set[tuple[Any, ...]] = set()
        runs_seen: dict[str, int] = {}
        for raw in batch:
            event = validate_event(dict(raw, data=dict(raw["data"])))
            run_id = event["data"]["run_id"]
            run = {"_id": run_id, "maxAttempts": 3, "hypothesisId": "h"}
            for write in mappers.writes_for(event, run, received_at=received, bucket="b", default_max_attempts=3):
                if isinstance(write, mappers.Create):
                    counts.creates[write.collection] += 1
                else:
                    counts.updates[write.collection] += 1
                    facets.add(_facet(write))
            runs_seen[run_id] = max(runs_seen.get(run_id, 0), event["seq"])
            counts.events += 1
        counts.updates["runs"] += len(runs_seen)  # touch_run, once per run per batch
        counts.coalesced += len(facets) + len(runs_seen)
    return counts


class Probe:
    """Milliseconds per operation (median of the repeats) at two collection sizes."""

    def __init__(self, sizes: tuple[int, int]):
        self.sizes = sizes
        self.ms: dict[str, tuple[float, float]] = {}

    def markdown(self) -> str:
        small, large = self.sizes
        lines = [f"| operation | {small:,} documents | {large:,} documents |", "|---|---|---|"]
        for name, (a, b) in self.ms.items():
            lines.append(f"| {name} | {a:.2f} ms | {b:.2f} ms |")
        return "\n".join(lines)

    def growth(self, name: str) -> float:
        a, b = self.ms[name]
        return b / a if a else 0.0


def server_probe(db: Any, sizes: tuple[int, int] = (200, 2000), repeat: int = 25) -> Probe:
    """Time by-id and guarded operations on a scratch collection of run-sized documents."""
    probe = Probe(sizes)
    results: dict[str, list[float]] = {}
    for size in sizes:
        coll = db[f"probe_{size}"]
        coll.drop()
        pad = "x" * 1500  # about a run document's size
        coll.insert_many([{"_id": f"doc-{i:05d}", "seq": 0, "pad": pad} for i in range(size)])
        coll.create_index([("source", 1), ("eventId", 1)])
        for name, operation in _probe_operations(coll, size).items():
            operation(-1)
            took = []
            for i in range(repeat):
                started = time.perf_counter()
                operation(i)
                took.append((time.perf_counter() - started) * 1000)
            results.setdefault(name, []).append(percentile(took, 50))
        coll.drop()
    probe.ms = {name: (values[0], values[1]) for name, values in results.items()}
    return probe


def _why_updates_cost(probe: Probe, guarded: str, backend: str) -> str:
    """The probe's reading for FerretDB's backend: PostgreSQL serves equality from the GIN indexes
    of `index_plan`, SQLite pushes down only a bare `_id`."""
    fails, dedup = "guarded update, guard fails (a no-op)", "dedup-style find: 50 (source, eventId) pairs"
    sizes = f"{probe.sizes[0]:,} documents and {probe.ms[guarded][1]:.1f} ms with {probe.sizes[1]:,}"
    scans = (f"A `$in`/`$or` lookup like ingest's dedup query is not pushed down and scans "
             f"({probe.ms[dedup][1]:.1f} ms at {probe.sizes[1]:,} records, {probe.growth(dedup):.0f}× the small "
             "collection's), which is why ingest skips it on FerretDB.")
    if backend == "postgresql":
        return (f"- **Why an update costs what it does here.** FerretDB v1.24's PostgreSQL backend pushes an equality "
                "down as jsonb containment (`@>`), which the GIN indexes of `orchestrator/index_plan.py` serve, and "
                "checks the rest of a filter (the seq guard) in Go on the rows found: the probe measured a guarded "
                f"update at {probe.ms[guarded][0]:.1f} ms with {sizes} ({probe.growth(guarded):.2f}×); one whose guard "
                f"fails costs {probe.ms[fails][1]:.1f} ms. {scans} How ingest holds as the history grows is measured "
                "by `python -m bench --history N` (\"Growth with history\").")
    return (f"- **Why an update is slow here.** FerretDB v1.24's SQLite backend pushes a filter down to SQLite only "
            "when it is exactly `{_id: <string or ObjectId>}` (`internal/backends/sqlite/collection.go`, `Query`); "
            "any other filter is evaluated in Go row by row, and `update_one` stops at the first match. Every ingest "
            "update carries a guard (seq, attempt, status) besides `_id`, so its cost grows with the collection: the "
            f"probe above measured a guarded update at {probe.ms[guarded][0]:.1f} ms with {sizes}; one whose guard "
            f"fails (a stale or repeated event, by design a no-op) scans the whole collection "
            f"({probe.ms[fails][1]:.1f} ms). {scans} On this server ingest slows down as `runs` and `stages` grow: "
            f"the figure above is for {_RUNS} runs.")


def _probe_operations(coll: Any, size: int) -> dict[str, Callable[[int], Any]]:
    """The probe's operations on a collection of `size` documents, by name; each takes the
    repetition's number, so a guarded update applies every time."""
    target = f"doc-{size // 2:05d}"  # half-way down the table
    return {
        "find_one by `_id`": lambda i: coll.find_one({"_id": target}),
        "update by `_id` alone": lambda i: coll.update_one({"_id": target}, {"$set": {"v": i}}),
        "guarded update (`_id` + seq guard), applies": lambda i: coll.update_one(
            {"_id": target, "$or": [{"seq": {"$lt": 10_000 + size + i}}, {"seq": {"$exists": False}}]},
            {"$set": {"seq": 10_000 + size + i}}),
        "guarded update, guard fails (a no-op)": lambda i: coll.update_one(
            {"_id": target, "seq": {"$lt": 0}}, {"$set": {"seq": 1}}),
        "dedup-style find: 50 (source, eventId) pairs": lambda i: list(coll.find(
            {"$or": [{"source": "worker://p", "eventId": {"$in": [f"e{i}-{k}" for k in range(50)]}}]})),
    }


def _verdict(batch_rate: float, raw_rate: float, writes: WriteCounts, probe: Probe, stats: pstats.Stats, wall: float,
             ferretdb: str | bool) -> str:
    """What limits ingest here; `ferretdb` is FerretDB's backend ("postgresql", "sqlite"), or false."""
    phases = phase_seconds(stats)
    updates = phases["bulk_write of guarded updates"] / wall
    dedup = phases["dedup lookup on events_seen"] / wall
    python_side = (phases["validate (marshmallow schemas)"] + phases["plan the writes (mappers)"]
                   + phases["read and parse the NDJSON body"]) / wall
    guarded = "guarded update (`_id` + seq guard), applies"
    if not ferretdb:
        return "\n".join([
            f"- Ingest reaches {batch_rate:,.0f} events/s against {raw_rate:,.0f} for raw inserts, with "
            f"{writes.updates_per_event:.1f} guarded updates per event; the profile puts {updates:.0%} of the request "
            f"time in `_update_all`, {dedup:.0%} in the dedup lookup and {python_side:.0%} in validation, mapping and "
            "parsing. The probe table shows what each operation costs on this server.",
            f"- What would lift it: fewer updates per event (sent: {writes.sent_per_event or 0:.2f}; the mappers make "
            f"{writes.updates_per_event:.2f}, {writes.coalesced_per_event:.2f} after keeping the highest seq per "
            "document and facet).",
        ])
    return "\n".join([
        f"- **The server's per-update cost.** Ingest reaches {batch_rate:,.0f} events/s against {raw_rate:,.0f} for raw "
        f"inserts: the raw path is one `insert_many` per 50 documents, while ingest applies "
        f"{writes.sent_per_event or writes.updates_per_event:.2f} guarded updates per event on top of its inserts, "
        f"and the profile puts {updates:.0%} of the request time in `_update_all` (the `bulk_write` of those updates) "
        f"and {dedup:.0%} in the dedup lookup" + (" (skipped on FerretDB: `ingest.fast_path_pays`)" if dedup < 0.02 else "")
        + f"; validation, mapping and parsing together are {python_side:.0%}.",
        _why_updates_cost(probe, guarded, str(ferretdb)),
        "- **What would lift it.** (1) MongoDB: the same filters are served by the `_id` and `source_eventId` indexes, "
        "so an update costs the same whatever the collection size (run the bench with `MONGODB_TEST_URL` to measure it; "
        "no MongoDB server is installable here). (2) Fewer updates per event, on any server: " + (
            f"ingest already sends only the highest-seq update of each (document, facet) per batch "
            f"({writes.sent_per_event:.2f} per event instead of the mappers' {writes.updates_per_event:.2f}), so what "
            "is left is the cost of each update"
            if writes.coalesces else
            f"keep, per batch, only the highest-seq update of each (document, facet), which would take these batches "
            f"from {writes.updates_per_event:.2f} to {writes.coalesced_per_event:.2f} updates per event with the same "
            "documents (a change to `ingest._plan`, not made here)") + ".",
    ])


#: The emitter's parts worth naming: (label, file, function), by thread.
_EMIT_PARTS = (
    ("`make_event` (ULID, timestamp, dict)", "orchestrator/events.py", "make_event"),
    ("JSON encoding (`_Encoder.encode`)", "json/encoder.py", "encode"),
    ("`Spool.append` (one `os.write`)", "tasks/pod/spool.py", "append"),
)
_SENDER_PARTS = (
    ("`requests` `Session.request` (one POST per batch)", "requests/sessions.py", "request"),
    ("of which `merge_environment_settings` (proxy settings read from `os.environ`, every POST)",
     "requests/sessions.py", "merge_environment_settings"),
    ("`Spool.read` (re-read the batch's lines)", "tasks/pod/spool.py", "read"),
    ("of which `_decode` (`json.loads` of every line)", "tasks/pod/spool.py", "_decode"),
    ("`_settle` (answer checked, `.ack` file rewritten)", "tasks/pod/emitter.py", "_settle"),
)


def _cumulative(stats: pstats.Stats, path: str, function: str) -> float:
    return sum(ct for (file, _, name), (_, _, _, ct, _) in _entries(stats).items()
               if name == function and file.replace("\\", "/").endswith(path))


def _parts_table(stats: pstats.Stats, parts: tuple[tuple[str, str, str], ...], total: float) -> str:
    lines = ["| part | CPU s (under the profiler) | share of the thread's CPU |", "|---|---|---|"]
    for label, path, function in parts:
        seconds = _cumulative(stats, path, function)
        lines.append(f"| {label} | {seconds:.2f} | {seconds / total:.0%} |")
    return "\n".join(lines)


class EmitterProfile:
    """The CPU profile of the emitting thread and of the sender thread, summarised."""

    def __init__(self, events: int, emit_side: pstats.Stats, sender: pstats.Stats | None):
        self.events = events
        self.emit_side = emit_side
        self.sender = sender

    @staticmethod
    def total(stats: pstats.Stats) -> float:
        return sum(tt for (_, _, tt, _, _) in _entries(stats).values())

    def share(self, function: str, path: str) -> float:
        if self.sender is None:
            return 0.0
        return _cumulative(self.sender, path, function) / (self.total(self.sender) or 1)

    def markdown(self) -> str:
        out = [f"cProfile of both threads over {self.events:,} events, timed by each thread's CPU clock "
               "(`time.thread_time`); the profiler inflates every figure, so compare the shares:", ""]
        threads = (("emitting thread", self.emit_side, _EMIT_PARTS), ("sender thread", self.sender, _SENDER_PARTS))
        for title, stats, parts in threads:
            if stats is None:
                continue
            total = self.total(stats)
            out += [f"**{title}**: {total:.2f} s of CPU, {total / self.events * 1e6:.0f} µs per event under the profiler.",
                    "", _parts_table(stats, parts, total), ""]
        return "\n".join(out)


def emitter_profile(make_emitter: Any, emit_events: Any, events: int) -> EmitterProfile:
    """CPU profile of the emitting thread and of the emitter's sender thread while
    `emit_events(stream, events)` emits and the emitter flushes them.

    The sender thread is profiled through `threading.setprofile`: the first call in each thread
    started while it is set switches that thread to its own `cProfile.Profile`."""
    sender_profiles: list[cProfile.Profile] = []

    def install(frame: Any, event: str, arg: Any) -> None:
        profiler = cProfile.Profile(time.thread_time)
        sender_profiles.append(profiler)
        sys.setprofile(None)
        profiler.enable()

    threading.setprofile(install)
    try:
        emitter = make_emitter()
    finally:
        threading.setprofile(None)  # type: ignore[arg-type]  # None clears it (documented)
    emit_side = cProfile.Profile(time.thread_time)
    try:
        stream = emitter.stream("bench-emitter-profile", 1)
        emit_side.enable()
        emit_events(stream, events)
        emit_side.disable()
        emitter.flush(120)
    finally:
        emitter.close(timeout=5)
    sender = pstats.Stats(sender_profiles[0]) if sender_profiles else None
    return EmitterProfile(events, pstats.Stats(emit_side), sender)
