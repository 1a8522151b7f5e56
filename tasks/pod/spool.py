"""The worker's durable event spool: one append-only NDJSON file per run, read back in order.

Every event the worker emits is appended here before anything tries to send it, and stays until
ingest has acknowledged it, so a failed POST, an ingest outage of any length or a worker restart
loses nothing, and the backlog lives on disk, not in RAM.

Layout in the spool directory, per run (the run id percent-encoded into a file name):

- `{run}.ndjson`: the events, one JSON object a line, in emit order. Append-only.
- `{run}.ack`: the byte offset up to which every line was delivered (or dropped as invalid),
  replaced atomically (write a temporary file, then rename) after each delivered batch.
- `{run}.closed`: present once the run's stream was closed; the three files are removed when a
  closed run is fully delivered. A file left by a previous process counts as closed (that
  process is gone), so a killed attempt's files go too once delivered.
- `.lock`: held (flock) by the one process that owns the directory.
- `dead-letters.jsonl`: events that can never be delivered (ingest refused them, or they keep
  breaking ingest), one `{"at", "run_id", "reason", "event"}` object a line, kept for a person.

Writes go to the OS with `os.write` as soon as `append` is called, so they survive the process
being killed (SIGKILL, OOM); they are not fsynced, so a kernel crash or power loss can lose the
last seconds. A line torn by a kill mid-write is cut off when the spool is next opened.

Thread safety: `append` may be called from any thread; `read`, `ack` and `collect` from one
sender thread.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from orchestrator.errors import OrchestratorError
from orchestrator.events import attempt_of

log = logging.getLogger(__name__)

#: Bytes read at a time when scanning a file (line counts, seq scan, torn-tail search). Memory
#: used by a scan is one chunk, whatever the file size.
_CHUNK_BYTES = 1 << 20
_EVENTS = ".ndjson"
_ACK = ".ack"
_CLOSED = ".closed"
_LOCK = ".lock"
DEAD_LETTERS = "dead-letters.jsonl"


class SpoolError(OrchestratorError):
    """The spool directory cannot be used (held by another process, not writable)."""


@dataclass(frozen=True)
class Batch:
    """Consecutive complete lines of one run, from `start` to `end` (byte offsets).

    `events[i]` is `lines[i]` decoded; undecodable lines between `start` and `end` were skipped
    and are counted in `consumed` so that acknowledging the batch moves past them too.
    """

    run_id: str
    start: int
    end: int
    lines: list[bytes] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    consumed: int = 0

    @property
    def body(self) -> bytes:
        """The lines as an NDJSON request body."""
        return b"".join(self.lines)

    def __len__(self) -> int:
        return len(self.events)


class _RunLog:
    """One run's files and counters. `lock` guards the fd, `end`, `unsent` and `removed`."""

    def __init__(self, directory: Path, run_id: str):
        stem = quote(run_id, safe="")
        self.run_id = run_id
        self.path = directory / f"{stem}{_EVENTS}"
        self.ack_path = directory / f"{stem}{_ACK}"
        self.closed_path = directory / f"{stem}{_CLOSED}"
        self.lock = threading.Lock()
        self.fd: int | None = None
        self.end = _complete_length(self.path)
        self.acked = min(_read_ack(self.ack_path), self.end)
        self.unsent = _count_lines(self.path, self.acked, self.end)
        self.closed = self.closed_path.exists()
        self.removed = False

    def append(self, line: bytes) -> bool:
        """Write one line; False if the log was removed meanwhile (the caller opens a new one)."""
        with self.lock:
            if self.removed:
                return False
            if self.fd is None:
                self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                _write_all(self.fd, line)
            except OSError:
                _truncate_quietly(self.fd, self.end)  # so the next line does not start mid-line
                raise
            self.end += len(line)
            self.unsent += 1
            return True

    def release(self) -> None:
        with self.lock:
            if self.fd is not None:
                os.close(self.fd)
                self.fd = None


class Spool:
    """The spool directory of one worker process; see the module docstring."""

    def __init__(self, directory: str | Path, *, lock_timeout_s: float = 5.0):
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._lock_fd: int | None = _lock_directory(self.directory, lock_timeout_s)
        except OSError as exc:
            raise SpoolError(f"cannot use {self.directory} as the event spool (SPOOL_DIR): {exc}") from exc
        self._lock = threading.Lock()
        self._logs: dict[str, _RunLog] = {}
        self._open_existing()
        self.collect()

    # -- writing (any thread) ---------------------------------------------------------------
    def append(self, run_id: str, line: bytes) -> None:
        """Append one encoded event (ending in a newline) to the run's file. Raises OSError."""
        while not self._log(run_id).append(line):
            pass  # removed by `collect` between lookup and write: the next lookup makes a new file

    def close_run(self, run_id: str) -> None:
        """Mark the run closable: its files go once everything in them is delivered."""
        run = self._log(run_id)
        if not run.closed:
            run.closed_path.touch()
            run.closed = True

    # -- reading and acknowledging (the sender thread) ----------------------------------------
    @property
    def backlog(self) -> int:
        """Events appended and not yet acknowledged, over every run."""
        with self._lock:
            return sum(run.unsent for run in self._logs.values())

    @property
    def backlog_bytes(self) -> int:
        """Bytes of the events in `backlog`: what the spool holds on disk for ingest."""
        with self._lock:
            return sum(max(0, run.end - run.acked) for run in self._logs.values())

    def unsent_runs(self) -> list[str]:
        """Runs with lines not yet acknowledged, in the order they were first opened."""
        with self._lock:
            return [run.run_id for run in self._logs.values() if run.end > run.acked]

    def read(self, run_id: str, max_events: int = 50, max_bytes: int = 1 << 20) -> Batch:
        """The next unacknowledged lines of a run: at most `max_events`, and at most `max_bytes`
        unless a single line is larger (it comes alone). Only this batch is held in memory."""
        run = self._log(run_id)
        start, end = run.acked, run.end
        if end > start and not run.path.exists():
            log.error("event spool: %s was deleted from outside; its %d unsent events are lost", run.path, run.unsent)
            with self._lock:
                self._forget(run)  # the next append starts a new file at offset 0
            return Batch(run_id, 0, 0)
        lines: list[bytes] = []
        events: list[dict[str, Any]] = []
        consumed, position, size = 0, start, 0
        for line in _lines(run.path, start, end):
            if len(events) >= max_events or (lines and size + len(line) > max_bytes):
                break
            position += len(line)
            consumed += 1
            event = _decode(line, run.path, position)
            if event is not None:
                lines.append(line)
                events.append(event)
                size += len(line)
        return Batch(run_id, start, position, lines, events, consumed)

    def ack(self, batch: Batch) -> None:
        """Record that every line of `batch` was delivered or dropped; persists the offset."""
        run = self._logs.get(batch.run_id)
        if run is None:
            return
        with run.lock:
            if run.removed or batch.end <= run.acked:
                return
            run.acked = batch.end
            run.unsent = max(0, run.unsent - batch.consumed)
        _write_atomically(run.ack_path, str(batch.end).encode())

    def collect(self) -> list[str]:
        """Remove the files of closed, fully delivered runs; return their run ids."""
        with self._lock:
            done = [run for run in self._logs.values() if run.closed and run.acked >= run.end]
            for run in done:
                self._forget(run)
        return [run.run_id for run in done]

    def dead_letter(self, run_id: str, event: dict[str, Any], reason: str) -> None:
        """Keep an undeliverable event, with why, in the directory's dead-letter file."""
        record = {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "run_id": run_id, "reason": reason,
                  "event": event}
        with open(self.directory / DEAD_LETTERS, "a") as f:
            f.write(json.dumps(record, default=str) + "\n")

    def last_seq(self, run_id: str, attempt: int) -> int:
        """The highest `seq` of this attempt in the run's file, 0 if none: a stream re-opened
        after a restart continues from there. Reads the whole file, one chunk at a time."""
        with self._lock:
            run = self._logs.get(run_id)
        if run is None:
            return 0
        highest = 0
        for line in _lines(run.path, 0, run.end):
            event = _decode(line, run.path, None)
            seq = event.get("seq") if event else None
            if isinstance(seq, int) and attempt_of(seq) == attempt:
                highest = max(highest, seq)
        return highest

    def close(self) -> None:
        """Close every file and release the directory lock. A later `append` reopens its file."""
        with self._lock:
            runs = list(self._logs.values())
        for run in runs:
            run.release()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- internals ------------------------------------------------------------------------------
    def _log(self, run_id: str) -> _RunLog:
        run = self._logs.get(run_id)  # lock-free on the hot path: a dict lookup is atomic
        if run is not None and not run.removed:
            return run
        if not run_id:
            raise ValueError("run_id must be a non-empty string")
        with self._lock:
            run = self._logs.get(run_id)
            if run is None or run.removed:
                run = self._logs[run_id] = _RunLog(self.directory, run_id)
            return run

    def _forget(self, run: _RunLog) -> None:
        """Delete a run's files and entry; an `append` racing with this writes a new file.
        The caller holds `self._lock`."""
        with run.lock:
            run.removed = True
            if run.fd is not None:
                os.close(run.fd)
                run.fd = None
            for path in (run.path, run.ack_path, run.closed_path):
                path.unlink(missing_ok=True)
        self._logs.pop(run.run_id, None)

    def _open_existing(self) -> None:
        """Pick up every run file a previous process left, and remove stray bookkeeping files.
        That process is gone (this one holds the directory's lock now), so none of its streams
        will be written again: each counts as closed, and goes once delivered, even where a
        kill kept the stream from being closed."""
        for path in sorted(self.directory.iterdir(), key=_mtime):
            name = path.name
            if name.endswith(_EVENTS):
                run_id = unquote(name[: -len(_EVENTS)])
                run = self._logs[run_id] = _RunLog(self.directory, run_id)
                if not run.closed:
                    run.closed_path.touch()
                    run.closed = True
            elif name.endswith(".tmp") or (
                name.endswith((_ACK, _CLOSED)) and not path.with_suffix(_EVENTS).exists()
            ):
                path.unlink(missing_ok=True)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _lock_directory(directory: Path, timeout_s: float) -> int:
    """Hold an exclusive flock on the directory: two processes appending to the same run file
    would each track wrong offsets. The kernel drops the lock when the process dies."""
    fd = os.open(directory / _LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                raise SpoolError(
                    f"the event spool {directory} is in use by another process (waited {timeout_s}s); "
                    "give each worker process its own SPOOL_DIR or run one worker process per spool."
                ) from None
            time.sleep(0.05)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _truncate_quietly(fd: int, length: int) -> None:
    try:
        os.ftruncate(fd, length)
    except OSError:
        log.exception("could not cut a partly written line off the event spool")


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _read_ack(path: Path) -> int:
    try:
        return max(0, int(path.read_text().strip() or 0))
    except FileNotFoundError:
        return 0
    except ValueError:
        log.warning("event spool: %s is unreadable; the run's events are sent again (ingest dedups)", path)
        return 0


def _complete_length(path: Path) -> int:
    """The length of the file up to its last newline; a torn tail after it is cut off."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return 0
    end = size
    with open(path, "rb") as handle:
        while end > 0:
            begin = max(0, end - _CHUNK_BYTES)
            handle.seek(begin)
            newline = handle.read(end - begin).rfind(b"\n")
            if newline >= 0:
                end = begin + newline + 1
                break
            end = begin
    if end < size:
        log.warning("event spool: cut %d bytes of a partly written line off the end of %s", size - end, path)
        os.truncate(path, end)
    return end


def _lines(path: Path, start: int, end: int) -> Iterator[bytes]:
    """The lines between two offsets (`end` is a line boundary), read one at a time."""
    with open(path, "rb") as handle:
        handle.seek(start)
        position = start
        while position < end:
            line = handle.readline(end - position)
            if not line:
                return  # the file is shorter than `end` says: cut by hand; nothing more to read
            position += len(line)
            yield line


def _count_lines(path: Path, start: int, end: int) -> int:
    count = 0
    if end <= start:
        return 0
    with open(path, "rb") as handle:
        handle.seek(start)
        remaining = end - start
        while remaining > 0:
            chunk = handle.read(min(remaining, _CHUNK_BYTES))
            if not chunk:
                break
            count += chunk.count(b"\n")
            remaining -= len(chunk)
    return count


def _decode(line: bytes, path: Path, offset: int | None) -> dict[str, Any] | None:
    """One line as an event, or None (logged) if it is not a JSON object."""
    try:
        event = json.loads(line)
    except ValueError:
        event = None
    if isinstance(event, dict):
        return event
    if offset is not None:
        log.warning("event spool: skipped an unreadable line ending at byte %d of %s", offset, path)
    return None
