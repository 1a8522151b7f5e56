"""The list of runs, newest first, one page at a time: what `GET /api/runs` and the console's
runs page show, with the filters both offer (status, pipeline, words of the title).

Order is (createdAt desc, _id desc), so runs created on the same millisecond still have one
order. A page is read a day at a time (`run_days`): an indexed equality on every server, where
one sort of every run reads the whole history on FerretDB.

A page is asked for as "strictly after this key" (`Cursor`) rather than by offset, so a
run created while someone pages never shifts later pages into duplicates or gaps. The cursor a
client sees is opaque: URL-safe base64 of the JSON `[createdAt as ISO 8601 or null, _id,
"str" | "oid"]` of the last run of the page.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from pymongo.database import Database

from orchestrator import run_days, safe_json, schema
from orchestrator.errors import OrchestratorError
from orchestrator.runs import in_statuses
from orchestrator.statuses import TERMINAL_VALUES, RunStatus
from orchestrator.utc import as_utc

SORT = [("createdAt", -1), ("_id", -1)]
_NO_TIME = datetime.min.replace(tzinfo=UTC)
#: Hypotheses a title search looks at: bounds the `$in` of the runs query that follows.
MAX_TITLE_MATCHES = 500
#: The longest title search accepted (a title is at most 500 characters).
MAX_SEARCH = 200


class BadFilter(OrchestratorError, ValueError):
    """A filter or cursor no page can be made from; `field` names the parameter."""

    def __init__(self, field: str, reason: str):
        super().__init__(reason)
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class RunFilter:
    """Which runs a page holds. Empty fields filter nothing."""

    statuses: tuple[str, ...] = ()
    pipeline: str | None = None
    #: Case-insensitive words of the hypothesis title, matched as one substring.
    title: str | None = None

    def __post_init__(self) -> None:
        for status in self.statuses:
            if status not in RunStatus.__members__:
                raise BadFilter("status", f"{status!r} is not a run status; use one of {', '.join(RunStatus)}")
        for name, value in (("title", self.title), ("pipeline", self.pipeline)):
            if value is not None and len(value) > MAX_SEARCH:
                raise BadFilter(name, f"a {name} filter is at most {MAX_SEARCH} characters")
            if value is not None and safe_json.text_errors(value):
                raise BadFilter(name, f"a {name} filter must be plain text (no NUL, no lone surrogate)")


def page(db: Database, wanted: RunFilter, after: str | None, limit: int) -> tuple[list[dict[str, Any]], str | None]:
    """One page of runs and the cursor of the next page (None on the last). Each run carries the
    `title` of its hypothesis. Raises `BadFilter` for a cursor this module did not make."""
    query = _query(db, wanted)
    if query is None:
        return [], None
    cursor = decode_cursor(after) if after else None
    if wanted.statuses and set(wanted.statuses).isdisjoint(TERMINAL_VALUES):
        found = _in_flight(db, query, wanted.statuses, cursor, limit + 1)
    elif schema.keyed_by_day(db):
        found = _by_day(db, query, cursor, limit + 1)
    else:  # a database of an earlier release, before `manage-runs migrate` keyed its runs by day
        if cursor is not None:
            query = {"$and": [query, _older_than(*cursor)]} if query else _older_than(*cursor)
        found = list(db.runs.find(query).sort(SORT).limit(limit + 1))
    runs = found[:limit]
    with_titles(db, runs)
    return runs, encode_cursor(runs[-1]) if len(found) > limit else None


def _by_day(db: Database, query: dict[str, Any], cursor: tuple[datetime | None, Any] | None,
            want: int) -> list[dict[str, Any]]:
    """Up to `want` runs in `SORT` order, read a day at a time, newest day first, from the
    cursor's day on: each read is an equality on `createdDay` with the filter's own fields beside
    it, at the top level where FerretDB pushes them down (a `$and` would hide them)."""
    run_days.stamp_queued(db)  # a frontend's run no dispatcher has seen yet is listed at once
    start = None
    if cursor is not None:
        start = run_days.day_of(cursor[0]) if cursor[0] is not None else run_days.UNDATED
    found: list[dict[str, Any]] = []
    for day in run_days.days(db):
        if start is not None and day > start:
            continue
        per_day = {**query, run_days.FIELD: day}
        if cursor is not None and day == start:
            per_day.update(_older_than(*cursor))
        found.extend(db.runs.find(per_day).sort(SORT).limit(want - len(found)))
        if len(found) >= want:
            break
    return found


def _in_flight(db: Database, query: dict[str, Any], statuses: tuple[str, ...],
               cursor: tuple[datetime | None, Any] | None, want: int) -> list[dict[str, Any]]:
    """Runs in statuses that hold only work in flight (no terminal one): few, so each status is
    read whole by equality and sorted here, where walking the days would ask every day of the
    history for the one running run."""
    found = list(in_statuses(db, statuses, query))
    found.sort(key=_sort_key, reverse=True)
    if cursor is not None:
        last = _sort_key({"createdAt": cursor[0], "_id": cursor[1]})
        found = [run for run in found if _sort_key(run) < last]
    return found[:want]


def _sort_key(run: dict[str, Any]) -> tuple[bool, datetime, bool, str]:
    """`SORT` as a key for Python's sort, reversed: a missing createdAt lowest (BSON's null), and
    among equal times an ObjectId above a string id (BSON's type order), each by its own order."""
    created = run.get("createdAt")
    when = as_utc(created) if isinstance(created, datetime) else None
    run_id = run["_id"]
    return when is not None, when or _NO_TIME, isinstance(run_id, ObjectId), str(run_id)


def with_titles(db: Database, runs: list[dict[str, Any]]) -> None:
    """Set each run's `title` from its hypothesis, one lookup by `_id` per hypothesis (an
    equality every supported server answers from its primary key)."""
    titles: dict[Any, str | None] = {}
    for run in runs:
        key = run.get("hypothesisId")
        if key not in titles:
            found = db.hypotheses.find_one({"_id": key}, {"title": 1}) if key is not None else None
            titles[key] = found.get("title") if found else None
        run["title"] = titles[key]


def _query(db: Database, wanted: RunFilter) -> dict[str, Any] | None:
    """The runs filter; None when the title search matched no hypothesis (no run can match)."""
    query: dict[str, Any] = {}
    if len(wanted.statuses) == 1:
        query["status"] = wanted.statuses[0]
    elif wanted.statuses:
        query["status"] = {"$in": list(wanted.statuses)}
    if wanted.pipeline:
        query["pipeline"] = wanted.pipeline
    if wanted.title and wanted.title.strip():
        pattern = {"$regex": re.escape(wanted.title.strip()), "$options": "i"}
        ids = [h["_id"] for h in db.hypotheses.find({"title": pattern}, {"_id": 1}).limit(MAX_TITLE_MATCHES)]
        if not ids:
            return None
        query["hypothesisId"] = {"$in": ids}
    return query


# --- the cursor -------------------------------------------------------------------------------


def _exact_utc(value: datetime) -> str:
    """ISO 8601 UTC with every digit the value has: the cursor compares createdAt for equality,
    and a store that keeps microseconds (mongomock) must not lose them to rounding."""
    return as_utc(value).isoformat()


def encode_cursor(run: dict[str, Any]) -> str:
    """The opaque cursor after `run`: its sort key, in a form that survives a URL."""
    created = run.get("createdAt")
    key = [
        _exact_utc(created) if isinstance(created, datetime) else None,
        str(run["_id"]),
        "oid" if isinstance(run["_id"], ObjectId) else "str",
    ]
    raw = json.dumps(key, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> tuple[datetime | None, Any]:
    """(createdAt, _id) from a cursor `encode_cursor` made; `BadFilter` otherwise."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, run_id, kind = safe_json.loads(base64.urlsafe_b64decode(padded.encode()))
        when = datetime.fromisoformat(created) if created is not None else None
        if when is not None:
            when = as_utc(when)
        if not isinstance(run_id, str) or safe_json.text_errors(run_id):
            raise ValueError("the run id is not storable text")
        return when, ObjectId(run_id) if kind == "oid" else run_id
    except (ValueError, TypeError, OverflowError, binascii.Error, InvalidId):
        raise BadFilter("cursor", "not a cursor this server returned; start again without it") from None


def _older_than(created: datetime | None, run_id: Any) -> dict[str, Any]:
    """Runs strictly after (created, run_id) in `SORT` order. Runs without createdAt sort last
    (null is the lowest BSON value), so they follow every dated run."""
    if created is None:
        return {"createdAt": None, "_id": {"$lt": run_id}}
    return {"$or": [
        {"createdAt": {"$lt": created}},
        {"createdAt": created, "_id": {"$lt": run_id}},
        {"createdAt": None},
    ]}
