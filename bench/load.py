"""HTTP clients that keep ingest busy: several threads, each with its own keep-alive session,
posting pre-encoded bodies in order until the bodies, the deadline or a stop request end it.

The bodies are encoded before the clock starts, so a figure measures ingest, not the client.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import requests


@dataclass
class LoadResult:
    """What the clients saw. `accepted` etc. count events, `requests` count POSTs."""

    seconds: float = 0.0
    requests: int = 0
    accepted: int = 0
    duplicate: int = 0
    invalid: int = 0
    failed_requests: int = 0
    longest_request_s: float = 0.0
    errors: list[str] = field(default_factory=list)
    #: (monotonic time a request finished, events it carried), for rates over a window.
    finished: list[tuple[float, int]] = field(default_factory=list)

    def events_between(self, start: float, end: float) -> int:
        return sum(n for t, n in self.finished if start <= t <= end)


class Load:
    """Post `bodies` to `url` from `threads` threads. `batch=True`: NDJSON batches answered with
    counts; `batch=False`: one structured event per POST (201 accepted, 200 duplicate)."""

    def __init__(self, url: str, bodies: Sequence[bytes], headers: dict[str, str], *, threads: int, batch: bool,
                 deadline_s: float | None = None, events_per_body: Sequence[int] | None = None):
        self.url = url
        self.bodies = bodies
        self.headers = headers
        self.threads = threads
        self.batch = batch
        self.deadline_s = deadline_s
        self.events_per_body = events_per_body or [1] * len(bodies)
        self.result = LoadResult()
        self._next = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self._started = 0.0

    @property
    def exhausted(self) -> bool:
        """Every body was taken (the load ran out before it was stopped)."""
        with self._lock:
            return self._next >= len(self.bodies)

    def run(self) -> LoadResult:
        """Post everything (or until the deadline) and return what happened."""
        self.start()
        return self.wait()

    def start(self) -> None:
        self._started = time.monotonic()
        self._workers = [threading.Thread(target=self._client, name=f"load-{i}", daemon=True) for i in range(self.threads)]
        for worker in self._workers:
            worker.start()

    def stop(self) -> LoadResult:
        """Ask the clients to stop after their current request, and wait for them."""
        self._stop.set()
        return self.wait()

    def wait(self) -> LoadResult:
        for worker in self._workers:
            worker.join()
        self.result.seconds = time.monotonic() - self._started
        return self.result

    def _take(self) -> int | None:
        with self._lock:
            if self._stop.is_set() or self._next >= len(self.bodies):
                return None
            if self.deadline_s is not None and time.monotonic() - self._started >= self.deadline_s:
                return None
            index = self._next
            self._next += 1
            return index

    def _client(self) -> None:
        with requests.Session() as session:
            while (index := self._take()) is not None:
                began = time.monotonic()
                try:
                    response = session.post(self.url, data=self.bodies[index], headers=self.headers, timeout=300)
                except requests.RequestException as exc:
                    self._record_failure(f"{type(exc).__name__}: {exc}")
                    continue
                ended = time.monotonic()
                self._record(response, self.events_per_body[index], ended - began, ended)

    def _record(self, response: requests.Response, events: int, took: float, ended: float) -> None:
        with self._lock:
            r = self.result
            r.requests += 1
            r.longest_request_s = max(r.longest_request_s, took)
            if self.batch and response.status_code == 200:
                answer = response.json()
                r.accepted += answer["accepted"]
                r.duplicate += answer["duplicate"]
                r.invalid += answer["invalid"]
                r.finished.append((ended, events))
                if answer["invalid"] and len(r.errors) < 5:
                    bad = next(x for x in answer["results"] if x["status"] == "invalid")
                    r.errors.append(f"invalid event: {bad.get('error')}")
            elif not self.batch and response.status_code in (200, 201):
                r.accepted += response.status_code == 201
                r.duplicate += response.status_code == 200
                r.finished.append((ended, 1))
            else:
                r.failed_requests += 1
                if len(r.errors) < 5:
                    r.errors.append(f"HTTP {response.status_code}: {response.text[:200]}")

    def _record_failure(self, reason: str) -> None:
        with self._lock:
            self.result.failed_requests += 1
            if len(self.result.errors) < 5:
                self.result.errors.append(reason)
