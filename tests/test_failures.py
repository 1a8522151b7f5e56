import pytest

from orchestrator.failures import classify


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
    assert "ValueError: boom" in failure.traceback and "test_failures.py" in failure.traceback
