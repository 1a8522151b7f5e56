"""Every fake of the test suite, in one place: stand-ins for the broker, a change stream, the
worker's emitter, artifact stores, a database that is down, and an ingest server that answers
as told. Each one behaves as the real part does in the way its tests rely on, and no more."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pymongo.errors import ServerSelectionTimeoutError

from orchestrator.events import make_event, seq_for
from orchestrator.ingest import Item, ingest
from orchestrator.storage import LocalStorage, StorageError
from orchestrator.tracing import for_run

#: What the fake ingest answers one POST with: status, headers, body.
Answer = tuple[int, dict[str, str], bytes]


class FakeSender:
    """The dispatcher's `Sender` with a list for a broker; `fail` makes every send raise."""

    def __init__(self, fail: bool = False):
        self.sent: list[tuple[str, int, str, int]] = []
        self.fail = fail

    def __call__(self, run_id, attempt, *, queue, priority, task_id):
        if self.fail:
            raise ConnectionError("broker down")
        self.sent.append((run_id, attempt, queue, priority))


class FakeChangeStream:
    """A change stream that yields the given changes, then nothing, like `watch()` with a timeout."""

    def __init__(self, changes, dispatcher):
        self.changes, self.dispatcher, self.resume_token = list(changes), dispatcher, None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def try_next(self):
        if self.changes:
            change = self.changes.pop(0)
            self.resume_token = {"_data": change["token"]}
            return change
        self.dispatcher.stop()
        return None


class WatchableRuns:
    """A `runs` collection whose `watch()` returns the change stream `stream_factory` makes."""

    def __init__(self, runs, stream_factory):
        self._runs, self._factory, self.watch_calls = runs, stream_factory, []

    def __getattr__(self, name):
        return getattr(self._runs, name)

    def watch(self, pipeline, resume_after=None, max_await_time_ms=None):
        self.watch_calls.append(resume_after)
        return self._factory()


class WatchableDb:
    """A database whose `runs` is a `WatchableRuns`; everything else is the real one."""

    def __init__(self, db, runs):
        self._db, self.runs = db, runs

    def __getattr__(self, name):
        return getattr(self._db, name)

    def __getitem__(self, name):
        return self._db[name]


class InProcessStream:
    """One attempt's events, numbered as the worker numbers them, applied at once."""

    def __init__(self, sink: InProcessEmitter, run_id: str, attempt: int):
        self.sink, self.run_id, self.attempt, self.n = sink, run_id, attempt, 0
        self.traceparent: str | None = None

    def emit(self, event_type: str, /, **data: Any) -> dict[str, Any]:
        self.n += 1
        event = make_event(event_type, self.run_id, seq_for(self.attempt, self.n), "worker://pod-test", data)
        traceparent = for_run(self.traceparent)  # as tasks.pod.emitter.RunStream does
        if traceparent:
            event["traceparent"] = traceparent
        self.sink.apply(event)
        return event

    def close(self) -> None:
        pass


class InProcessEmitter:
    """Applies each event through the ingest code at once: the worker's view of a perfect network."""

    def __init__(self, db):
        self.db, self.events, self.lock = db, [], threading.Lock()

    def stream(self, run_id: str, attempt: int) -> InProcessStream:
        return InProcessStream(self, run_id, attempt)

    def apply(self, event: dict[str, Any]) -> None:
        with self.lock:
            self.events.append(event)
            [outcome] = ingest(self.db, [Item(index=0, event=event)], bucket="b", default_max_attempts=3)
            assert outcome.status == "accepted", outcome.as_result()

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    def flush(self, timeout: float = 0) -> bool:
        return True


class BrokenStorage(LocalStorage):
    """An S3 that refuses every upload."""

    def upload(self, local_path, key, content_type=None):
        raise StorageError(f"upload of {key} failed: S3 down")


class DownDb:
    """A database whose every call fails as pymongo fails when no server answers."""

    def __getattr__(self, name: str) -> Any:
        return self

    def __getitem__(self, name: str) -> Any:
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise ServerSelectionTimeoutError("127.0.0.1:1: [Errno 111] Connection refused")


class FakeStorage:
    """Presigns like MinIO: a URL with a signature, and a record of the keys asked for."""

    def __init__(self) -> None:
        self.keys: list[str] = []

    def download_url(self, key: str, expires_s: int = 3600) -> str:
        self.keys.append(key)
        return f"https://minio.test/ai-scientist/{key}?X-Amz-Expires={expires_s}&X-Amz-Signature=abc"


class EscapingStorage:
    """A local store that trusts its keys: '../x' leads out of its directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def download_url(self, key: str, expires_s: int = 3600) -> str:
        return "file://" + str(self.root) + "/" + key


@dataclass
class Received:
    at: float
    headers: dict[str, str]
    events: list[dict[str, Any]]


def results(events: list[dict[str, Any]], invalid: frozenset[int] = frozenset(), seen: set[str] | None = None) -> Answer:
    """Ingest's batch answer: every line accepted (or duplicate), except `invalid` indexes."""
    out = []
    for index, event in enumerate(events):
        if index in invalid:
            out.append({"index": index, "id": event["id"], "status": "invalid", "error": "data.progress: Must be within 0..1."})
        else:
            duplicate = seen is not None and event["id"] in seen
            out.append({"index": index, "id": event["id"], "status": "duplicate" if duplicate else "accepted"})
    return 200, {"Content-Type": "application/json"}, json.dumps({"results": out}).encode()


class FakeIngest:
    """`POST /api/ingest/events` on 127.0.0.1. One-off answers queued with `then` go first;
    otherwise `rule` answers (default: accept every line). Records every request."""

    def __init__(self, port: int = 0):
        self.received: list[Received] = []
        self.delivered: list[dict[str, Any]] = []  # accepted lines, in arrival order
        self.queued: list[Answer | Callable[[list[dict[str, Any]]], Answer]] = []
        self.rule: Callable[[list[dict[str, Any]]], Answer] | None = None
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()

    def then(self, *answers: Answer | Callable[[list[dict[str, Any]]], Answer]) -> None:
        self.queued.extend(answers)

    def answer(self, events: list[dict[str, Any]], headers: dict[str, str]) -> Answer:
        with self._lock:
            self.received.append(Received(time.monotonic(), headers, events))
            step = self.queued.pop(0) if self.queued else (self.rule or self.accept)
            status, answer_headers, body = step(events) if callable(step) else step
            if status == 200 and b'"results"' in body:
                verdicts = json.loads(body)["results"]
                for event, verdict in zip(events, verdicts, strict=True):
                    if verdict["status"] != "invalid":
                        self.delivered.append(event)
                        self._seen.add(event["id"])
            return status, answer_headers, body

    def accept(self, events: list[dict[str, Any]]) -> Answer:
        return results(events, seen=self._seen)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, like the real app behind gunicorn
            disable_nagle_algorithm = True  # as gunicorn does; else each answer waits 40 ms for an ACK

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                events = [json.loads(line) for line in body.splitlines() if line.strip()]
                status, headers, payload = fake.answer(events, dict(self.headers.items()))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def answer(status: int, body: bytes = b"", **headers: str) -> Answer:
    return status, {k.replace("_", "-"): v for k, v in headers.items()}, body
