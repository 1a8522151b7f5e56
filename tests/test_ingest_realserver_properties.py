"""Rule 3 on the real server: the property of test_ingest_properties, a few examples on FerretDB
(bulk writes, insert races and query semantics as a MongoDB-wire server has them)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from pymongo.database import Database

from orchestrator import db as dbmod
from tests.scenarios import Scenario, check_order_independence, scenarios


@pytest.fixture(scope="module")
def second_db(real_db: Database) -> Iterator[Database]:
    """A sibling of `real_db` on the same server for the shuffled delivery (each example uses
    its own run id, so examples never see each other's documents)."""
    name = f"{real_db.name}_b"
    database = real_db.client[name]
    dbmod.ensure_indexes(database)
    yield database
    real_db.client.drop_database(name)


#: Ten examples in all, with larger batches: FerretDB takes about a millisecond per update, and
#: a retried run has twice the events.
_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large]
_BATCHES = (5, 40)


@settings(max_examples=7, deadline=None, suppress_health_check=_HEALTH)
@given(scenario=scenarios(attempts=(1,), batch_sizes=_BATCHES))
def test_one_attempt_in_any_order_gives_the_same_documents_on_the_real_server(
    real_db: Database, second_db: Database, scenario: Scenario
) -> None:
    check_order_independence(real_db, second_db, scenario)


@settings(max_examples=3, deadline=None, suppress_health_check=_HEALTH)
@given(scenario=scenarios(attempts=(2,), batch_sizes=_BATCHES))
def test_a_retried_run_in_any_order_gives_the_same_documents_on_the_real_server(
    real_db: Database, second_db: Database, scenario: Scenario
) -> None:
    check_order_independence(real_db, second_db, scenario)
