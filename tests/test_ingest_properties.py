"""Rule 3 as a property: a realistic run's events, applied in order or shuffled with duplicates,
in batches of any size, give the same documents (receipt timestamps aside).

The generator (tests/scenarios.py) follows the worker (tasks/pod/attempt.py): per attempt `started`, then the
pipeline's stages in order, each with progress, metrics, heartbeats, artifacts and logs; a
later attempt reuses the stages an earlier one completed; an attempt ends in success
(auto-validation), a failure (retryable or not), a cancel, or (not the last) a lost worker.
The run document is where the dispatcher and the claim left it for the last attempt, so the
earlier attempts' events are the late stragglers of a dead or failed worker.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from tests.scenarios import Scenario, check_order_independence, fresh_mock_db, scenarios

_PROPERTY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@_PROPERTY
@given(scenarios(attempts=(1,)))
def test_one_attempt_in_any_order_with_duplicates_gives_the_same_documents(scenario: Scenario) -> None:
    check_order_independence(fresh_mock_db(), fresh_mock_db(), scenario)


@_PROPERTY
@given(scenarios(attempts=(2,)))
def test_a_retried_run_with_late_events_of_its_first_attempt_gives_the_same_documents(scenario: Scenario) -> None:
    check_order_independence(fresh_mock_db(), fresh_mock_db(), scenario)
