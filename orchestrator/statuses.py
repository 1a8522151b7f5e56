"""The run and stage status tables. Every write of `runs.status` is made by `orchestrator.runs`,
whose guarded updates take their allowed sources from `TRANSITIONS` (`sources_of`).

The main path is QUEUED -> SCHEDULED -> STARTING -> RUNNING -> AUTO_VALIDATING -> AWAITING_HUMAN
-> HUMAN_VALIDATED, or HUMAN_REJECTED (a person's review decides between the two, from
AWAITING_HUMAN only). A status may skip forward along that path (events can arrive out of order,
and a fast worker's `ai.run.started` may land before its claim write), never move backwards
except by the explicit back-edges below.
"""

from __future__ import annotations

from enum import StrEnum

from orchestrator.errors import TransitionError


class RunStatus(StrEnum):
    QUEUED = "QUEUED"
    SCHEDULED = "SCHEDULED"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    AUTO_VALIDATING = "AUTO_VALIDATING"
    AWAITING_HUMAN = "AWAITING_HUMAN"
    HUMAN_VALIDATED = "HUMAN_VALIDATED"
    HUMAN_REJECTED = "HUMAN_REJECTED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"


class StageStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"


MAIN_PATH: tuple[RunStatus, ...] = (
    RunStatus.QUEUED,
    RunStatus.SCHEDULED,
    RunStatus.STARTING,
    RunStatus.RUNNING,
    RunStatus.AUTO_VALIDATING,
    RunStatus.AWAITING_HUMAN,
    RunStatus.HUMAN_VALIDATED,
)

TERMINAL: frozenset[RunStatus] = frozenset(
    {RunStatus.HUMAN_VALIDATED, RunStatus.HUMAN_REJECTED, RunStatus.FAILED, RunStatus.CANCELED}
)
#: The terminal statuses as stored, sorted: what queries and counts of the history use.
TERMINAL_VALUES: tuple[str, ...] = tuple(sorted(s.value for s in TERMINAL))
#: The other statuses, in the table's order: the runs in flight (few, whatever the history).
IN_FLIGHT_VALUES: tuple[str, ...] = tuple(s.value for s in RunStatus if s not in TERMINAL)

#: The two ends of a person's review of a run in AWAITING_HUMAN.
REVIEWED: frozenset[RunStatus] = frozenset({RunStatus.HUMAN_VALIDATED, RunStatus.HUMAN_REJECTED})

#: Statuses in which a worker holds the run (it may hold a SCHEDULED one too, before ingest has
#: applied its `ai.run.started`; the sweeper judges that claim the same way).
ACTIVE: frozenset[RunStatus] = frozenset(
    {RunStatus.STARTING, RunStatus.RUNNING, RunStatus.AUTO_VALIDATING}
)

#: Back-edges, each with the one reason it exists.
_BACK_EDGES: dict[RunStatus, frozenset[RunStatus]] = {
    # The sweeper requeues a run whose worker is gone (a SCHEDULED one too: the worker died
    # between its claim and its first event), or whose pod had to stop; a retryable failure
    # of an active run requeues it.
    RunStatus.SCHEDULED: frozenset({RunStatus.QUEUED}),
    RunStatus.STARTING: frozenset({RunStatus.QUEUED}),
    RunStatus.RUNNING: frozenset({RunStatus.QUEUED}),
    RunStatus.AUTO_VALIDATING: frozenset({RunStatus.QUEUED}),
    # Explicit reset or automatic retry of an ended run.
    RunStatus.FAILED: frozenset({RunStatus.QUEUED}),
    RunStatus.CANCELED: frozenset({RunStatus.QUEUED}),
}


def _build_table() -> dict[RunStatus, frozenset[RunStatus]]:
    table: dict[RunStatus, frozenset[RunStatus]] = {}
    for index, status in enumerate(MAIN_PATH):
        allowed: set[RunStatus] = set(MAIN_PATH[index + 1 :])
        if status not in TERMINAL:
            allowed |= {RunStatus.FAILED, RunStatus.CANCELED}
        allowed |= _BACK_EDGES.get(status, frozenset())
        table[status] = frozenset(allowed)
    # A rejection is a decision about the result, so it is not on the path a status skips along.
    table[RunStatus.AWAITING_HUMAN] |= {RunStatus.HUMAN_REJECTED}
    table[RunStatus.HUMAN_REJECTED] = frozenset()
    for status in (RunStatus.FAILED, RunStatus.CANCELED):
        table[status] = _BACK_EDGES[status]
    return table


#: status -> the statuses it may move to.
TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = _build_table()


def can_transition(current: str, target: str) -> bool:
    """True when the table allows `current` -> `target` (a status never "moves" to itself)."""
    return RunStatus(target) in TRANSITIONS[RunStatus(current)]


def check_transition(current: str, target: str) -> None:
    """Raise `TransitionError` naming both statuses when the move is not allowed."""
    if not can_transition(current, target):
        allowed = ", ".join(sorted(TRANSITIONS[RunStatus(current)])) or "nothing (terminal)"
        raise TransitionError(f"run status cannot move from {current} to {target}; from {current} it may move to {allowed}")


def sources_of(target: str) -> list[str]:
    """Every status that may move to `target`: the guard for a status-conditional update."""
    return sorted(s.value for s, allowed in TRANSITIONS.items() if RunStatus(target) in allowed)
