"""The sweeper's rules: resend a lost dispatch, end an expired lease (requeue or WorkerLost) only
past the clock-skew allowance and never right after an outage, end a claim whose worker died
before STARTING or never reported an outcome, drop orphaned event queues; several sweepers
decide each run once."""

from datetime import timedelta

import pytest

from orchestrator import claims, runs
from orchestrator.dispatcher import dispatch_once
from orchestrator.sweeper import Sweeper, sweep_once
from orchestrator.utc import utcnow
from tests.fakes import FakeSender
from tests.helpers import make_settings, queued_run


def _claimed(db, pod="pod-a", lease_s=90.0, max_attempts=3, status=None):
    """A run dispatched once and its attempt 1 claimed by `pod`; `status` as ingest would have
    set it from the worker's events (SCHEDULED while none has been applied)."""
    run_id = queued_run(db, max_attempts=max_attempts)
    dispatch_once(db, FakeSender())
    claims.claim_attempt(db, run_id, 1, pod, lease_s)
    if status is not None:
        db.runs.update_one({"_id": run_id}, {"$set": {"status": status}})
    return run_id


def _running_with_expired_lease(db, max_attempts=3):
    run_id = _claimed(db, "pod-dead", 0.01, max_attempts, status="RUNNING")
    db.claims.update_one({"_id": f"{run_id}:1"}, {"$set": {"leaseExpiresAt": utcnow() - timedelta(hours=1)}})
    return run_id


def _expire_by(db, run_id, seconds):
    db.claims.update_one({"_id": f"{run_id}:1"}, {"$set": {"leaseExpiresAt": utcnow() - timedelta(seconds=seconds)}})


@pytest.fixture
def settings():
    return make_settings(SCHEDULE_TIMEOUT_S="1")



def test_sweeper_resends_a_scheduled_run_nobody_claimed(mock_db, settings):
    run_id = queued_run(mock_db)
    dispatch_once(mock_db, FakeSender())
    mock_db.runs.update_one({"_id": run_id}, {"$set": {"scheduledAt": utcnow() - timedelta(seconds=5)}})
    sender = FakeSender()
    assert sweep_once(mock_db, settings, sender)["redispatched"] == 1
    assert sender.sent == [(run_id, 1, "gpu", 5)]
    assert sweep_once(mock_db, settings, sender)["redispatched"] == 0, "scheduledAt was refreshed"



def test_sweeper_leaves_a_claimed_scheduled_run_alone(mock_db, settings):
    run_id = queued_run(mock_db)
    dispatch_once(mock_db, FakeSender())
    mock_db.runs.update_one({"_id": run_id}, {"$set": {"scheduledAt": utcnow() - timedelta(seconds=5)}})
    claims.claim_attempt(mock_db, run_id, 1, "pod", 90)
    assert sweep_once(mock_db, settings, FakeSender())["redispatched"] == 0



def test_an_expired_lease_requeues_the_run_keeping_its_attempt(mock_db, settings):
    run_id = _running_with_expired_lease(mock_db)
    assert sweep_once(mock_db, settings, FakeSender())["recovered"] == 1
    run = mock_db.runs.find_one({"_id": run_id})
    assert (run["status"], run["attempt"]) == ("QUEUED", 1)
    assert run["error"]["code"] == "WorkerLost" and run["attempts"][0]["code"] == "WorkerLost"
    assert mock_db.claims.find_one({"_id": f"{run_id}:1"})["releasedAt"] is not None
    history = mock_db.events.find_one({"runId": run_id, "source": "orchestrator://sweeper"})
    assert "pod-dead" in history["data"]["message"]
    assert not claims.renew_lease(mock_db, run_id, 1, "pod-dead", 90), "the old worker finds its lease gone"



def test_an_expired_lease_on_the_last_attempt_fails_the_run_as_worker_lost(mock_db, settings):
    run_id = _running_with_expired_lease(mock_db, max_attempts=1)
    sweep_once(mock_db, settings, FakeSender())
    run = mock_db.runs.find_one({"_id": run_id})
    assert run["status"] == "FAILED" and run["error"]["code"] == "WorkerLost" and run["finishedAt"]



def test_two_sweepers_decide_a_lost_run_once(mock_db, settings):
    run_id = _running_with_expired_lease(mock_db)
    first = sweep_once(mock_db, settings, FakeSender())
    second = sweep_once(mock_db, settings, FakeSender())
    assert (first["recovered"], second["recovered"]) == (1, 0)
    assert len(mock_db.runs.find_one({"_id": run_id})["attempts"]) == 1



def test_a_live_lease_is_left_alone(mock_db, settings):
    _claimed(mock_db, "pod", 90, status="RUNNING")
    assert sweep_once(mock_db, settings, FakeSender()) == {"redispatched": 0, "recovered": 0, "eventQueuesDropped": 0,
                                                           "podsPruned": 0, "runCountsRefreshed": 1,
                                                           "dedupRecordsPruned": 0}



def test_the_sweeper_drops_event_queues_whose_consumer_is_gone(mock_db, settings):
    from bson import ObjectId

    old = ObjectId.from_datetime(utcnow() - timedelta(minutes=10))
    mock_db.messages.insert_many([
        {"_id": old, "queue": "celeryev.dead", "payload": "{}"},
        {"queue": "celeryev.dead", "payload": "{}"},
        {"queue": "celeryev.live", "payload": "{}"},
        {"_id": ObjectId.from_datetime(utcnow() - timedelta(minutes=11)), "queue": "gpu", "payload": "{}"},
    ])
    mock_db["messages.routing"].insert_many([{"queue": "celeryev.dead", "exchange": "celeryev"},
                                             {"queue": "celeryev.live", "exchange": "celeryev"}])
    assert sweep_once(mock_db, settings, FakeSender())["eventQueuesDropped"] == 1
    assert sorted(mock_db.messages.distinct("queue")) == ["celeryev.live", "gpu"], "task queues are never touched"
    assert mock_db["messages.routing"].distinct("queue") == ["celeryev.live"]


def test_dispatch_and_sweep_decisions_are_counted_for_prometheus(mock_db, settings):
    from prometheus_client import REGISTRY

    def value(name):
        return REGISTRY.get_sample_value(name) or 0.0

    before = {n: value(n) for n in ("orchestrator_dispatched_total", "orchestrator_dispatch_send_failed_total",
                                    "orchestrator_requeued_total", "orchestrator_redispatched_total")}
    queued_run(mock_db)
    dispatch_once(mock_db, FakeSender(fail=True))
    dispatch_once(mock_db, FakeSender())
    _running_with_expired_lease(mock_db)
    sweep_once(mock_db, settings, FakeSender())
    assert value("orchestrator_dispatch_send_failed_total") == before["orchestrator_dispatch_send_failed_total"] + 1
    assert value("orchestrator_dispatched_total") == before["orchestrator_dispatched_total"] + 1
    assert value("orchestrator_redispatched_total") == before["orchestrator_redispatched_total"] + 1
    assert value("orchestrator_requeued_total") == before["orchestrator_requeued_total"] + 1


def test_a_lease_is_judged_only_past_the_clock_skew_allowance(mock_db):
    settings = make_settings(LEASE_S="10", CLOCK_SKEW_S="5")
    run_id = _running_with_expired_lease(mock_db)
    _expire_by(mock_db, run_id, 3)  # over by 3 s: within the 5 s allowance, a pod's clock may be behind
    assert sweep_once(mock_db, settings, FakeSender(), connected_for_s=60)["recovered"] == 0
    _expire_by(mock_db, run_id, 6)
    assert sweep_once(mock_db, settings, FakeSender(), connected_for_s=60)["recovered"] == 1


def test_a_sweeper_connected_for_less_than_a_lease_waits_a_lease_more(mock_db):
    """Right after an outage every lease looks expired; the live workers renew within a beat."""
    settings = make_settings(LEASE_S="10", CLOCK_SKEW_S="5")
    run_id = _running_with_expired_lease(mock_db)
    _expire_by(mock_db, run_id, 8)
    assert sweep_once(mock_db, settings, FakeSender(), connected_for_s=9)["recovered"] == 0
    assert sweep_once(mock_db, settings, FakeSender())["recovered"] == 0, "the CLI's one pass is a cold sweeper"
    _expire_by(mock_db, run_id, 16)
    assert sweep_once(mock_db, settings, FakeSender())["recovered"] == 1


def test_the_dispatcher_s_sweeper_counts_connected_time_and_restarts_it_after_an_error(mock_db):
    settings = make_settings(LEASE_S="10", CLOCK_SKEW_S="0")
    now = [100.0]
    sweeper = Sweeper(mock_db, settings, FakeSender(), clock=lambda: now[0])
    run_id = _running_with_expired_lease(mock_db)
    _expire_by(mock_db, run_id, 5)
    assert sweeper()["recovered"] == 0 and sweeper.connected_for() == 0
    now[0] += 11
    sweeper.disconnected()  # the dispatcher saw the database fail
    assert sweeper()["recovered"] == 0
    now[0] += 11
    assert sweeper()["recovered"] == 1


def test_a_worker_dead_between_claim_and_starting_gets_its_run_requeued(mock_db, settings):
    run_id = _claimed(mock_db, "pod-died", 2)
    _expire_by(mock_db, run_id, 3600)
    assert sweep_once(mock_db, settings, FakeSender())["recovered"] == 1
    run = mock_db.runs.find_one({"_id": run_id})
    assert (run["status"], run["attempt"], run["error"]["code"]) == ("QUEUED", 1, "WorkerLost")
    assert mock_db.claims.find_one({"_id": f"{run_id}:1"})["releasedAt"] is not None
    assert not claims.renew_lease(mock_db, run_id, 1, "pod-died", 90), "that worker, back, cannot renew and stops"
    dispatch_once(mock_db, FakeSender())
    assert mock_db.runs.find_one({"_id": run_id})["attempt"] == 2


def test_a_claim_released_before_starting_requeues_at_once(mock_db, settings):
    run_id = _claimed(mock_db, "pod", 90)
    claims.release(mock_db, run_id, 1, "pod", "not startable")
    assert sweep_once(mock_db, settings, FakeSender())["recovered"] == 1
    assert mock_db.runs.find_one({"_id": run_id})["status"] == "QUEUED"


def test_a_scheduled_run_whose_worker_finished_while_ingest_was_down_waits_for_its_events(mock_db):
    """The worker writes no run document: a run can be SCHEDULED with its attempt done and its
    events in the spool. Its released claim is judged like an active run's, not as never started."""
    settings = make_settings(LEASE_S="10", CLOCK_SKEW_S="5")
    run_id = _claimed(mock_db, "pod-a", 10)
    claims.release(mock_db, run_id, 1, "pod-a", "completed")
    assert sweep_once(mock_db, settings, FakeSender())["recovered"] == 0
    assert mock_db.runs.find_one({"_id": run_id})["status"] == "SCHEDULED"


def test_a_claim_released_as_preempted_is_handed_back_at_once_not_counting_the_attempt(mock_db, settings):
    run_id = _claimed(mock_db, "pod-a", 90, max_attempts=1, status="RUNNING")
    claims.release(mock_db, run_id, 1, "pod-a", claims.PREEMPTED)
    assert sweep_once(mock_db, settings, FakeSender())["recovered"] == 1
    run = mock_db.runs.find_one({"_id": run_id})
    assert (run["status"], run["attempt"], run["maxAttempts"], run.get("error")) == ("QUEUED", 1, 2, None)


def test_a_preempted_attempt_whose_cancel_was_asked_ends_canceled(mock_db, settings):
    run_id = _claimed(mock_db, "pod-a", 90, status="RUNNING")
    claims.request_cancel(mock_db, run_id, 1, by="alice", reason="wrong idea")
    claims.release(mock_db, run_id, 1, "pod-a", claims.PREEMPTED)
    assert sweep_once(mock_db, settings, FakeSender())["recovered"] == 1
    run = mock_db.runs.find_one({"_id": run_id})
    assert (run["status"], run["maxAttempts"], run["error"]["code"]) == ("CANCELED", 3, "HandedBack")
    assert (run["cancel"]["by"], run["cancel"]["reason"]) == ("alice", "wrong idea")


def test_a_pod_stopped_before_its_events_were_delivered_is_still_handed_back(mock_db, settings):
    run_id = _claimed(mock_db, "pod-a", 90, max_attempts=1)
    claims.release(mock_db, run_id, 1, "pod-a", f"{claims.PREEMPTED}; events undelivered")
    assert sweep_once(mock_db, settings, FakeSender())["recovered"] == 1
    run = mock_db.runs.find_one({"_id": run_id})
    assert (run["status"], run["maxAttempts"], run.get("error")) == ("QUEUED", 2, None)


def test_a_claimed_scheduled_run_with_a_live_lease_is_left_alone(mock_db):
    run_id = _claimed(mock_db, "pod-a", 90)
    # Connected for an hour: it may judge leases, and this one is live.
    assert sweep_once(mock_db, make_settings(LEASE_S="90"), FakeSender(), connected_for_s=3600)["recovered"] == 0
    assert mock_db.runs.find_one({"_id": run_id})["status"] == "SCHEDULED"


def test_a_released_claim_without_an_outcome_is_requeued_after_a_lease(mock_db):
    settings = make_settings(LEASE_S="10", CLOCK_SKEW_S="5")
    run_id = _claimed(mock_db, "pod-a", 10, status="RUNNING")
    claims.release(mock_db, run_id, 1, "pod-a", "completed")
    assert sweep_once(mock_db, settings, FakeSender())["recovered"] == 0, "its events may still be on the way"
    mock_db.claims.update_one({"_id": f"{run_id}:1"}, {"$set": {"releasedAt": utcnow() - timedelta(seconds=16)}})
    assert sweep_once(mock_db, settings, FakeSender())["recovered"] == 1
    run = mock_db.runs.find_one({"_id": run_id})
    assert (run["status"], run["error"]["code"]) == ("QUEUED", "NoOutcome")
    assert "completed" in run["error"]["message"]


def test_a_lost_attempt_whose_cancel_was_requested_ends_canceled_not_requeued(mock_db, settings):
    run_id = _running_with_expired_lease(mock_db)
    runs.cancel_run(mock_db, run_id, by="ann", reason="wrong dataset")
    assert sweep_once(mock_db, settings, FakeSender())["recovered"] == 1
    run = mock_db.runs.find_one({"_id": run_id})
    assert (run["status"], run["cancel"]["by"], run["cancel"]["reason"]) == ("CANCELED", "ann", "wrong dataset")
    assert run["error"]["code"] == "WorkerLost" and run["error"]["retryable"] is False and run["finishedAt"]
    sender = FakeSender()
    assert dispatch_once(mock_db, sender) == 0 and sender.sent == []


def test_a_cancel_that_arrives_while_the_sweeper_requeues_a_lost_attempt_still_cancels(mock_db, settings, monkeypatch):
    run_id = _running_with_expired_lease(mock_db)
    real = runs.end_lost_attempt

    def cancel_first(db, run, claim, now, code="WorkerLost", cancel=None):
        runs.cancel_run(db, run_id, by="ann", reason="too late?")  # after the sweeper read the requests
        return real(db, run, claim, now, code=code, cancel=cancel)
    monkeypatch.setattr(runs, "end_lost_attempt", cancel_first)
    sweep_once(mock_db, settings, FakeSender())
    run = mock_db.runs.find_one({"_id": run_id})
    assert (run["status"], run["cancel"]["by"]) == ("CANCELED", "ann")
