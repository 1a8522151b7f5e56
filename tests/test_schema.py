"""Records keyed by (source, id), the schema version, and `manage-runs migrate`."""

from __future__ import annotations

import copy
import json
import logging
from typing import Any

import pytest
from click.testing import CliRunner

from ops.cli import main as cli
from orchestrator import schema
from orchestrator.db import embedded_client, ensure_indexes
from orchestrator.events import record_id
from orchestrator.ingest import ACCEPTED
from tests.api_helpers import build_app
from tests.ingest_helpers import SHA, Worker, apply, insert_run


def _same_ids_from_two_sources(run_id: str) -> list[dict[str, Any]]:
    """An artifact, a verdict and a log line from pod-a, and events with the same ids from pod-b."""
    a = Worker(run_id, source="worker://pod-a")
    events = [
        a.event("ai.artifact.registered", key=f"runs/{run_id}/1/fig.png", bytes=1, sha256=SHA, content_type="image/png",
                kind="figure"),
        a.event("ai.validation.auto_completed", verdict="pass", scores={"overall": 0.8}),
        a.event("ai.run.log", level="info", message="from a"),
    ]
    twins = copy.deepcopy(events)
    for twin in twins:
        twin["source"] = "worker://pod-b"
    return events + twins


def test_the_same_event_id_from_two_sources_is_two_records_everywhere(mock_db: Any) -> None:
    run_id = insert_run(mock_db, status="RUNNING")
    outcomes = apply(mock_db, _same_ids_from_two_sources(run_id))
    assert [o.status for o in outcomes] == [ACCEPTED] * 6
    for collection in ("events", "artifacts", "validations"):
        sources = sorted(doc["source"] for doc in mock_db[collection].find({"runId": run_id}))
        assert sources == sorted(["worker://pod-a", "worker://pod-b"] * (1 if collection != "events" else 3)), collection
    artifact = mock_db.artifacts.find_one({"source": "worker://pod-b"})
    assert artifact["_id"] == record_id("worker://pod-b", artifact["eventId"])


def _old_release_records(db: Any, run_id: str) -> list[dict[str, Any]]:
    """What the previous release stored: each record keyed by the event id alone."""
    events = _same_ids_from_two_sources(run_id)[:3]
    apply(db, events)
    for name in schema.RECORDS:
        for doc in list(db[name].find({"runId": run_id})):
            db[name].delete_one({"_id": doc["_id"]})
            old = {k: v for k, v in doc.items() if k not in ("eventId",)}
            old["_id"] = doc["eventId"]
            if name != "events":
                old.pop("source")
            db[name].insert_one(old)
    db[schema.META].delete_many({})
    return events


def test_a_database_of_the_previous_release_is_version_1_until_migrated(mock_db: Any, caplog: Any) -> None:
    run_id = insert_run(mock_db, status="RUNNING")
    events = _old_release_records(mock_db, run_id)
    with caplog.at_level(logging.WARNING):
        assert schema.check(mock_db) == 1
    assert "manage-runs migrate" in caplog.text
    moved = schema.migrate(mock_db)
    assert moved == {"events": 3, "artifacts": 1, "validations": 1, "deadLetterNotices": 0, "runsKeyedByDay": 0,
                     "statusHistoryDated": 0, "notificationsDated": 0}
    assert schema.stored_version(mock_db) == schema.SCHEMA_VERSION == schema.check(mock_db)
    for name in schema.RECORDS:
        for doc in mock_db[name].find({"runId": run_id}):
            assert doc["source"] == "worker://pod-a" and doc["_id"] == record_id(doc["source"], doc["eventId"])
    assert {doc["eventId"] for doc in mock_db.events.find({"runId": run_id})} == {e["id"] for e in events}
    assert schema.migrate(mock_db) == {"events": 0, "artifacts": 0, "validations": 0, "deadLetterNotices": 0, "runsKeyedByDay": 0,
                     "statusHistoryDated": 0, "notificationsDated": 0}


def test_an_interrupted_migration_finishes_on_the_next_run(mock_db: Any) -> None:
    run_id = insert_run(mock_db, status="RUNNING")
    _old_release_records(mock_db, run_id)
    old = mock_db.events.find_one({"eventId": {"$exists": False}})
    # Killed between the copy and the delete of one record:
    mock_db.events.insert_one({**old, "_id": record_id(old["source"], old["_id"]), "eventId": old["_id"]})
    artifact = mock_db.artifacts.find_one({"runId": run_id})
    copied = {**artifact, "_id": record_id("worker://pod-a", artifact["_id"]), "source": "worker://pod-a",
              "eventId": artifact["_id"], "migratedFrom": artifact["_id"]}
    mock_db.artifacts.insert_one(copied)
    schema.migrate(mock_db)
    assert mock_db.events.count_documents({"runId": run_id}) == 3
    assert mock_db.events.count_documents({"eventId": {"$exists": False}}) == 0
    assert list(mock_db.artifacts.find({"runId": run_id})) == [copied]


def test_a_migrated_artifact_downloads_by_its_new_id(mock_db: Any, tmp_path: Any) -> None:
    run_id = insert_run(mock_db, status="RUNNING")
    _old_release_records(mock_db, run_id)
    schema.migrate(mock_db)
    detail = build_app(mock_db).test_client().get(f"/api/runs/{run_id}").json
    [artifact] = detail["artifacts"]
    assert artifact["_id"] == record_id("worker://pod-a", artifact["eventId"]) and "~" in artifact["downloadUrl"]


def test_a_fresh_database_is_stamped_with_this_release(mock_db: Any) -> None:
    assert schema.stored_version(mock_db) == schema.SCHEMA_VERSION


def test_every_process_refuses_a_database_newer_than_it_knows(mock_db: Any) -> None:
    mock_db[schema.META].update_one({"_id": "schema"}, {"$set": {"version": schema.SCHEMA_VERSION + 1}})
    with pytest.raises(schema.SchemaError, match="newer than this release knows"):
        ensure_indexes(mock_db)
    with pytest.raises(schema.SchemaError):
        build_app(mock_db)


def test_manage_runs_migrate_and_a_newer_schema_on_the_command_line(monkeypatch: Any) -> None:
    name = "cli_schema"
    monkeypatch.setenv("MONGODB_URL", f"mongomock://localhost/{name}")
    db = embedded_client()[name]
    db.drop_collection(schema.META)
    ensure_indexes(db)
    run_id = insert_run(db, status="RUNNING")
    _old_release_records(db, run_id)
    runner = CliRunner()
    result = runner.invoke(cli, ["--json", "migrate"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"from": None, "to": schema.SCHEMA_VERSION,
                                             "moved": {"events": 3, "artifacts": 1, "validations": 1,
                                                       "deadLetterNotices": 0, "runsKeyedByDay": 0,
                     "statusHistoryDated": 0, "notificationsDated": 0}}
    db[schema.META].update_one({"_id": "schema"}, {"$set": {"version": 99}})
    refused = runner.invoke(cli, ["list"])
    assert refused.exit_code == 2 and "newer than this release knows" in refused.output
    assert "Traceback" not in refused.output
    db.client.drop_database(name)


def test_migration_never_lets_an_old_record_replace_one_of_another_source(mock_db: Any) -> None:
    """Version 1 kept pod-a's artifact under the bare id; this release then stored pod-b's artifact
    with the same id under its own key before the migration ran."""
    run_id = insert_run(mock_db, status="RUNNING")
    both = _same_ids_from_two_sources(run_id)
    apply(mock_db, both)
    for name in ("artifacts", "validations"):
        doc = mock_db[name].find_one({"runId": run_id, "source": "worker://pod-a"})
        mock_db[name].delete_one({"_id": doc["_id"]})
        mock_db[name].insert_one({k: v for k, v in doc.items() if k not in ("source", "eventId")} | {"_id": doc["eventId"]})
    schema.migrate(mock_db)
    for name in ("artifacts", "validations"):
        assert sorted(d["source"] for d in mock_db[name].find({"runId": run_id})) == ["worker://pod-a", "worker://pod-b"]


def test_version_3_flags_the_dead_letter_notices_stored_before_it(mock_db: Any) -> None:
    notice = {"type": "ai.run.log", "runId": "r", "source": "worker://p", "data": {"kv": {"deadLetter": True}}}
    mock_db.events.insert_many([{**notice, "_id": "old", "eventId": "e1"},
                                {**notice, "_id": "plain", "eventId": "e2", "data": {"kv": {}}}])
    mock_db[schema.META].update_one({"_id": "schema"}, {"$set": {"version": 2}})
    moved = schema.migrate(mock_db)
    assert moved["deadLetterNotices"] == 1
    assert [e["_id"] for e in mock_db.events.find({"deadLetter": True})] == ["old"]
    assert schema.stored_version(mock_db) == schema.SCHEMA_VERSION == 3
    assert schema.migrate(mock_db)["deadLetterNotices"] == 0


def test_an_unstamped_database_whose_dispatched_runs_have_no_day_is_version_2(mock_db: Any) -> None:
    from orchestrator import run_days

    mock_db[schema.META].delete_many({})
    insert_run(mock_db, status="QUEUED")
    mock_db.runs.update_many({}, {"$unset": {run_days.FIELD: ""}})  # a frontend's run: readers stamp it
    assert schema.check(mock_db) == schema.SCHEMA_VERSION
    mock_db[schema.META].delete_many({})
    failed = insert_run(mock_db, status="FAILED")
    mock_db.runs.update_one({"_id": failed}, {"$unset": {run_days.FIELD: ""}})  # a run of a release before days
    assert schema.check(mock_db) == 2 and schema.stored_version(mock_db) is None
    with pytest.raises(schema.SchemaError, match="version is 2; run `manage-runs migrate`"):
        schema.require_current(mock_db, "archive")
    schema.migrate(mock_db)
    schema.require_current(mock_db, "archive")


def test_the_migration_dates_the_recent_history_and_flags_archived_dead_letters(mock_db: Any) -> None:
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    recent, old = now - timedelta(hours=2), now - timedelta(days=30)
    mock_db.status_history.insert_many([{"_id": "h1", "runId": "r", "to": "FAILED", "at": recent},
                                        {"_id": "h2", "runId": "r", "to": "FAILED", "at": old},
                                        {"_id": "h3", "runId": "r", "to": "QUEUED", "at": recent, "day": "kept"}])
    mock_db.notifications.insert_one({"_id": "n1", "state": "sent", "createdAt": recent})
    notice = {"runId": "r", "type": "ai.run.log", "source": "s", "data": {"kv": {"deadLetter": True}}}
    mock_db.events_archive.insert_one({"_id": "s|e1", "eventId": "e1", **notice})
    mock_db[schema.META].update_one({"_id": "schema"}, {"$set": {"version": 2}})
    moved = schema.migrate(mock_db)
    assert (moved["statusHistoryDated"], moved["notificationsDated"], moved["deadLetterNotices"]) == (1, 1, 1)
    day = recent.strftime("%Y-%m-%d")
    assert [d.get("day") for d in mock_db.status_history.find(sort=[("_id", 1)])] == [day, None, "kept"]
    assert mock_db.notifications.find_one({"_id": "n1"})["createdDay"] == day
    assert mock_db.events_archive.find_one({"_id": "s|e1"})["deadLetter"] is True
