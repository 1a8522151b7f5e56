"""This process and the ones below it, from /proc: what the fence ends when a step will not stop,
and whom a worker's main process tells that the pod is stopping."""

from __future__ import annotations

import logging
import os
import signal

#: Exit code of a pool child ended by its fence (EX_SOFTWARE).
FENCED_EXIT = 70


def children_of(pid: int) -> list[int]:
    """The direct children of `pid` (a Celery worker's pool children), from /proc, sorted."""
    return sorted(_children_by_parent().get(pid, []))


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, from /proc (children first found, then theirs)."""
    parents = _children_by_parent()
    found, frontier = [], [pid]
    while frontier:
        children = parents.get(frontier.pop(), [])
        found += children
        frontier += children
    return found


def _children_by_parent() -> dict[int, list[int]]:
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()  # the command name may hold spaces
        if len(fields) > 1:
            parents.setdefault(int(fields[1]), []).append(int(entry))
    return parents


def end_this_process() -> None:
    """SIGKILL every process this one started, then exit at once (no clean-up can be trusted
    to return: the step that did not stop is still running in this process)."""
    for pid in descendants(os.getpid()):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    logging.shutdown()
    os._exit(FENCED_EXIT)
