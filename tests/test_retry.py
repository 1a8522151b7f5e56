"""The retry policy: classification of failures, requeue-or-fail, and backoff between tries."""

from datetime import UTC, datetime, timedelta

import pytest
from pymongo.errors import OperationFailure

from orchestrator.retry import AfterFailure, Backoff, after_failure, classify, run_backoff_s

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class OutOfMemoryError(RuntimeError):
    """Stands in for torch.cuda.OutOfMemoryError, which matches by class name."""


class MaxIterationsReached(Exception):
    pass


@pytest.mark.parametrize(
    ("exc", "code", "retryable"),
    [
        (OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "CudaOutOfMemory", True),
        (RuntimeError("CUDA error: out of memory"), "CudaOutOfMemory", True),
        (TimeoutError("read timed out"), "Timeout", True),
        (ConnectionRefusedError("refused"), "ConnectionError", True),
        (OperationFailure("failed to connect to `user=ferretdb database=ferretdb`: connection refused", code=1),
         "ConnectionError", True),
        (OperationFailure("unknown operator: $foo", code=2), "OperationFailure", False),
        (MaxIterationsReached("stage 2"), "MaxIterationsReached", False),
        (RuntimeError("All nodes are buggy in stage 3"), "AllNodesBuggy", False),
        (FileNotFoundError("idea.json"), "MissingFile", False),
        (PermissionError("/data"), "PermissionDenied", False),
        (KeyError("surprise"), "KeyError", False),
    ],
)
def test_the_table_classifies_known_failures_and_unknown_ones_are_not_retryable(exc, code, retryable):
    failure = classify(exc)
    assert (failure.code, failure.retryable) == (code, retryable)
    assert failure.message


def test_the_traceback_is_kept_for_the_run_document():
    try:
        raise ValueError("boom")
    except ValueError as exc:
        failure = classify(exc)
    assert "ValueError: boom" in failure.traceback and "test_retry.py" in failure.traceback


def test_run_backoff_doubles_per_attempt_up_to_the_cap() -> None:
    assert [run_backoff_s(a) for a in (1, 2, 3, 10)] == [30, 60, 120, 600]


def test_a_retryable_failure_with_attempts_left_is_requeued_after_the_backoff() -> None:
    assert after_failure(2, 3, retryable=True, at=T0) == AfterFailure(requeue=True, not_before=T0 + timedelta(seconds=60))


def test_the_sweepers_requeue_of_a_lost_worker_does_not_wait() -> None:
    assert after_failure(1, 3, retryable=True, at=T0, wait=False) == AfterFailure(requeue=True, not_before=None)


@pytest.mark.parametrize(("attempt", "max_attempts", "retryable"), [(3, 3, True), (4, 3, True), (1, 3, False)])
def test_a_failure_without_attempts_left_or_not_retryable_fails_the_run(attempt, max_attempts, retryable) -> None:
    assert after_failure(attempt, max_attempts, retryable=retryable, at=T0) == AfterFailure(requeue=False)


def test_backoff_waits_a_random_time_below_a_doubling_capped_ceiling() -> None:
    backoff = Backoff(base_s=1.0, cap_s=5.0)
    for failures, ceiling in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (100, 5.0)):
        delays = [backoff.delay(failures) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling / 2  # jittered over the whole range, not stuck at 0
