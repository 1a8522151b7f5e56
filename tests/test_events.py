"""The event catalogue's rules: what a valid event is, how seq names its attempt, what the
builder makes and what the history keeps (orchestrator/events.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from orchestrator.events import (
    CATALOGUE,
    EVENT_TYPES,
    SEQ_BLOCK,
    EventError,
    attempt_of,
    event_time,
    history_record,
    make_event,
    parse_time,
    record_id,
    seq_for,
    validate_event,
)

RUN = "run-ev"


def _event(event_type: str = "ai.run.stage_progress", **data: Any) -> dict[str, Any]:
    data = data or {"stage": "Stage_1", "progress": 0.5}
    return make_event(event_type, RUN, seq_for(1, 1), "worker://pod-a", data, time="2026-03-01T12:00:00.123Z")


def test_seq_numbers_each_attempt_in_its_own_block_and_names_the_attempt() -> None:
    assert seq_for(2, 1) == 2 * SEQ_BLOCK + 1
    assert attempt_of(seq_for(2, 1)) == attempt_of(seq_for(2, 999)) == 2
    assert attempt_of(seq_for(2, 0)) == 2  # the control plane's records of the attempt
    assert seq_for(3, 1) > seq_for(2, SEQ_BLOCK - 1)


def test_the_builder_makes_a_cloudevent_that_validates() -> None:
    event = _event()
    assert event["specversion"] == "1.0" and event["subject"] == f"run/{RUN}"
    assert event["datacontenttype"] == "application/json" and event["data"]["run_id"] == RUN
    assert validate_event(event)["data"] == event["data"]


def test_every_type_of_the_catalogue_has_a_data_schema() -> None:
    assert set(EVENT_TYPES) == set(CATALOGUE) and len(EVENT_TYPES) == 17


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"specversion": "0.3"}, "specversion"),
        ({"type": "ai.run.exploded"}, "type"),
        ({"seq": 0}, "seq"),
        ({"seq": True}, "seq"),
        ({"time": "yesterday"}, "time"),
        ({"subject": "run/someone-else"}, "subject"),
        ({"data": {"run_id": RUN, "stage": "Stage_9", "progress": 0.5}}, "data.stage"),
        ({"data": {"run_id": RUN, "stage": "Stage_1", "progress": 1.5}}, "data.progress"),
        ({"data": {"run_id": RUN, "stage": "Stage_1"}}, "data.progress"),
        ({"Bad_Extension": 1}, "Bad_Extension"),
    ],
)
def test_an_invalid_event_is_refused_naming_the_field(change: dict[str, Any], path: str) -> None:
    event = {**_event(), **change}
    with pytest.raises(EventError) as caught:
        validate_event(event)
    assert path in caught.value.errors, caught.value.errors
    assert isinstance(caught.value, ValueError)  # callers that catch ValueError still catch it


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({"level": "info", "message": "m", "kv": {"a.b": 1}}, "data.kv"),
        ({"level": "info", "message": "m", "kv": {"$where": 1}}, "data.kv"),
        ({"level": "info", "message": "m", "kv": {"n": [[1, 2]]}}, "data.kv.n.0"),
        ({"level": "info", "message": "m", "kv": {"n": 2**64}}, "data.kv.n"),
    ],
)
def test_data_a_mongodb_wire_server_cannot_store_is_refused_up_front(data: dict[str, Any], path: str) -> None:
    with pytest.raises(EventError) as caught:
        validate_event(_event("ai.run.log", **data))
    assert path in caught.value.errors, caught.value.errors


def test_times_with_any_offset_become_utc_and_the_history_keeps_milliseconds() -> None:
    assert parse_time("2026-03-01T13:00:00+01:00") == datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert event_time({"time": "2026-03-01T12:00:00.123456Z"}).microsecond == 123_000


def test_the_history_record_keeps_the_event_and_its_trace_context() -> None:
    event = {**_event(), "traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"}
    received = datetime(2026, 3, 1, 12, 0, 1, tzinfo=UTC)
    record = history_record(validate_event(event), received_at=received)
    assert record["eventId"] == event["id"] and record["runId"] == RUN and record["seq"] == seq_for(1, 1)
    assert record["_id"] == record_id(event["source"], event["id"]) != record_id("worker://other", event["id"])
    assert record["time"] == datetime(2026, 3, 1, 12, 0, 0, 123_000, tzinfo=UTC)
    assert record["receivedAt"] == received and record["traceparent"] == event["traceparent"]
    assert record["data"] == event["data"] and record["type"] == event["type"]
    assert "deadLetter" not in record


def test_a_pods_dead_letter_notice_is_flagged_at_the_top_level_of_its_record() -> None:
    """The dead-letter count is then an indexed equality, not a match inside `data`."""
    notice = _event()
    notice["type"], notice["data"] = "ai.run.log", {"run_id": RUN, "level": "warning", "message": "kept",
                                                      "kv": {"deadLetter": True, "eventId": "e1"}}
    received = datetime(2026, 3, 1, 12, 0, 1, tzinfo=UTC)
    assert history_record(validate_event(notice), received_at=received)["deadLetter"] is True
    notice["data"]["kv"]["deadLetter"] = "yes"  # only the emitter's own boolean counts
    assert "deadLetter" not in history_record(validate_event(notice), received_at=received)


RESULTS = {
    "metric": "validation log-loss (lower is better)",
    "arms": [{"name": "baseline", "mean": 0.68, "stderr": 0.003, "n": 5, "accuracy": 0.56},
             {"name": "adam_optimiser", "mean": 0.47, "stderr": 0.01, "n": 5}],
    "test": {"name": "paired t-test, one-sided", "statistic": 20.1, "df": 4, "p_value": 1.8e-5},
    "effects": {"cohen_dz": 9.0},
}


def test_a_verdict_carries_its_results_apart_from_its_scores_and_ideation_its_mapping() -> None:
    verdict = validate_event(_event("ai.validation.auto_completed", verdict="pass", scores={"overall": 1.0},
                                    results=RESULTS))
    assert verdict["data"]["results"] == RESULTS
    ideas = validate_event(_event("ai.ideation.generated", count=10, top_k=1, chosen="adam_optimiser",
                                  mapping="The demo maps this hypothesis onto adam_optimiser."))
    assert ideas["data"]["chosen"] == "adam_optimiser"
    assert validate_event(_event("ai.ideation.generated", count=1))["data"] == {"run_id": RUN, "count": 1}


@pytest.mark.parametrize(
    ("results", "path"),
    [
        ({**RESULTS, "arms": [{"name": "a", "mean": 0.5, "stderr": -1.0, "n": 5}]}, "data.results.arms.0.stderr"),
        ({**RESULTS, "arms": [{"name": "a", "mean": 0.5, "stderr": 0.1, "n": 0}]}, "data.results.arms.0.n"),
        ({**RESULTS, "arms": [{"name": "a", "mean": float("nan"), "stderr": 0.1, "n": 5}]}, "data.results.arms.0.mean"),
        ({**RESULTS, "test": {"name": "t", "statistic": 2.0, "p_value": 1.5}}, "data.results.test.p_value"),
        ({**RESULTS, "test": {"name": "t"}}, "data.results.test.statistic"),
        ({"arms": []}, "data.results.metric"),
    ],
)
def test_malformed_results_are_refused_naming_the_field(results: dict[str, Any], path: str) -> None:
    with pytest.raises(EventError) as caught:
        validate_event(_event("ai.validation.auto_completed", verdict="pass", results=results))
    assert path in caught.value.errors, caught.value.errors
