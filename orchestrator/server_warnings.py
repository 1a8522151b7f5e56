"""Warnings about what the database server cannot do (FerretDB: no TTL expiry, no change streams),
said once per process through `warn_once`, the one helper every such warning goes through.

Such a limitation is a property of the deployment, not of a request: every process meets it
again at every `ensure_indexes`, and an ingest app or worker may call that more than once. Said
each time, it drowns the warnings that are news (a short try of `manage-runs` printed it in 59 of
63 warnings).

A process that does not want them as warnings at all lowers their level with `at_level` (they
are then logged at that level, and not counted as said, so a later part of the same process
that wants them still warns once). `manage-runs` does so for every command but those where the
limitation matters to the operator (`ops.cli`): each of its calls is a new process, so "once per
process" alone would still nag at every call.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("orchestrator.server")

_said: set[str] = set()
_lock = threading.Lock()
_level = logging.WARNING


def warn_once(key: str, message: str) -> bool:
    """Log `message` as a warning unless the warning `key` was already said in this process; at
    the level `at_level` set instead, if lower (then it is not counted as said). Returns whether
    it was logged."""
    level = _level
    with _lock:
        if key in _said:
            return False
        if level >= logging.WARNING:
            _said.add(key)
    log.log(level, message)
    return True


@contextmanager
def at_level(level: int) -> Iterator[None]:
    """Within the block, server warnings are logged at `level` (e.g. `logging.DEBUG`)."""
    global _level
    before, _level = _level, level
    try:
        yield
    finally:
        _level = before


def forget() -> None:
    """Forget which warnings were said (tests: each starts as a fresh process would)."""
    with _lock:
        _said.clear()
