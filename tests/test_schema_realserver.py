"""Records keyed by (source, id) and the migration, on the real server."""

from __future__ import annotations

import copy

import pytest
from pymongo.database import Database

from orchestrator import schema
from orchestrator.events import record_id
from orchestrator.ingest import ACCEPTED
from tests.ingest_helpers import SHA, Worker, apply, insert_run

pytestmark = pytest.mark.realserver


def test_same_ids_from_two_sources_are_kept_and_an_old_database_migrates(real_db: Database) -> None:
    run_id = insert_run(real_db, status="RUNNING")
    a = Worker(run_id, source="worker://pod-a")
    events = [a.event("ai.artifact.registered", key=f"runs/{run_id}/1/f.png", bytes=1, sha256=SHA,
                      content_type="image/png", kind="figure"),
              a.event("ai.validation.auto_completed", verdict="pass")]
    twins = copy.deepcopy(events)
    for twin in twins:
        twin["source"] = "worker://pod-b"
    assert [o.status for o in apply(real_db, events + twins)] == [ACCEPTED] * 4
    for name in schema.RECORDS:
        assert real_db[name].count_documents({"runId": run_id}) == (4 if name == "events" else 2), name
    # Turn pod-b's records back into the previous release's shape, then migrate.
    for name in schema.RECORDS:
        doc = real_db[name].find_one({"runId": run_id, "source": "worker://pod-b"})
        real_db[name].delete_one({"_id": doc["_id"]})
        old = {k: v for k, v in doc.items() if k != "eventId"} | {"_id": doc["eventId"]}
        if name != "events":
            del old["source"]
        real_db[name].insert_one(old)
    real_db[schema.META].delete_many({})
    assert schema.check(real_db) == 1
    assert schema.migrate(real_db) == {"events": 1, "artifacts": 1, "validations": 1, "deadLetterNotices": 0,
                                       "runsKeyedByDay": 0, "statusHistoryDated": 0, "notificationsDated": 0}
    for name in schema.RECORDS:
        docs = list(real_db[name].find({"runId": run_id}))
        expected = ["worker://pod-a", "worker://pod-b"] * (2 if name == "events" else 1)
        assert sorted(d["source"] for d in docs) == sorted(expected), name
        assert all(d["_id"] == record_id(d["source"], d["eventId"]) for d in docs)
    assert schema.check(real_db) == schema.SCHEMA_VERSION
