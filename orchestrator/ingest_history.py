"""The status history entries of the changes an ingest batch made.

Ingest runs a batch's status updates as guarded updates among its other writes, so it learns
which changes they made by working them out: from the status the batch found, its updates in the
order they ran, by the same rule as their filters (`runs.event_sources`). Each change is one
entry in `orchestrator.status_history`, keyed by the seq of the event that made it, so a resent
batch records nothing twice.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from pymongo.database import Database

from orchestrator import runs, status_history
from orchestrator.events import attempt_of
from orchestrator.statuses import RunStatus


class Asserted(NamedTuple):
    """The status one event of a batch asserts (its guarded update), and what the event was."""

    target: str
    what: str
    late_outcome: bool = False


def _event_steps(found: dict[str, Any], mine: dict[int, Asserted]) -> list[tuple[int, str, str]]:
    """The changes (seq, from, to) a batch's status updates make, in the order ingest ran them,
    to a run found as `found`: the same rule as `event_status_update`'s filter."""
    status, attempt = found.get("status"), int(found.get("attempt") or 0)
    steps: list[tuple[int, str, str]] = []
    for seq, what in mine.items():
        if attempt_of(seq) == attempt and status in runs.event_sources(RunStatus(what.target), what.late_outcome):
            steps.append((seq, str(status), what.target))
            status = what.target
    return steps


def record_event_changes(
    db: Database, before: dict[str, dict[str, Any]], asserted: dict[tuple[str, int], Asserted], at: datetime,
) -> None:
    """After ingest applied a batch: each status change an event of the batch made gets its
    history entry, keyed by that event's seq, so it is recorded once.

    `before`: the runs as the batch found them; `asserted`: (run, seq) -> what that event asserts,
    in the order ingest ran the updates. When the run ended where those updates, run in that order
    from `before`, lead, each step is an entry (STARTING -> RUNNING -> AUTO_VALIDATING ->
    AWAITING_HUMAN in one batch is three). Otherwise another writer moved the run meanwhile: the
    batch records one entry for the change its last update made, if it made it. A resent batch
    whose first try made changes but failed before recording them (the database died between)
    finds the run where that try left it, and records those changes first (`_record_first_try`)."""
    for run_id in sorted({run for run, _ in asserted}):
        after = db.runs.find_one({"_id": run_id}, {"status": 1, "statusSeq": 1, "attempt": 1})
        if after is None:
            continue
        found = before.get(run_id) or {}
        mine = {seq: what for (run, seq), what in asserted.items() if run == run_id}
        attempt = int(after.get("attempt") or 0)
        first = _record_first_try(db, run_id, found, mine, at)
        steps = _event_steps(found, mine)
        if not (steps and (steps[-1][0], steps[-1][2]) == (after.get("statusSeq"), after["status"])):
            steps = _last_change(found, after, mine)
        _record(db, run_id, steps, mine, attempt, at, first)


def _record(db: Database, run_id: str, steps: list[tuple[int, str, str]], mine: dict[int, Asserted], attempt: int,
            at: datetime, first: int = 0) -> int:
    """One entry per step (seq, from, to), keyed by its seq, numbered from `first`; how many."""
    for step, (seq, old, new) in enumerate(steps, start=first):
        status_history.record(db, run_id, f"s{seq}", before=old, after=new, by="ingest", step=step, attempt=attempt,
                              reason=mine[seq].what, at=at)
    return len(steps)


def _record_first_try(db: Database, run_id: str, found: dict[str, Any], mine: dict[int, Asserted],
                      at: datetime) -> int:
    """When the run's last status change was made by an event of this batch and is not recorded,
    an earlier try of this batch made it: record the steps from where the history ends to it.
    Returns how many entries that is (the next `step`)."""
    seq, status = found.get("statusSeq"), found.get("status")
    if not isinstance(seq, int):
        return 0
    made = mine.get(seq)
    if made is None or made.target != status or status_history.recorded(db, run_id, f"s{seq}"):
        return 0
    start = status_history.last_status(db, run_id)
    if start is None or start == status:
        return 0
    steps = _event_steps({"status": start, "attempt": found.get("attempt")}, mine)
    ends = [i for i, (s, _, to) in enumerate(steps) if (s, to) == (seq, status)]
    steps = steps[: ends[0] + 1] if ends else [(seq, start, str(status))]
    return _record(db, run_id, steps, mine, int(found.get("attempt") or 0), at)


def _last_change(found: dict[str, Any], after: dict[str, Any], mine: dict[int, Asserted]) -> list[tuple[int, str, str]]:
    """The change the batch's last status update made, if it made one (the run moved meanwhile);
    none when another writer made it (theirs to record) or nothing changed."""
    seq = after.get("statusSeq")
    if not isinstance(seq, int):
        return []
    made = mine.get(seq)
    if made is None or made.target != after["status"] or found.get("status") == after["status"]:
        return []
    return [(seq, str(found.get("status")), after["status"])]
