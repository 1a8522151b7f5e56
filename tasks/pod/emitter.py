"""The worker's event emitter: CloudEvents written ahead to a durable spool, sent in small batches
by one background thread.

    emitter = Emitter(settings)                  # after the fork: it owns a thread
    events = emitter.stream(run_id, attempt)
    events.emit("ai.run.stage_started", stage="Stage_1")
    events.close()                               # the run's spool file goes once delivered
    emitter.close(timeout=15)                    # flush, then stop the thread

`emit` builds the event, encodes it and appends it to the run's spool file with one `os.write`
(about 10 microseconds: half of it the ULID and timestamp), then returns: it never touches the
network, and the event survives the process being killed from then on (not a power loss: no
fsync, which would cost milliseconds). The sender thread sends what the spool holds, per run in
emit order, at most `max_batch` events per POST, as soon as `max_batch` are waiting or the oldest
has waited `max_delay_s`. An event leaves the spool only when ingest answered for it: accepted or
duplicate (delivered), or invalid (logged with the reason and dropped: a retry would be refused
again) into the spool's dead-letter file, with an `ai.run.log` warning in the run's history.
Everything else is retried with backoff (Retry-After wins when given), so an outage of any
length, or a restart, loses nothing and memory holds one batch: network errors, 5xx and 429
quietly; 401, 403 and other 4xx loudly, as they mean a configuration to fix (a rotated token or
a throttle must never dead-letter a stream). A 413 halves the batch; a single event too large is
dead-lettered. A batch answered 500 (not 502-504, which every batch gets while ingest or its
database is away) `poison_tries` times in a row is halved likewise, and a single event so
answered is dead-lettered: the rest of its run flow.

One emitter per SPOOL_DIR: the spool holds an flock on it, and a second process waits for it
(`spool_lock_timeout_s`) and then fails with `SpoolError`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests

from orchestrator.events import CATALOGUE, ROUTINE_TYPES, attempt_of, is_dead_letter_notice, make_event, seq_for
from orchestrator.retry import Backoff, retry_after_s
from orchestrator.settings import Settings
from orchestrator.tracing import FIELD as TRACE_FIELD
from orchestrator.tracing import for_run, within
from tasks.pod.spool import DEAD_LETTERS, Batch, Spool

log = logging.getLogger(__name__)

_DELIVERED = ("accepted", "duplicate")


@dataclass(frozen=True)
class EmitterConfig:
    """The emitter's tunables; the defaults are for production, tests shorten the times."""

    #: Most events per POST; small batches keep each request cheap and progress live.
    max_batch: int = 50
    #: Longest an event waits for others before it is sent: the live view lags at most this
    #: (plus `poll_s`). 0.25 s, not 1 s: a run's progress trickles in far
    #: below 50 events a second, so every report waited the full delay, and with 1 s the
    #: benchmark's visibility p95 (< 1 s) could not be met whatever ingest did. It costs at most
    #: 4 POSTs a second per pod.
    max_delay_s: float = 0.25
    #: Most bytes per POST body; stays under ingest's INGEST_MAX_BODY_BYTES (default 5 MiB).
    max_batch_bytes: int = 1 << 20
    #: How often the idle sender looks at the spool (seconds); costs a few integer sums.
    poll_s: float = 0.05
    #: Waits between failed POSTs: exponential from base_s, capped at cap_s, full jitter.
    backoff: Backoff = Backoff(base_s=0.2, cap_s=30.0)
    #: Ceiling on a server's Retry-After (seconds), so a bogus header cannot stall for hours.
    max_retry_after_s: float = 300.0
    #: HTTP timeouts (seconds): a hung ingest costs at most this per try.
    connect_timeout_s: float = 3.05
    read_timeout_s: float = 15.0
    #: How long a new emitter waits for a dying predecessor to release the spool directory.
    spool_lock_timeout_s: float = 5.0
    #: Answers in a row of a server error (`POISON_SUSPECTS`) to one batch before it is split in
    #: two, and a single event so answered is dead-lettered: one event that breaks ingest must
    #: not stop its run's stream for good.
    poison_tries: int = 3


#: Server errors that may be caused by the batch itself. 502, 503 and 504 mean ingest or its
#: database is away (every batch would get them): those are retried for as long as it takes.
def _poison_suspect(status: int) -> bool:
    return status >= 500 and status not in (502, 503, 504)


@dataclass(frozen=True)
class EmitterStats:
    """Counters for tests and metrics. `backlog`: spooled events not yet delivered or dropped."""

    sent: int
    duplicates: int
    dropped_invalid: int
    retries: int
    spool_errors: int
    backlog: int
    blocked_max_s: float
    #: Bytes of the spooled events in `backlog`.
    backlog_bytes: int


@dataclass
class _Counters:
    """Written by the sender thread, except the two emit-path fields. A lost increment from two
    threads racing would only blur a metric, so there is no lock on the hot path."""

    sent: int = 0
    duplicates: int = 0
    dropped_invalid: int = 0
    retries: int = 0
    spool_errors: int = 0
    blocked_max_s: float = 0.0

    def observe_emit(self, seconds: float) -> None:
        if seconds > self.blocked_max_s:
            self.blocked_max_s = seconds


class _Encoder(json.JSONEncoder):
    """Compact JSON; numpy scalars and arrays become plain numbers and lists."""

    def __init__(self) -> None:
        super().__init__(separators=(",", ":"))

    def default(self, o: Any) -> Any:
        for method in ("item", "tolist"):  # numpy.float32, numpy.ndarray and the like
            convert = getattr(o, method, None)
            if callable(convert):
                return convert()
        return super().default(o)


_ENCODE = _Encoder().encode


class RunStream:
    """The events of one attempt of one run, numbered seq_for(attempt, 1), (attempt, 2), ...
    Thread-safe: the pipeline and the heartbeat thread emit on the same stream. Get it from
    `Emitter.stream`, which hands out one stream per (run, attempt)."""

    def __init__(self, spool: Spool, counters: _Counters, source: str, run_id: str, attempt: int,
                 last_n: int, on_close: Callable[[RunStream], None]):
        self.run_id = run_id
        self.attempt = attempt
        self._spool = spool
        self._counters = counters
        self._source = source
        self._n = last_n
        self._on_close = on_close
        self._lock = threading.Lock()
        self.closed = False
        #: The attempt's span: the trace context of an event emitted outside any span (heartbeat thread).
        self.traceparent: str | None = None

    @property
    def last_n(self) -> int:
        """How many events this attempt has numbered so far (on this pod)."""
        return self._n

    def emit(self, event_type: str, /, **data: Any) -> dict[str, Any]:
        """Spool one event and return it (do not modify it). Never waits on the network.

        Raises ValueError for a type not in the catalogue and TypeError for data that is not
        JSON-able: both are bugs in the caller. A disk error is logged and counted, not raised,
        so a full disk cannot turn a report into a crash of the run.
        """
        started = time.perf_counter()
        if event_type not in CATALOGUE:
            raise ValueError(f"unknown event type {event_type!r}; known types: {', '.join(CATALOGUE)}")
        with self._lock:
            event = make_event(event_type, self.run_id, seq_for(self.attempt, self._n + 1), self._source, data)
            traceparent = for_run(self.traceparent)
            if traceparent:
                event[TRACE_FIELD] = traceparent
            line = (_ENCODE(event) + "\n").encode()
            self._n += 1
            self._append(event, line)
        self._counters.observe_emit(time.perf_counter() - started)
        return event

    def close(self) -> None:
        """No more events for this attempt: the run's spool files go once all are delivered."""
        if not self.closed:
            self.closed = True
            self._on_close(self)

    def _append(self, event: dict[str, Any], line: bytes) -> None:
        try:
            self._spool.append(self.run_id, line)
        except OSError as exc:
            self._counters.spool_errors += 1
            log.error("event %s (%s) of run %s could not be written to the spool and is lost: %s",
                      event["id"], event["type"], self.run_id, exc)
            return
        if self.closed:
            self._spool.close_run(self.run_id)  # emitted after close: keep the file closable


class Emitter:
    """Owns the spool and the sender thread of one worker process. Create it after a fork."""

    def __init__(self, settings: Settings, *, session: requests.Session | None = None,
                 config: EmitterConfig | None = None):
        self.config = config or EmitterConfig()
        self.url = f"{settings.ingest_url}/api/ingest/events"
        self._source = f"worker://{settings.pod_id}"
        self._headers = {"Content-Type": "application/x-ndjson", "Accept": "application/json"}
        if settings.ingest_token:
            self._headers["Authorization"] = f"Bearer {settings.ingest_token}"
        self._spool = Spool(settings.spool_dir, lock_timeout_s=self.config.spool_lock_timeout_s)
        self._session = session or requests.Session()
        self._owns_session = session is None
        # Proxy settings are read from the environment once, not by requests on every POST
        # (a quarter of the sender's CPU in the benchmark, growing with the pod's environment).
        self._proxies = requests.utils.get_environ_proxies(self.url) if self._owns_session else None
        if self._owns_session:
            self._session.trust_env = False
        self._counters = _Counters()
        self._streams: dict[tuple[str, int], RunStream] = {}
        self._closed_n: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()
        self._progress = threading.Condition()
        self._flushers = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._closed = False
        self._failures = 0
        # Never more than ingest accepts (the same INGEST_MAX_* settings configure it).
        self._max_batch = min(self.config.max_batch, settings.max_batch_events)
        self._max_bytes = min(self.config.max_batch_bytes, settings.max_body_bytes)
        self._limit = self._max_batch  # lowered by a 413 or a poison suspect, grown back by each success
        self._server_errors = 0  # poison-suspect answers in a row
        # A backlog left by a previous process is sent at once, not after max_delay_s.
        self._pending_since: float | None = float("-inf") if self._spool.backlog else None
        self._thread = threading.Thread(target=self._run, name="event-sender", daemon=True)
        self._thread.start()

    # -- the pipeline's side ----------------------------------------------------------------
    def stream(self, run_id: str, attempt: int) -> RunStream:
        """The stream of one attempt. The same object while it is open; opened again (after
        `close` or in a new process) it numbers on after the highest seq already used."""
        key = (run_id, attempt)
        with self._lock:
            stream = self._streams.get(key)
            if stream is None:
                used = max(self._closed_n.pop(key, 0), self._spool.last_seq(run_id, attempt) - seq_for(attempt, 0))
                stream = RunStream(self._spool, self._counters, self._source, run_id, attempt, used, self._stream_closed)
                self._streams[key] = stream
            return stream

    @property
    def running(self) -> bool:
        """True while the sender thread is alive."""
        return self._thread.is_alive()

    def stats(self) -> EmitterStats:
        c = self._counters
        return EmitterStats(sent=c.sent, duplicates=c.duplicates, dropped_invalid=c.dropped_invalid,
                            retries=c.retries, spool_errors=c.spool_errors, backlog=self._spool.backlog,
                            blocked_max_s=c.blocked_max_s, backlog_bytes=self._spool.backlog_bytes)

    def flush(self, timeout: float = 10.0) -> bool:
        """Send what is spooled now, without waiting for a full batch; True once nothing is left
        undelivered, False if `timeout` seconds passed first (the events stay spooled)."""
        with self._progress:
            self._flushers += 1
        self._wake.set()
        try:
            with self._progress:
                return self._progress.wait_for(lambda: self._spool.backlog == 0, timeout)
        finally:
            with self._progress:
                self._flushers -= 1

    def close(self, timeout: float = 10.0) -> bool:
        """Flush for up to `timeout` seconds, then stop the thread. Whatever was not delivered
        stays in the spool for the next emitter on this SPOOL_DIR. True if all was delivered."""
        if self._closed:
            return self._spool.backlog == 0
        deadline = time.monotonic() + timeout
        delivered = self.flush(timeout)
        self._closed = True
        self._stop.set()
        self._wake.set()
        self._thread.join(max(deadline - time.monotonic(), 0.1))
        if self._thread.is_alive():
            log.warning("event sender still waits on ingest at close; it stops after that request")
        if self._owns_session:
            self._session.close()
        self._spool.close()
        if not delivered:
            log.warning("%d events not yet delivered stay in the spool %s for the next start",
                        self._spool.backlog, self._spool.directory)
        return delivered

    def _stream_closed(self, stream: RunStream) -> None:
        key = (stream.run_id, stream.attempt)
        with self._lock:
            if self._streams.get(key) is stream:
                del self._streams[key]
            self._closed_n[key] = max(self._closed_n.get(key, 0), stream.last_n)
        self._spool.close_run(stream.run_id)

    # -- the sender thread ------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._due():
                self._spool.collect()
                self._wake.wait(self.config.poll_s)
                self._wake.clear()
                continue
            try:
                delay = self._send_round()
            except Exception as exc:  # noqa: BLE001 - the sender must outlive any one failure
                log.exception("Unexpected failure in the event sender")
                delay = self._failed(f"{type(exc).__name__}: {exc}", None, logging.ERROR)
            if delay:
                self._stop.wait(delay)

    def _due(self) -> bool:
        """Is a batch worth sending now: full, old enough, or asked for by flush/close?"""
        backlog = self._spool.backlog
        if backlog == 0:
            self._pending_since = None
            return False
        now = time.monotonic()
        if self._pending_since is None:
            self._pending_since = now
        return (backlog >= self._max_batch or self._flushers > 0
                or now - self._pending_since >= self.config.max_delay_s)

    def _send_round(self) -> float:
        """One batch of every run with unsent events; the seconds to back off (0 if all went)."""
        for run_id in self._spool.unsent_runs():
            delay = self._deliver(self._spool.read(run_id, self._limit, self._max_bytes))
            if delay:
                return delay
        self._spool.collect()
        return 0.0

    def _deliver(self, batch: Batch) -> float:
        """POST one batch and act on the answer; the seconds to back off (0: go on)."""
        if not batch.events:  # only unreadable lines (logged by the spool): step past them
            self._settle(batch, [])
            return 0.0
        try:
            with within(_milestone(batch.events)):  # one run's events: its steps' POSTs continue its trace
                response = self._session.post(self.url, data=batch.body, headers=self._headers, proxies=self._proxies,
                                              timeout=(self.config.connect_timeout_s, self.config.read_timeout_s))
        except requests.RequestException as exc:
            return self._failed(_network_reason(exc), None, logging.WARNING)
        status = response.status_code
        if 200 <= status < 300:
            try:
                verdicts = _verdicts(response, len(batch))
            except ValueError as exc:
                return self._failed(f"unusable answer from ingest: {exc}", None, logging.ERROR)
            self._settle(batch, verdicts)
            return 0.0
        if status == 413:
            return self._too_large(batch)
        if _poison_suspect(status):
            self._server_errors += 1
            if self._server_errors >= self.config.poison_tries:
                return self._isolate(batch, f"HTTP {status}: {response.text[:300]}")
        reason = f"HTTP {status}: {response.text[:300]}"
        if status in (401, 403):
            reason += " (check INGEST_TOKEN against the ingest app's token; events are kept)"
        level = logging.WARNING if status >= 500 or status == 429 else logging.ERROR
        return self._failed(reason, retry_after_s(response.headers.get("Retry-After")), level)

    def _settle(self, batch: Batch, verdicts: list[tuple[str, str | None]]) -> None:
        """Count what ingest answered, log and drop the invalid, and move the spool past it."""
        for event, (status, error) in zip(batch.events, verdicts, strict=True):
            if status in _DELIVERED:
                self._counters.sent += 1
                self._counters.duplicates += status == "duplicate"
            else:
                self._drop(batch.run_id, event, f"ingest rejected it as invalid: {error}")
        self._spool.ack(batch)
        self._failures = 0
        self._server_errors = 0
        self._limit = min(self._max_batch, self._limit * 2)
        with self._progress:
            self._progress.notify_all()

    def _drop(self, run_id: str, event: dict[str, Any], why: str) -> None:
        """Dead-letter an event that can never be delivered, and say so in its run's history
        (unless it is itself such a notice: no notice about a notice)."""
        self._counters.dropped_invalid += 1
        log.error("dead-lettered event %s (%s, seq %s) of run %s: %s",
                  event.get("id"), event.get("type"), event.get("seq"), run_id, why)
        try:
            self._spool.dead_letter(run_id, event, why)
        except OSError:
            self._counters.spool_errors += 1
            log.exception("could not write the dead letter of event %s", event.get("id"))
        if is_dead_letter_notice(event):
            return
        seq = event.get("seq")
        if isinstance(seq, int) and seq > 0:
            self.stream(run_id, attempt_of(seq)).emit(
                "ai.run.log", level="warning",
                message=f"event {event.get('id')} ({event.get('type')}, seq {seq}) was dead-lettered on the pod: {why}"[:2000],
                kv={"deadLetter": True, "eventId": str(event.get("id")), "type": str(event.get("type")),
                    "file": str(self._spool.directory / DEAD_LETTERS)})

    def _isolate(self, batch: Batch, reason: str) -> float:
        """A batch keeps breaking ingest: halve it to find the event that does; that event
        alone, once found, is dead-lettered and the rest flow. Each split is progress: the
        backoff starts again from its base."""
        self._server_errors = 0
        self._failures = 0
        return self._halve_or_drop(
            batch, f"ingest failed {self.config.poison_tries} times on a batch of {len(batch)} events ({reason})",
            f"ingest answered {reason} {self.config.poison_tries} times in a row")

    def _too_large(self, batch: Batch) -> float:
        """413: halve the batch; a single event too large for ingest can never go: drop it."""
        return self._halve_or_drop(batch, f"ingest refused {len(batch)} events ({len(batch.body)} bytes) as too large",
                                   f"413 Payload Too Large ({len(batch.body)} bytes)")

    def _halve_or_drop(self, batch: Batch, why: str, why_alone: str) -> float:
        """Send half as many events at a time; a single event that still fails is dead-lettered
        with `why_alone`. Never waits: the smaller batch goes at once."""
        if len(batch) > 1:
            self._limit = max(1, len(batch) // 2)
            log.warning("%s; sending %d at a time", why, self._limit)
            return 0.0
        self._settle(batch, [("invalid", why_alone)])
        return 0.0

    def _failed(self, reason: str, retry_after: float | None, level: int) -> float:
        """Count a failed try and return how long to wait: Retry-After if given, else backoff."""
        self._failures += 1
        self._counters.retries += 1
        if retry_after is not None:
            delay = min(retry_after, self.config.max_retry_after_s)
        else:
            delay = self.config.backoff.delay(self._failures)
        log.log(level, "sending events to %s failed (%s); %d events wait in the spool; retry %d in %.2fs",
                self.url, reason, self._spool.backlog, self._failures, delay)
        return delay


def _milestone(events: list[dict[str, Any]]) -> str | None:
    """The trace context of the batch's first step or outcome event: only those POSTs are traced
    in the run's trace (`events.ROUTINE_TYPES`)."""
    return next((e.get(TRACE_FIELD) for e in events if e.get("type") not in ROUTINE_TYPES), None)


def _verdicts(response: requests.Response, count: int) -> list[tuple[str, str | None]]:
    """(status, error) for each line of the batch, from ingest's batch answer. Raises ValueError
    if the answer does not cover every line: the batch is then sent again (ingest dedups)."""
    answer = response.json()
    results = answer.get("results") if isinstance(answer, dict) else None
    if not isinstance(results, list):
        raise ValueError("no 'results' list")
    verdicts: dict[int, tuple[str, str | None]] = {}
    for position, result in enumerate(results):
        index = result.get("index", position) if isinstance(result, dict) else None
        status = result.get("status") if isinstance(result, dict) else None
        if not isinstance(index, int) or status not in (*_DELIVERED, "invalid"):
            raise ValueError(f"result {result!r} has no line index or a status other than accepted, duplicate, invalid")
        verdicts[index] = (status, result.get("error"))
    missing = [i for i in range(count) if i not in verdicts]
    if missing:
        raise ValueError(f"no result for lines {missing[:10]} of {count}")
    return [verdicts[i] for i in range(count)]


def _network_reason(exc: requests.RequestException) -> str:
    """The root cause ("Connection refused"), not requests' three nested wrappers."""
    cause = exc.args[0] if exc.args else exc
    cause = getattr(cause, "reason", cause)  # urllib3's MaxRetryError wraps the real error
    return f"{type(exc).__name__}: {cause}"
