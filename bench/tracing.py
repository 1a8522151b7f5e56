"""Tracing's cost: the emitter per event and ingest's throughput, with tracing on (the SDK
exporting over OTLP/HTTP to a local receiver, `devtools.otlp_receiver`) against off, in one run.

Emitter: `python -m bench.tracing emit URL on|off` in a process of its own each time (a process
sets its tracer provider once, as production does), emitting 10,000 events of the emitter
benchmark's mix inside an attempt's and a step's span, flushed to `bench.stub_ingest`. Figure:
CPU per event of the whole process (emitting thread, sender thread, and with tracing on the
SDK's span export), as `bench.emitter` measures it.

Ingest: the gunicorn ingest app, started with and without OTEL_EXPORTER_OTLP_ENDPOINT, each on a
fresh database with the same runs, takes the ingest benchmark's NDJSON batches of 50 (every event
carrying its run's `traceparent`, as a worker's do) for the same window.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
from typing import Any

import requests

from bench import workload
from bench.emitter import CPU_EVENTS, MIX
from bench.harness import BATCH_HEADERS, TOKEN, Harness, warm_up
from bench.load import Load
from bench.procs import PYTHON, ROOT, free_port, process_env, wait_until
from bench.report import Document, Row, Target
from bench.stats import rate
from devtools.otlp_receiver import OtlpReceiver

NAME = "tracing"
THREADS = 4
#: Each figure is the best of this many rounds, off and on alternating: the machine is shared,
#: and a single round of either mode can land on someone else's burst.
ROUNDS = 3
#: At most this much dearer with tracing on (ratio on / off).
EMIT_TARGET = Target("<", 1.5, on="ratio")
INGEST_TARGET = Target(">=", 0.8, on="ratio")


def run(h: Harness, doc: Document) -> None:
    with OtlpReceiver() as receiver:
        _emitter(h, doc, receiver)
        _ingest(h, doc, receiver)


def _emitter(h: Harness, doc: Document, receiver: OtlpReceiver) -> None:
    port = free_port()
    stub = h.start("stub-ingest", [PYTHON, "-m", "bench.stub_ingest", str(port)], h.env("unused"))
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: requests.get(url, timeout=1).ok, 20, "the stub ingest to answer")
    print(f"  [t] tracing: emitter CPU of {CPU_EVENTS:,} events, off and on, {ROUNDS} rounds ...", flush=True)
    per = lambda result: result["process_s"] / result["events"] * 1e6  # noqa: E731 - µs per event
    offs, ons, before = [], [], len(receiver.spans)
    for _ in range(ROUNDS):
        offs.append(_emit_in_process(h, url, None))
        ons.append(_emit_in_process(h, url, receiver.endpoint))
    spans = (len(receiver.spans) - before) // ROUNDS
    off, on = min(offs, key=per), min(ons, key=per)
    h.stop(stub)
    doc.rows.append(Row("t", "emitter CPU per event, tracing on (OTLP to a local receiver)", per(on), "µs", per(off),
                        "the same, tracing off", EMIT_TARGET,
                        note=f"best of {ROUNDS}; emitting thread alone {on['thread_s'] / on['events'] * 1e6:.1f} µs on, "
                             f"{off['thread_s'] / off['events'] * 1e6:.1f} µs off; {spans} spans exported per run on"))


def _emit_in_process(h: Harness, url: str, endpoint: str | None) -> dict[str, Any]:
    env = process_env(MONGODB_URL=h.server.url("unused"), INGEST_TOKEN=TOKEN,
                      SPOOL_DIR=str(h.tmp / f"spool-tracing-{'on' if endpoint else 'off'}"),
                      **({"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_BSP_SCHEDULE_DELAY": "500"} if endpoint else {}))
    done = subprocess.run([PYTHON, "-m", "bench.tracing", "emit", url], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"the emitter process failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _ingest(h: Harness, doc: Document, receiver: OtlpReceiver) -> None:
    window = 8.0 if h.quick else 20.0
    rates: dict[str, list[float]] = {"off": [], "on": []}
    for round_, mode in ((r, m) for r in range(ROUNDS - 1) for m in ("off", "on")):
        print(f"  [t] tracing: ingest, NDJSON batches for {window:.0f} s, tracing {mode} ...", flush=True)
        wl = workload.build(seed=7, prefix=f"trace{mode}{round_}")
        _with_traceparents(wl)
        db = h.database(f"tracing_{mode}")
        workload.create_runs(db, wl)
        extra = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint} if mode == "on" else {}
        ingest = h.start_ingest(db.name, env=extra)
        warm_up(ingest)
        load = Load(ingest.batch_url, wl.ndjson_bodies(), BATCH_HEADERS, threads=THREADS, batch=True, deadline_s=window,
                    events_per_body=[len(b) for b in wl.batches]).run()
        rates[mode].append(rate(load.accepted, load.seconds))
        h.stop(ingest.child)
    doc.rows.append(Row("t", "ingest throughput, NDJSON batches of 50, tracing on", max(rates["on"]), "events/s",
                        max(rates["off"]), "the same, tracing off", INGEST_TARGET,
                        note=f"best of {ROUNDS - 1}: on {', '.join(f'{r:.0f}' for r in rates['on'])}, off "
                             f"{', '.join(f'{r:.0f}' for r in rates['off'])}; {len(receiver.spans):,} spans received in all"))
    doc.sections.append(("Tracing's cost", __doc__.split("\n\n", 1)[1]))


def _with_traceparents(wl: workload.Workload) -> None:
    """Each event carries its run's trace context, as a worker's do."""
    contexts: dict[str, str] = {}
    for batch in wl.batches:
        for event in batch:
            run_id = event["data"]["run_id"]
            context = contexts.setdefault(run_id, f"00-{len(contexts) + 1:032x}-{len(contexts) + 1:016x}-01")
            event["traceparent"] = context


def _emit(url: str) -> dict[str, Any]:
    """In this process, as a worker: the SDK when the environment says so, an attempt's span, a
    step's span, then `CPU_EVENTS` events emitted and flushed."""
    from orchestrator import tracing
    from orchestrator.settings import Settings
    from tasks.pod.emitter import Emitter
    from telemetry import traces

    settings = Settings.from_env({**os.environ, "INGEST_URL": url})
    provider = traces.configure("worker")
    emitter = Emitter(settings)
    try:
        with tracing.run_span("attempt", "bench-trace", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                              attempt=1), tracing.span("step Stage_2"):
            stream = emitter.stream("bench-trace", 1)
            for i in range(1000):  # warm-up: imports, the first connection, the allocator
                stream.emit(MIX[i % len(MIX)][0], **MIX[i % len(MIX)][1])
            emitter.flush(60)
            gc.collect()
            process0, thread0 = time.process_time(), time.thread_time()
            for i in range(CPU_EVENTS):
                stream.emit(MIX[i % len(MIX)][0], **MIX[i % len(MIX)][1])
            thread_s = time.thread_time() - thread0
            if not emitter.flush(120):
                raise RuntimeError("the stub ingest did not take the events in 120 s")
            if provider is not None:
                traces.flush()
            process_s = time.process_time() - process0
    finally:
        emitter.close(timeout=5)
    return {"process_s": process_s, "thread_s": thread_s, "events": CPU_EVENTS}


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "emit":
        sys.exit("usage: python -m bench.tracing emit INGEST_URL")
    print(json.dumps(_emit(sys.argv[2])))
