"""The retry policy: which failures are worth another attempt, when the next attempt may start,
and how long to wait between tries of one call.

- `classify`: an exception -> (code, retryable), driven by a table. Matching is by class name
  along the exception's MRO (so torch need not be importable here), then by message pattern, in
  table order; the first rule that matches wins. Unknown errors are not retryable: retrying a
  bug burns GPU hours and hides it.
- `after_failure`: requeue or fail a run whose attempt failed. Ingest decides it for a worker's
  `ai.run.failed`, the sweeper for a worker that went silent; both ask here.
- `Backoff`: waits between tries of one call (artifact uploads, the event sender's POSTs).
"""

from __future__ import annotations

import random
import re
import traceback as tb
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

from orchestrator.db import BACKEND_DOWN_PATTERN


@dataclass(frozen=True)
class Rule:
    code: str
    retryable: bool
    classes: tuple[str, ...] = ()
    pattern: str | None = None


#: Checked in order. Classes are names anywhere in the exception's MRO.
RULES: tuple[Rule, ...] = (
    Rule("CudaOutOfMemory", True, ("OutOfMemoryError",), r"CUDA out of memory|CUDA error: out of memory"),
    Rule("MaxIterationsReached", False, ("MaxIterationsReached",), r"max(imum)? iterations reached"),
    Rule("AllNodesBuggy", False, ("AllNodesBuggy",), r"all nodes (are )?buggy"),
    Rule("InvalidIdea", False, ("InvalidIdea",)),
    Rule("UnknownPipeline", False, ("UnknownPipeline",)),
    Rule("PipelineUnavailable", False, ("PipelineUnavailable",)),
    Rule("ArtifactUploadFailed", True, ("StorageError",)),
    Rule("Timeout", True, ("TimeoutError", "Timeout", "ReadTimeout", "ConnectTimeout", "ExecutionTimeout",
                           "NetworkTimeout"), r"timed out"),
    Rule("ConnectionError", True, ("ConnectionError", "ConnectionFailure", "AutoReconnect"), BACKEND_DOWN_PATTERN),
    Rule("MissingFile", False, ("FileNotFoundError",)),
    Rule("PermissionDenied", False, ("PermissionError",)),
)

#: Longest traceback kept on the run document, in characters (the tail is the useful part).
MAX_TRACEBACK = 20_000


@dataclass(frozen=True)
class Failure:
    code: str
    message: str
    retryable: bool
    traceback: str


def classify(exc: BaseException) -> Failure:
    names = {cls.__name__ for cls in type(exc).__mro__}
    message = str(exc) or type(exc).__name__
    trace = "".join(tb.format_exception(exc))[-MAX_TRACEBACK:]
    for rule in RULES:
        if names.intersection(rule.classes) or (rule.pattern and re.search(rule.pattern, message, re.IGNORECASE)):
            return Failure(rule.code, message, rule.retryable, trace)
    return Failure(type(exc).__name__, message, False, trace)


#: A retryable failure's next attempt waits this long (seconds) after the failure; each later
#: one twice as long, up to the cap: a pod that keeps hitting a transient fault backs off.
RUN_BACKOFF_S = 30
RUN_BACKOFF_MAX_S = 600


def doubling_s(first_s: float, failures: int, cap_s: float = float("inf")) -> float:
    """The wait after the `failures`-th failure in a row when each wait doubles the one before:
    `first_s`, 2 * `first_s`, ..., at most `cap_s`. For waits that must be predictable (a
    run's requeue, a notification's next try), where `Backoff` adds jitter."""
    return min(first_s * 2 ** min(max(failures, 1) - 1, 62), cap_s)


def run_backoff_s(attempt: int) -> int:
    """Seconds a retryable failure of `attempt` waits before the run may be dispatched again."""
    return int(doubling_s(RUN_BACKOFF_S, attempt, RUN_BACKOFF_MAX_S))


@dataclass(frozen=True)
class AfterFailure:
    """What becomes of a run whose attempt failed: requeued (not before `not_before`) or failed."""

    requeue: bool
    not_before: datetime | None = None


def after_failure(attempt: int, max_attempts: int, *, retryable: bool, at: datetime, wait: bool = True) -> AfterFailure:
    """Requeue when the failure is retryable and attempts are left, else fail.

    A function of its arguments alone, so an event applied twice decides the same way. `wait`
    is False for the sweeper's requeue of a lost worker: nothing suggests that the next pod
    would meet the same fault, and the run already sat out the lease."""
    if not retryable or attempt >= max_attempts:
        return AfterFailure(requeue=False)
    return AfterFailure(requeue=True, not_before=at + timedelta(seconds=run_backoff_s(attempt)) if wait else None)


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter: after the n-th failure in a row, wait a uniformly
    random time in [0, min(cap_s, base_s * 2**(n-1))], so that many clients that failed together
    do not all retry together. Used by the artifact uploads and the event sender."""

    base_s: float = 0.2
    cap_s: float = 30.0

    def delay(self, failures: int) -> float:
        ceiling = min(self.cap_s, self.base_s * 2 ** min(max(failures - 1, 0), 62))
        return random.uniform(0.0, ceiling)


def retry_after_s(value: str | None, now: datetime | None = None) -> float | None:
    """A Retry-After header in seconds from now: delta-seconds or an HTTP date; None if absent
    or unreadable. A date in the past means 0."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
