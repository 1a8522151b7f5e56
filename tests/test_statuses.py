import pytest

from orchestrator.errors import TransitionError
from orchestrator.statuses import MAIN_PATH, TERMINAL, TRANSITIONS, RunStatus, can_transition, check_transition, sources_of


def test_a_run_can_leave_scheduled_for_running_the_old_tables_bug():
    assert can_transition("SCHEDULED", "RUNNING")
    assert can_transition("SCHEDULED", "STARTING")


def test_every_status_on_the_main_path_moves_only_forward_or_to_an_end():
    for index, status in enumerate(MAIN_PATH):
        for earlier in MAIN_PATH[:index]:
            if earlier != RunStatus.QUEUED:
                assert not can_transition(status, earlier), (status, earlier)


def test_any_non_terminal_status_can_fail_or_be_canceled():
    for status in RunStatus:
        if status not in TERMINAL:
            assert can_transition(status, "FAILED") and can_transition(status, "CANCELED")


def test_ended_runs_move_only_back_to_queued_by_reset_or_retry():
    assert TRANSITIONS[RunStatus.FAILED] == {RunStatus.QUEUED}
    assert TRANSITIONS[RunStatus.CANCELED] == {RunStatus.QUEUED}
    assert TRANSITIONS[RunStatus.HUMAN_VALIDATED] == frozenset()


def test_an_illegal_move_names_both_statuses_and_the_allowed_ones():
    with pytest.raises(TransitionError, match="from HUMAN_VALIDATED to RUNNING; from HUMAN_VALIDATED it may move to nothing"):
        check_transition("HUMAN_VALIDATED", "RUNNING")


def test_sources_of_gives_the_guard_of_a_status_conditional_update():
    assert sources_of("SCHEDULED") == ["QUEUED"]
    assert "RUNNING" in sources_of("AUTO_VALIDATING") and "AWAITING_HUMAN" not in sources_of("AUTO_VALIDATING")
