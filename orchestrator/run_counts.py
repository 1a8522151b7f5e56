"""Runs per status, for `manage-runs stats`, the operations page and the console's run list.

A live status (QUEUED ... AWAITING_HUMAN) holds the runs in flight: few, counted exactly at
every call, one equality count each. A terminal status holds the whole history, and counting it
costs a read of every such run on FerretDB (whose `count` is not pushed down: 0.5 s for 2,000
FAILED runs among 10,000); so those four are counted by the sweeper at most once per
`REFRESH_S` and kept in one `meta` document, and a reader counts them itself only when no
sweeper has for `STALE_S` (a deployment without a dispatcher process). Counting is per day of
creation (`run_days`), and a day whose runs have all ended keeps its counts, so a count reads
the days that changed, not the history.
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from orchestrator import run_days, schema
from orchestrator.statuses import IN_FLIGHT_VALUES, TERMINAL_VALUES, RunStatus
from orchestrator.utc import as_utc, utcnow

META = "meta"
SNAPSHOT_ID = "runCounts"
#: The sweeper recounts terminal statuses this often.
REFRESH_S = 60.0
#: A reader recounts them itself when the stored counts are older than this.
STALE_S = 300.0
#: A settled day's counts are trusted at most this long (between half and all of it, at random,
#: so a year of days does not expire in one pass), then counted again: a bound on any change
#: that did not forget them.
DAY_CACHE_S = 24 * 3600.0


def by_status(db: Database, now: datetime | None = None) -> tuple[dict[str, int], datetime]:
    """({status: runs} for every status, in the status table's order; when the terminal ones
    were counted)."""
    now = now or utcnow()
    final, counted_at = _final_counts(db, now, max_age_s=STALE_S)
    counts = {s.value: final[s.value] if s.value in final else _count(db, s.value) for s in RunStatus}
    return counts, counted_at


def refresh(db: Database, now: datetime | None = None) -> bool:
    """The sweeper's part: recount the terminal statuses when the stored counts are older than
    `REFRESH_S`; whether it did."""
    now = now or utcnow()
    stored = db[META].find_one({"_id": SNAPSHOT_ID})
    if stored is not None and as_utc(stored["at"]) > now - timedelta(seconds=REFRESH_S):
        return False
    _store(db, now)
    return True


def _final_counts(db: Database, now: datetime, max_age_s: float) -> tuple[dict[str, int], datetime]:
    stored = db[META].find_one({"_id": SNAPSHOT_ID})
    if stored is not None and as_utc(stored["at"]) > now - timedelta(seconds=max_age_s):
        counts = stored.get("counts") or {}
        if all(isinstance(counts.get(s), int) for s in TERMINAL_VALUES):
            return {s: int(counts[s]) for s in TERMINAL_VALUES}, as_utc(stored["at"])
    return _store(db, now), now


def _store(db: Database, now: datetime) -> dict[str, int]:
    counts = _by_day(db, now) if schema.keyed_by_day(db) else {status: _count(db, status) for status in TERMINAL_VALUES}
    document: dict[str, Any] = {"counts": counts, "at": now}
    try:
        db[META].replace_one({"_id": SNAPSHOT_ID}, document, upsert=True)
    except DuplicateKeyError:
        pass  # another process stored its count at the same moment: as good as ours
    return counts


def _by_day(db: Database, now: datetime) -> dict[str, int]:
    """The terminal counts as the sum of each day's: a day whose runs have all ended and that is
    older than yesterday keeps its counts (`run_days.keep_counts`; a retry forgets them); the
    others are counted again."""
    totals = dict.fromkeys(TERMINAL_VALUES, 0)
    settled_before = run_days.day_of(now - timedelta(days=1))
    for doc in db[run_days.COLLECTION].find({}):
        day = str(doc["_id"])
        counts = run_days.kept_counts(doc, TERMINAL_VALUES, now)
        if counts is None:
            counts, live = _count_day(db, day)
            if day < settled_before and not live:
                run_days.keep_counts(db, doc, counts, now + timedelta(seconds=DAY_CACHE_S * random.uniform(0.5, 1.0)))
        for status in TERMINAL_VALUES:
            totals[status] += counts[status]
    return totals


def _count_day(db: Database, day: str) -> tuple[dict[str, int], bool]:
    """({terminal status: runs} of one day, whether any of its runs is live), from one indexed
    read of the day's statuses: a run that ends meanwhile is seen live or ended, never neither
    (a count per status and a check for live runs were ten queries a day: seconds for a year)."""
    seen = Counter(str(run.get("status")) for run in db.runs.find({run_days.FIELD: day}, {"status": 1, "_id": 0}))
    return {status: seen[status] for status in TERMINAL_VALUES}, any(seen[s] for s in IN_FLIGHT_VALUES)


def _count(db: Database, status: str) -> int:
    """One equality count: FerretDB pushes the equality down (an index lookup with the GIN
    indexes of `index_plan`), where a `$group` or `$in` over every run would run in its Go code."""
    return db.runs.count_documents({"status": status})
