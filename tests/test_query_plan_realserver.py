"""Every query a hot path sends is served by an index (docs/queries.md), asked of the server itself.

The hot paths run against a real server with a listener recording every command they send:
the dispatcher's pass, the sweeper's pass, ingest of whole attempts, a worker's claim, renewal
and release, the run list (pages, filters), the overview behind `stats`, a run's page, the
archive. Each recorded filter on a collection that grows with history is then explained:

- FerretDB on PostgreSQL: the filter must be pushed down, and PostgreSQL must be able to answer
  it from an index. Sequential scans are switched off for the server's sessions, so the plan
  shows an index whenever one can serve the filter, whatever the planner would pick for a table
  this small.
- MongoDB (`MONGODB_TEST_URL`): the winning plan must use an index (IXSCAN, or the `_id` fast path).
- FerretDB on SQLite pushes down nothing but `_id`: skipped.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pymongo
import pytest
from pymongo import monitoring

from orchestrator import claims, event_history, index_plan, operations, queries, run_counts, run_days, run_list, seen_retention
from orchestrator import db as dbmod
from orchestrator.dispatcher import dispatch_once
from orchestrator.runs import create_hypothesis_and_run, review_run
from orchestrator.sweeper import sweep_once
from orchestrator.utc import utcnow
from tests.fakes import FakeSender
from tests.helpers import make_settings
from tests.ingest_helpers import Worker, apply, full_run, insert_run
from tests.servers import MongoServer

pytestmark = pytest.mark.realserver

#: Commands whose filter is checked, and where their filters are.
READS = ("find", "count", "distinct", "aggregate", "update", "delete", "findAndModify")
#: Filters no index serves, each with why it is not a hot path.
ALLOWED: dict[tuple[str, str], str] = {}


class Recorder(monitoring.CommandListener):
    def __init__(self) -> None:
        self.commands: list[tuple[str, dict[str, Any]]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name in READS:
            self.commands.append((event.command_name, copy.deepcopy(dict(event.command))))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def filters(name: str, command: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    collection = command[name]
    if name == "find":
        return [(collection, command.get("filter") or {})]
    if name in ("count", "distinct", "findAndModify"):
        return [(collection, command.get("query") or {})]
    if name == "aggregate":
        first = (command.get("pipeline") or [{}])[0]
        return [(collection, first.get("$match") or {})]
    key, part = ("updates", "q") if name == "update" else ("deletes", "q")
    return [(collection, op.get(part) or {}) for op in command.get(key) or []]


def shape(value: Any) -> Any:
    """A filter with its values replaced by their types: one explain per query shape."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value[:1]]
    return value if value is None or isinstance(value, bool) else type(value).__name__


@pytest.fixture(scope="module")
def server() -> Iterator[MongoServer]:
    external = os.environ.get("MONGODB_TEST_URL") or None
    planned = MongoServer(external)
    if planned.backend == "sqlite":
        pytest.skip("FerretDB on SQLite pushes down only _id equality: no other query can use an index there")
    planned.start()
    if planned.postgres is not None:
        planned.postgres.sql("ALTER ROLE ferretdb SET enable_seqscan = off;")
        planned.take_down("ferretdb")  # its pooled sessions began before the setting
        planned.start()
    yield planned
    planned.close()


def _history(db: Any) -> list[str]:
    """Runs that went through whole attempts (succeeded, failed, canceled, reviewed), through ingest."""
    made = []
    for i, outcome in enumerate(["success", "failure", "cancel", "success"] * 4):
        run_id = insert_run(db, status="SCHEDULED")
        run_days.register(db, db.runs.find_one({"_id": run_id})[run_days.FIELD])
        apply(db, full_run(Worker(run_id), outcome=outcome), batch_sizes=[7, 9, 50])
        if outcome == "success" and i % 8 == 0:
            review_run(db, run_id, "accept", by="alice")
        made.append(run_id)
    return made


def _hot_paths(db: Any, made: list[str]) -> None:
    settings = make_settings()
    create_hypothesis_and_run(db, "queued", "idea")
    dispatch_once(db, FakeSender())
    queued = create_hypothesis_and_run(db, "claimed", "idea")[1]
    dispatch_once(db, FakeSender())
    claims.claim_attempt(db, queued, 1, "pod-x", 30.0)
    claims.renew_lease(db, queued, 1, "pod-x", 30.0)
    live = Worker(queued)
    apply(db, full_run(live)[:8], batch_sizes=[4, 4])
    claims.release(db, queued, 1, "pod-x")
    old = utcnow() - timedelta(days=8)
    db.meta.delete_one({"_id": seen_retention.MARKER_ID})
    db.events_seen.insert_one({"source": "s", "eventId": "old", "runId": queued, "processedAt": old,
                               "bucket": seen_retention.bucket_of(old)})
    sweep_once(db, settings, FakeSender())
    run_counts.refresh(db, utcnow())
    first, cursor = run_list.page(db, run_list.RunFilter(), None, 5)
    run_list.page(db, run_list.RunFilter(), cursor, 5)
    run_list.page(db, run_list.RunFilter(statuses=("FAILED", "CANCELED"), pipeline="demo"), None, 5)
    run_list.page(db, run_list.RunFilter(statuses=("RUNNING", "QUEUED")), None, 5)  # in flight: by status
    operations.overview(db)
    queries.pods_seen_last_minute(db, utcnow())
    for run_id in (made[0], made[1]):
        queries.run_detail(db, run_id)
        queries.metric_series(db, run_id)
        queries.event_log(db, run_id, type_="ai.run.log", limit=20)
        queries.events_after(db, run_id, 0)
    event_history.archive_run(db, made[1])
    queries.run_detail(db, made[1])


def _uses_index(explained: dict[str, Any]) -> bool:
    text = json.dumps(explained.get("queryPlanner", explained), default=str)
    if "ferretdbVersion" in json.dumps(explained.get("serverInfo", {}), default=str) or "filterPushdown" in explained:
        return bool(explained.get("filterPushdown")) and '"Index Name"' in text
    return any(stage in text for stage in ('"IXSCAN"', '"IDHACK"', '"EXPRESS_IXSCAN"', '"EXPRESS_IDHACK"'))


def test_every_hot_query_on_a_growing_collection_is_served_by_an_index(server: MongoServer) -> None:
    name = "t_query_plan"
    with pymongo.MongoClient(server.url(name), tz_aware=True) as setup:
        db = setup[name]
        dbmod.ensure_indexes(db)
        made = _history(db)
        recorder = Recorder()
        with pymongo.MongoClient(server.url(name), tz_aware=True, event_listeners=[recorder]) as watched:
            _hot_paths(watched[name], made)
        checked: dict[tuple[str, str], bool] = {}
        for command_name, command in recorder.commands:
            for collection, query in filters(command_name, command):
                key = (collection, json.dumps(shape(query), sort_keys=True))
                if collection in index_plan.BOUNDED or key in checked or key in ALLOWED:
                    continue
                explained = db.command("explain", {"find": collection, "filter": query}, verbosity="queryPlanner")
                checked[key] = _uses_index(explained)
        # The check tells the two apart: a field no index covers is reported as such.
        unindexed = db.command("explain", {"find": "runs", "filter": {"maxAttempts": 3}}, verbosity="queryPlanner")
        assert not _uses_index(unindexed), unindexed
        setup.drop_database(name)
    unserved = sorted(f"{collection}: {query}" for (collection, query), ok in checked.items() if not ok)
    assert not unserved, "queries no index serves:\n" + "\n".join(unserved)
    collections = {collection for collection, _ in checked}
    assert {"runs", "stages", "events", "events_archive", "status_history", "claims", "hypotheses", "artifacts",
            "validations", "events_seen"} <= collections, collections
    assert len(checked) >= 25, sorted(checked)


def test_the_backend_is_told_apart_and_sqlite_is_warned_of_at_start(real_server: MongoServer, real_db: Any) -> None:
    expected = {"postgresql": "postgresql", "sqlite": "sqlite"}.get(real_server.backend)
    assert dbmod.ferretdb_backend(real_db) == expected
    assert (dbmod.SQLITE_WARNING in dbmod.ensure_indexes(real_db)) == (expected == "sqlite")
