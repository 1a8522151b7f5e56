"""The one failure classifier: an exception -> (code, retryable), driven by a table.

Matching is by class name along the exception's MRO (so torch need not be importable here)
and then by message pattern, in table order; the first rule that matches wins.
Unknown errors are not retryable: retrying a bug burns GPU hours and hides it.
"""

from __future__ import annotations

import re
import traceback as tb
from dataclasses import dataclass


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
    Rule("Timeout", True, ("TimeoutError", "Timeout", "ReadTimeout", "ConnectTimeout", "ExecutionTimeout", "NetworkTimeout"), r"timed out"),
    Rule("ConnectionError", True, ("ConnectionError", "ConnectionFailure", "AutoReconnect")),
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
