"""Item 8: memory per request, as a multiple of the body, for the largest bodies the limits let in.

The issue: "a 5 MB body costs ~134 MB of memory before the 1,000-event limit refuses it". Each
body below is posted once through the ingest app in this process (Flask's test client over
mongomock, so the database's own copies are in the figure only for the accepted event), and
`tracemalloc`'s peak over the request (the app's read of the body included) is divided by the
body's size.
No server is needed; the figures depend on the code, not on the machine.
"""

from __future__ import annotations

import gc
import json
import tracemalloc
from dataclasses import dataclass

import mongomock

from bench.report import Document, Row, Target
from orchestrator import db as dbmod
from orchestrator.events import make_event, seq_for

NAME = "memory"
#: The default INGEST_MAX_BODY_BYTES and INGEST_MAX_BATCH_EVENTS.
BODY_BYTES = 5 * 1024 * 1024
BATCH_EVENTS = 1000
RUN_ID = "r-memory"
TARGET = Target("<=", 10)
_AUTH = "bench-memory-Wq5Ty8Ui1Op4As7Df0Gh3Jk6"


@dataclass(frozen=True)
class Case:
    """One body: what it is, where it goes, and the status the limits give it."""

    what: str
    path: str
    content_type: str
    body: bytes


def _event(n: int, message: str = "m") -> dict[str, object]:
    return make_event("ai.run.log", RUN_ID, seq_for(1, n), "worker://bench", {"level": "info", "message": message},
                      time="2026-03-01T12:00:00.000Z", event_id=f"{RUN_ID}-{n}")


def _fill(lines: int) -> list[bytes]:
    """`lines` events whose NDJSON fills BODY_BYTES."""
    overhead = len(json.dumps(_event(0, "")).encode()) + 1 + 12
    size = BODY_BYTES // lines - overhead
    return [json.dumps(_event(n, "x" * size)).encode() for n in range(1, lines + 1)]


def cases() -> list[Case]:
    """The largest bodies: many small lines, the limit's event count plus one, and one event."""
    small = json.dumps(_event(1)).encode()
    count = BODY_BYTES // (len(small) + 1)
    many = b"\n".join([small] * count)
    tiny_items = b"[" + b",".join([b"{}"] * (BODY_BYTES // 3 - 1)) + b"]"
    single_size = BODY_BYTES - len(json.dumps(_event(1, "")).encode()) - 64
    return [
        Case(f"NDJSON, {BODY_BYTES // 3:,} lines of {{}}", "/api/ingest/events", "application/x-ndjson",
             b"{}\n" * (BODY_BYTES // 3)),
        Case(f"NDJSON, {count:,} small events", "/api/ingest/events", "application/x-ndjson", many),
        Case(f"NDJSON, {BATCH_EVENTS + 1:,} lines", "/api/ingest/events", "application/x-ndjson",
             b"\n".join(_fill(BATCH_EVENTS + 1))),
        Case(f"JSON array, {BODY_BYTES // 3 - 1:,} empty objects", "/api/ingest/events",
             "application/cloudevents-batch+json", tiny_items),
        Case(f"JSON array, {BATCH_EVENTS:,} events", "/api/ingest/events", "application/cloudevents-batch+json",
             b"[" + b",".join(_fill(BATCH_EVENTS)) + b"]"),
        Case("one event", "/api/ingest/event", "application/cloudevents+json",
             json.dumps(_event(1, "x" * single_size)).encode()),
    ]


def measure(case: Case) -> tuple[int, int]:
    """(status, peak bytes the request allocated) for one fresh app and database. The request's
    environment, body stream included, is built before tracing starts: the client's copy of the
    body is not the app's cost."""
    from werkzeug.test import EnvironBuilder

    from ingest_app import create_app
    from orchestrator.settings import Settings

    database = mongomock.MongoClient(tz_aware=True)["bench_memory"]
    dbmod.ensure_indexes(database)
    database.runs.insert_one({"_id": RUN_ID, "status": "RUNNING", "attempt": 1, "maxAttempts": 3, "hypothesisId": "h"})
    settings = Settings.from_env({"MONGODB_URL": "mongomock://localhost/bench_memory", "INGEST_TOKEN": _AUTH})
    client = create_app(settings, db=database).test_client()
    headers = {"Authorization": f"Bearer {_AUTH}", "Content-Type": case.content_type}
    environ = EnvironBuilder(path=case.path, method="POST", data=case.body, headers=headers).get_environ()
    client.get("/healthz")  # first-request set-up is not the request's cost
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        status = client.open(environ).status_code
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return status, peak


def run(h: object, doc: Document) -> None:
    lines = []
    for case in cases():
        print(f"  [8] memory: {case.what} ...", flush=True)
        status, peak = measure(case)
        multiple = peak / len(case.body)
        doc.rows.append(Row("8", f"memory per request, {case.what} ({len(case.body) / 2**20:.1f} MiB), HTTP {status}",
                            multiple, "× body", target=TARGET, note=f"peak {peak / 2**20:.1f} MiB"))
        lines.append(f"- {case.what}: HTTP {status}, peak {peak / 2**20:.1f} MiB, {multiple:.1f}× the body.")
    doc.sections.append(("8. Memory per request", __doc__.split("\n\n", 1)[1].strip() + "\n\n" + "\n".join(lines)))
