"""Terminal counts kept per day, on the real server: the generation guard's filters (`$exists`,
an equality on a number) match there as on mongomock, so a settled day is kept and a count taken
before a retry is not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pymongo.database import Database

from orchestrator import run_counts, run_days
from orchestrator.runs import retry_run
from tests.ingest_helpers import insert_run

pytestmark = pytest.mark.realserver


def test_a_settled_day_is_kept_a_retry_forgets_it_and_a_stale_count_is_not_kept(real_db: Database) -> None:
    now = datetime.now(UTC)
    run_id = insert_run(real_db, status="FAILED")  # created on the helpers' fixed day, months ago
    day = real_db.runs.find_one({"_id": run_id})[run_days.FIELD]
    assert run_counts.refresh(real_db, now)
    kept = real_db[run_days.COLLECTION].find_one({"_id": day})
    assert kept["counts"]["FAILED"] == 1  # no generation yet: `$exists: false` matched
    read_before = real_db[run_days.COLLECTION].find_one({"_id": day})
    retry_run(real_db, run_id)
    run_days.keep_counts(real_db, read_before, {"FAILED": 1}, now + timedelta(days=1))  # too late: refused
    assert "counts" not in real_db[run_days.COLLECTION].find_one({"_id": day})
    real_db.runs.update_one({"_id": run_id}, {"$set": {"status": "CANCELED"}})
    later = now + timedelta(seconds=run_counts.REFRESH_S + 1)
    assert run_counts.refresh(real_db, later)
    again = real_db[run_days.COLLECTION].find_one({"_id": day})
    assert again[run_days.GENERATION] == 1 and again["counts"]["CANCELED"] == 1  # kept at generation 1
    counts, _ = run_counts.by_status(real_db, later)
    assert (counts["FAILED"], counts["CANCELED"]) == (0, 1)
