"""Item 5, ingest half: the gunicorn workers' peak RSS during a flood of 100,000 events.

The flood is a backlog replay: `ai.run.log` events of 10 runs in batches of 1,000, the largest
request ingest accepts (INGEST_MAX_BATCH_EVENTS), so each request holds the most a request can,
posted by 4 threads to the gunicorn workers. Log events make the fewest updates per event, which keeps
the flood inside the time budget on FerretDB; the budget still caps it (the events processed are
reported). Peak RSS is each worker's VmHWM from /proc; the baseline is the same workers' RSS
after warm-up, before the flood. Bounded means the peak does not keep rising with the number of
events: growth over the flood's second half is the target.
"""

from __future__ import annotations

import threading

from bench import workload
from bench.harness import BATCH_HEADERS, Harness, Ingest, warm_up
from bench.load import Load
from bench.procs import memory_kib
from bench.report import Document, Row, Target

NAME = "flood"
BATCH = 1000
THREADS = 4


def run(h: Harness, doc: Document) -> None:
    total, cap_s = (20_000, 40.0) if h.quick else (100_000, 120.0)
    runs = workload.build(pods=10, runs_per_pod=1, prefix="flood")
    db = h.database(NAME)
    workload.create_runs(db, runs)
    ingest = h.start_ingest(db.name)
    warm_up(ingest)
    idle = max(memory_kib(pid).get("VmRSS", 0) for pid in ingest.worker_pids())
    bodies = workload.log_flood(runs.run_ids, total, BATCH)
    print(f"  [5] flood: {total:,} events in batches of {BATCH} (at most {cap_s:.0f} s) ...", flush=True)
    load = Load(ingest.batch_url, bodies, BATCH_HEADERS, threads=THREADS, batch=True, deadline_s=cap_s,
                events_per_body=[BATCH] * len(bodies))
    sampler = _Sampler(ingest, load)
    sampler.start()
    result = load.run()
    sampler.stop()
    h.stop(ingest.child)

    done = result.accepted
    peak = max(hwm for _, _, hwm in sampler.samples)
    half = next(hwm for accepted, _, hwm in sampler.samples if accepted >= done / 2)
    growth = (peak - half) / half * 100 if half else 0.0
    where = f"{done:,} of {total:,} events in {result.seconds:.0f} s" + ("" if done >= total else " (time cap)")
    doc.rows.append(Row("5", f"ingest worker peak RSS (VmHWM) during the flood, batches of {BATCH}", peak / 1024, "MiB",
                        idle / 1024, "idle worker after warm-up", None, note=where))
    doc.rows.append(Row("5", "ingest worker peak RSS growth over the flood's second half", growth, "%",
                        target=Target("<", 10.0), note=f"{half / 1024:.0f} MiB at half-way, {peak / 1024:.0f} MiB at the end"))
    curve = ", ".join(f"{a // 1000}k: {hwm / 1024:.0f}" for a, _, hwm in sampler.thinned(12))
    doc.sections.append(("5. Ingest memory in a flood", "\n".join([
        f"- {where}, posted by {THREADS} threads to {h.ingest_workers} gunicorn sync worker(s); "
        f"{result.requests} requests, the longest {result.longest_request_s:.1f} s"
        + (f"; problems: {result.errors[:2]}" if result.errors or result.failed_requests else "") + ".",
        f"- Largest worker's peak RSS (MiB) by events accepted: {curve}.",
        "- A sync worker holds one request at a time, and a request is bounded by INGEST_MAX_BODY_BYTES (5 MiB) and "
        "INGEST_MAX_BATCH_EVENTS (1,000); nothing is cached across requests (the metrics' labels are the 16 "
        "catalogue types), so a worker's memory is bounded by the largest request, whatever the flood's length. "
        "Extra load waits in the listen backlog and the clients, not in ingest's memory.",
        f"- Body size: {len(bodies[0]) / 2**20:.1f} MiB per 1,000-event request.",
    ])))


class _Sampler:
    """Every 0.25 s: events accepted so far, and the largest VmRSS and VmHWM among the workers."""

    def __init__(self, ingest: Ingest, load: Load):
        self.ingest = ingest
        self.load = load
        self.samples: list[tuple[int, int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            self._sample()

    def _sample(self) -> None:
        readings = [memory_kib(pid) for pid in self.ingest.worker_pids()]
        readings = [r for r in readings if r]
        if readings:
            self.samples.append((self.load.result.accepted, max(r["VmRSS"] for r in readings),
                                 max(r["VmHWM"] for r in readings)))

    def thinned(self, count: int) -> list[tuple[int, int, int]]:
        step = max(1, len(self.samples) // count)
        picked = self.samples[::step]
        return picked if picked[-1] == self.samples[-1] else picked + [self.samples[-1]]
