"""A run named by the start of its id, as people copy it from a narrow table or a log line.

Run ids are strings (a uuid4's 36 characters, `runs.new_run_document`), too long to type. The CLI
takes any unambiguous prefix; `resolve_run_id` is the one place that decides what it names:

- the exact id first (an equality on `_id`, which every server serves from its index; FerretDB
  pushes it down to its backend);
- else the runs whose id starts with the prefix, as a range on `_id`
  (`{"$gte": p, "$lt": p + "\\uffff"}`), never a regex, limited to a few: MongoDB answers it from
  the `_id` index; FerretDB v1 evaluates ranges in its Go code (docs/ferretdb.md), which reads the
  runs once, no more than a regex would;
- one match is the run; none is `NotFound`; more than one is `AmbiguousRunId` listing them.

A prefix shorter than `MIN_PREFIX` is refused (`RunIdTooShort`) before any query: "a" or "2" would
match a large share of the runs, and a typo of one character should not pick a run to cancel.
The range ends at U+FFFF, so an id whose next character lies beyond it is not matched; run ids
are ASCII.
"""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING
from pymongo.database import Database

from orchestrator.errors import NotFound, OrchestratorError

#: The shortest prefix taken: 4 hex digits narrow 1,000 runs to about one.
MIN_PREFIX = 4
#: Candidates an ambiguity names (one more is read, to say that there are more).
MAX_CANDIDATES = 10


class RunIdError(OrchestratorError):
    """A run id the caller gave cannot name one run for a reason other than "no such run"."""


class RunIdTooShort(RunIdError):
    """A prefix too short to be taken (`MIN_PREFIX`)."""


class AmbiguousRunId(RunIdError):
    """A prefix that more than one run's id starts with; `candidates` holds some of them."""

    def __init__(self, given: str, candidates: list[str], more: bool):
        self.given = given
        self.candidates = candidates
        listed = ", ".join(candidates) + (", ..." if more else "")
        super().__init__(f"run id prefix {given!r} matches {'more than ' if more else ''}{len(candidates)} runs: "
                         f"{listed}; give more characters")


def resolve_run_id(db: Database, given: str) -> str:
    """The id of the one run `given` names: its full id, or an unambiguous prefix of it.

    Raises `RunIdTooShort`, `AmbiguousRunId` (both `RunIdError`) or `NotFound`."""
    given = given.strip()
    if db.runs.find_one({"_id": given}, {"_id": 1}) is not None:
        return given
    if len(given) < MIN_PREFIX:
        raise RunIdTooShort(f"run id {given!r} is too short: give the full id or at least {MIN_PREFIX} of its "
                            "first characters")
    found = [str(doc["_id"]) for doc in _starting_with(db, given)]
    if not found:
        raise NotFound(f"no run with id {given!r} or an id starting with it")
    if len(found) > 1:
        raise AmbiguousRunId(given, found[:MAX_CANDIDATES], more=len(found) > MAX_CANDIDATES)
    return found[0]


def _starting_with(db: Database, prefix: str) -> Any:
    query = {"_id": {"$gte": prefix, "$lt": prefix + "\uffff"}}
    return db.runs.find(query, {"_id": 1}).sort("_id", ASCENDING).limit(MAX_CANDIDATES + 1)
