"""The sweeper's rules: resend a lost dispatch, end an expired lease (requeue or WorkerLost), drop
orphaned event queues; several sweepers decide each run once."""

from datetime import timedelta

import pytest

from orchestrator import claims
from orchestrator.db import utcnow
from orchestrator.dispatcher import dispatch_once
from orchestrator.sweeper import sweep_once
from tests.fakes import FakeSender
from tests.helpers import make_settings, queued_run


def _running_with_expired_lease(db, max_attempts=3):
    run_id = queued_run(db, max_attempts=max_attempts)
    dispatch_once(db, FakeSender())
    claims.claim_attempt(db, run_id, 1, "pod-dead", 0.01)
    db.runs.update_one({"_id": run_id}, {"$set": {"status": "RUNNING"}})
    db.claims.update_one({"_id": f"{run_id}:1"}, {"$set": {"leaseExpiresAt": utcnow() - timedelta(seconds=1)}})
    return run_id


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
    run_id = queued_run(mock_db)
    dispatch_once(mock_db, FakeSender())
    claims.claim_attempt(mock_db, run_id, 1, "pod", 90)
    mock_db.runs.update_one({"_id": run_id}, {"$set": {"status": "RUNNING"}})
    assert sweep_once(mock_db, settings, FakeSender()) == {"redispatched": 0, "recovered": 0, "eventQueuesDropped": 0}



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
                                    "orchestrator_requeued_total")}
    queued_run(mock_db)
    dispatch_once(mock_db, FakeSender(fail=True))
    dispatch_once(mock_db, FakeSender())
    _running_with_expired_lease(mock_db)
    sweep_once(mock_db, settings, FakeSender())
    assert value("orchestrator_dispatch_send_failed_total") == before["orchestrator_dispatch_send_failed_total"] + 1
    assert value("orchestrator_dispatched_total") == before["orchestrator_dispatched_total"] + 2
    assert value("orchestrator_requeued_total") == before["orchestrator_requeued_total"] + 1
