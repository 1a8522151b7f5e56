"""Item 1: ingest throughput under gunicorn against the raw-insert limit and the peer, batches and single events.

The ingest app runs as the Procfile runs it (gunicorn, `Harness.ingest_workers` sync workers, separate
process); `THREADS` client threads post pre-encoded bodies for a fixed window, so the server is
saturated the whole time. The raw baseline inserts the documents ingest stores in `events` for the
same workload (`workload.stored_documents`) with `insert_many`, in the same batches of 50 and
from the same number of threads, into a fresh database with the same indexes. The peer baseline
(`bench.peer`) replays the replaced service's one-event-at-a-time algorithm over the same events
from the same number of threads, into a fresh database with the same indexes and runs, for the
batch window.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

from bench import peer, profile, workload
from bench.harness import BATCH_HEADERS, SINGLE_HEADERS, Harness, warm_up
from bench.load import Load, LoadResult
from bench.report import Document, Row, Target, number
from bench.stats import rate
from orchestrator.db import ensure_indexes

NAME = "ingest"
#: Client threads posting at once: more than the gunicorn workers, so none waits for work.
THREADS = 4
TARGET = Target(">=", 0.5, on="ratio")


def run(h: Harness, doc: Document) -> None:
    window = 15.0 if h.quick else 40.0
    single_window = 8.0 if h.quick else 15.0
    wl = workload.build(seed=1)
    db = h.database(NAME)
    workload.create_runs(db, wl)
    ingest = h.start_ingest(db.name)
    warm_up(ingest)

    print(f"  [1] ingest: NDJSON batches for {window:.0f} s ...", flush=True)
    bodies = wl.ndjson_bodies()
    batches = Load(ingest.batch_url, bodies, BATCH_HEADERS, threads=THREADS, batch=True, deadline_s=window,
                   events_per_body=[len(b) for b in wl.batches]).run()
    posted = wl.batches[:batches.requests + batches.failed_requests]
    sizes = {name: db[name].estimated_document_count() for name in ("events_seen", "runs", "stages")}
    batch_rate = rate(batches.accepted, batches.seconds)

    print(f"  [1] ingest: single-event POSTs for {single_window:.0f} s ...", flush=True)
    single_wl = workload.build(seed=2, prefix="single")
    _reset(db, single_wl)
    singles = Load(ingest.single_url, [json.dumps(e).encode() for e in single_wl.events], SINGLE_HEADERS,
                   threads=THREADS, batch=False, deadline_s=single_window).run()
    single_rate = rate(singles.accepted, singles.seconds)
    h.stop(ingest.child)

    print("  [1] raw insert_many baseline ...", flush=True)
    raw_db = h.database("raw")
    stored = [workload.stored_documents(b) for b in wl.batches]
    raw_rate, raw_count = _raw_inserts(raw_db, stored, THREADS)

    print(f"  [1] peer baseline: one event at a time for {window:.0f} s ...", flush=True)
    peer_db = h.database("peer")
    workload.create_runs(peer_db, wl)
    peer_rate, peer_count, peer_seconds = _peer(peer_db, peer.prepare([d for b in stored for d in b]), THREADS, window)
    lookup_ms = peer.lookup_ms(peer_db)

    problems = "; ".join(filter(None, (_problems(batches), _problems(singles))))
    batch_row = Row("1", f"ingest throughput, NDJSON batches of 50 (gunicorn ×{h.ingest_workers}, {THREADS} client threads)",
                    batch_rate, "events/s", raw_rate, "raw insert_many of the stored documents, batches of 50", TARGET,
                    note=f"{batches.accepted:,} events in {batches.seconds:.0f} s" + (f"; {problems}" if problems else ""))
    doc.rows.append(batch_row)
    doc.rows.append(Row("1", "ingest throughput, NDJSON batches of 50, against the peer", batch_rate, "events/s",
                        peer_rate, f"peer: the replaced service's algorithm, one event at a time, {THREADS} threads", None,
                        note=f"peer: {peer_count:,} events in {peer_seconds:.0f} s, 4 round trips each "
                        f"(find_one, 2 insert_one, update_one), no HTTP or validation; its dedup find_one took "
                        f"{lookup_ms:.1f} ms at the end ({peer_count:,} records)"))
    doc.rows.append(Row("1", "ingest throughput, single-event POSTs (application/cloudevents+json)", single_rate, "events/s",
                        raw_rate, "raw insert_many, as above", None,
                        note=f"{singles.accepted:,} events in {singles.seconds:.0f} s; "
                        f"{single_rate / batch_rate:.2f}× the batch rate" if batch_rate else ""))
    mix = ", ".join(f"{t.split('.', 1)[1]} {n}" for t, n in workload.Workload([], [], posted).type_counts().items())
    body = [
        f"- Workload: 100 pods, each running runs one after another (200 runs created first, RUNNING, attempt 1), "
        f"joined at random points so the window holds every phase of a run; each POST carries 50 consecutive events "
        f"of one run, as a worker's emitter sends them. Events posted in the window by type: {mix}.",
        f"- Batches: {batches.requests} POSTs, longest {batches.longest_request_s:.2f} s. At the end the database held "
        f"{sizes['events_seen']:,} dedup records, {sizes['stages']:,} stage and {sizes['runs']:,} run documents.",
        f"- Single events: {singles.requests} POSTs, longest {singles.longest_request_s:.2f} s, into a fresh copy of "
        f"the same setup (200 other runs).",
        f"- Raw baseline: {raw_count:,} documents (the whole workload's history records) in batches of 50 from "
        f"{THREADS} threads into an empty `events` collection with ingest's indexes.",
        f"- Peer baseline: the service this project replaces handled one event per request with four round trips "
        f"(`find_one` on `events_seen`, `insert_one` into `events` and into `events_seen`, `update_one` of the run), "
        f"replayed here as plain pymongo calls from {THREADS} threads over the same events into a fresh database "
        f"with the same indexes and runs ({peer_count:,} events in {peer_seconds:.0f} s); the ratio "
        f"{_ratio(batch_rate, peer_rate)} is our batch rate over the peer's, so above 1 our ingest applies more "
        f"events per second even though it also pays for HTTP, validation and the stage, artifact and validation "
        f"writes the peer never made{_scan_caveat(h, lookup_ms, peer_count, peer_seconds)}.",
    ]
    if batch_row.met is False:
        print("  [1] target missed: profiling the ingest path in-process ...", flush=True)
        body.append("")
        body.append(profile.ingest_profile(h, seconds=8.0 if h.quick else 15.0, batch_rate=batch_rate, raw_rate=raw_rate))
    doc.sections.append(("1. Ingest throughput", "\n".join(body)))


def _reset(db: Any, wl: workload.Workload) -> None:
    """Empty every collection ingest writes and create `wl`'s runs: a fresh start under the
    same ingest processes (their index check already ran, so the indexes are made here)."""
    for name in ("events", "events_seen", "stages", "artifacts", "validations", "runs", "hypotheses"):
        db.drop_collection(name)
    ensure_indexes(db)
    workload.create_runs(db, wl)


def _raw_inserts(db: Any, batches: list[list[dict[str, Any]]], threads: int) -> tuple[float, int]:
    """insert_many of each batch from `threads` threads; (documents per second, documents)."""
    _, seconds = _in_threads(len(batches), threads, "raw", lambda i: db.events.insert_many(batches[i], ordered=False))
    count = sum(len(b) for b in batches)
    return rate(count, seconds), count


def _peer(db: Any, events: list[peer.PeerEvent], threads: int, window: float) -> tuple[float, int, float]:
    """The peer's requests, one event each, from `threads` threads until the events or `window`
    run out; (events applied per second, events applied, seconds). A repeat would not count: the
    workload has none, so every request is one event applied."""
    applied, seconds = _in_threads(len(events), threads, "peer", lambda i: peer.handle(db, events[i]), window)
    return rate(applied, seconds), applied, seconds


def _in_threads(count: int, threads: int, name: str, work: Callable[[int], Any],
                deadline_s: float | None = None) -> tuple[int, float]:
    """`work(0)` .. `work(count - 1)`, each index once, from `threads` threads, a thread taking the
    next index while any is left and `deadline_s` has not passed; (calls whose result was not
    False, seconds from the start until every thread ended)."""
    lock = threading.Lock()
    position = [0]
    done = [0]
    started = time.perf_counter()

    def client() -> None:
        while True:
            with lock:
                index = position[0]
                position[0] += 1
            if index >= count or (deadline_s is not None and time.perf_counter() - started >= deadline_s):
                return
            if work(index) is not False:
                with lock:
                    done[0] += 1

    workers = [threading.Thread(target=client, name=f"{name}-{i}") for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return done[0], time.perf_counter() - started


def _scan_caveat(h: Harness, lookup_ms: float, count: int, seconds: float) -> str:
    """Why the peer is slow on FerretDB: `explain` of its lookup there shows `SCAN events_seen_...`,
    not the unique (source, eventId) index, so each of its events pays a scan of a growing collection."""
    if not h.ferretdb:
        return ""
    per_event_ms = THREADS * seconds * 1000 / max(count, 1)
    return (" (on FerretDB the peer's dedup `find_one` scans `events_seen` instead of using its unique index, so the "
            f"peer slows as that grows: by the end one lookup took {lookup_ms:.1f} ms, against {per_event_ms:.0f} ms "
            "per event per client thread over the window; ours skips that lookup there, see `ingest.fast_path_pays`)")


def _ratio(figure: float, baseline: float) -> str:
    return number(figure / baseline) if baseline else "—"


def _problems(result: LoadResult) -> str:
    parts = []
    if result.invalid:
        parts.append(f"{result.invalid} invalid")
    if result.failed_requests:
        parts.append(f"{result.failed_requests} failed requests")
    if result.errors:
        parts.append("first: " + result.errors[0][:160])
    return ", ".join(parts)

