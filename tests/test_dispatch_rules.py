"""Unit lane: the dispatcher's ordering and guards, and the sweeper's rules, with a fake sender."""

from datetime import timedelta

import pytest

from orchestrator import claims
from orchestrator.db import utcnow
from orchestrator.runs import create_hypothesis_and_run
from orchestrator.dispatcher import dispatch_once, due_runs
from orchestrator.sweeper import sweep_once
from tests.conftest import make_settings


class FakeSender:
    def __init__(self, fail: bool = False):
        self.sent: list[tuple[str, int, str, int]] = []
        self.fail = fail

    def __call__(self, run_id, attempt, *, queue, priority, task_id):
        if self.fail:
            raise ConnectionError("broker down")
        self.sent.append((run_id, attempt, queue, priority))


def _run(db, priority=5, **kw):
    return create_hypothesis_and_run(db, "t", "idea", priority=priority, **kw)[1]


def test_due_runs_come_highest_priority_first_then_oldest(mock_db):
    low, high, high_later = _run(mock_db, 1), _run(mock_db, 9), _run(mock_db, 9)
    for offset, run_id in enumerate((low, high, high_later)):
        mock_db.runs.update_one({"_id": run_id}, {"$set": {"createdAt": utcnow() + timedelta(seconds=offset)}})
    assert [r["_id"] for r in due_runs(mock_db, utcnow())] == [high, high_later, low]


def test_a_run_whose_not_before_is_in_the_future_waits(mock_db):
    run_id = _run(mock_db)
    mock_db.runs.update_one({"_id": run_id}, {"$set": {"notBefore": utcnow() + timedelta(minutes=5)}})
    assert due_runs(mock_db, utcnow()) == []
    assert [r["_id"] for r in due_runs(mock_db, utcnow() + timedelta(minutes=6))] == [run_id]


def test_dispatch_schedules_the_next_attempt_and_sends_it_to_the_runs_queue(mock_db):
    run_id = _run(mock_db, 7, queue="gpu-a100")
    sender = FakeSender()
    assert dispatch_once(mock_db, sender) == 1
    run = mock_db.runs.find_one({"_id": run_id})
    assert (run["status"], run["attempt"]) == ("SCHEDULED", 1)
    assert run["taskId"] and run["scheduledAt"]
    assert sender.sent == [(run_id, 1, "gpu-a100", 7)]
    assert dispatch_once(mock_db, sender) == 0, "a scheduled run is not sent again"
    assert mock_db.events.count_documents({"runId": run_id, "source": "orchestrator://dispatcher"}) == 1


def test_a_failed_send_puts_the_run_back(mock_db):
    run_id = _run(mock_db)
    assert dispatch_once(mock_db, FakeSender(fail=True)) == 0
    run = mock_db.runs.find_one({"_id": run_id})
    assert (run["status"], run["attempt"]) == ("QUEUED", 0)


def test_a_stale_view_of_the_run_cannot_dispatch_it_twice(mock_db):
    run_id = _run(mock_db)
    stale = due_runs(mock_db, utcnow())
    sender = FakeSender()
    dispatch_once(mock_db, sender)
    from orchestrator.dispatcher import dispatch_run

    assert dispatch_run(mock_db, stale[0], sender) is False
    assert len(sender.sent) == 1 and mock_db.runs.find_one({"_id": run_id})["attempt"] == 1


@pytest.fixture
def settings():
    return make_settings(SCHEDULE_TIMEOUT_S="1")


def test_sweeper_resends_a_scheduled_run_nobody_claimed(mock_db, settings):
    run_id = _run(mock_db)
    dispatch_once(mock_db, FakeSender())
    mock_db.runs.update_one({"_id": run_id}, {"$set": {"scheduledAt": utcnow() - timedelta(seconds=5)}})
    sender = FakeSender()
    assert sweep_once(mock_db, settings, sender)["redispatched"] == 1
    assert sender.sent == [(run_id, 1, "gpu", 5)]
    assert sweep_once(mock_db, settings, sender)["redispatched"] == 0, "scheduledAt was refreshed"


def test_sweeper_leaves_a_claimed_scheduled_run_alone(mock_db, settings):
    run_id = _run(mock_db)
    dispatch_once(mock_db, FakeSender())
    mock_db.runs.update_one({"_id": run_id}, {"$set": {"scheduledAt": utcnow() - timedelta(seconds=5)}})
    claims.claim_attempt(mock_db, run_id, 1, "pod", 90)
    assert sweep_once(mock_db, settings, FakeSender())["redispatched"] == 0


def _running_with_expired_lease(db, max_attempts=3):
    run_id = _run(db, max_attempts=max_attempts)
    dispatch_once(db, FakeSender())
    claims.claim_attempt(db, run_id, 1, "pod-dead", 0.01)
    db.runs.update_one({"_id": run_id}, {"$set": {"status": "RUNNING"}})
    db.claims.update_one({"_id": f"{run_id}:1"}, {"$set": {"leaseExpiresAt": utcnow() - timedelta(seconds=1)}})
    return run_id


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
    run_id = _run(mock_db)
    dispatch_once(mock_db, FakeSender())
    claims.claim_attempt(mock_db, run_id, 1, "pod", 90)
    mock_db.runs.update_one({"_id": run_id}, {"$set": {"status": "RUNNING"}})
    assert sweep_once(mock_db, settings, FakeSender()) == {"redispatched": 0, "recovered": 0, "eventQueuesDropped": 0}


class _Stream:
    """A change stream that yields the given changes, then nothing, like `watch()` with a timeout."""

    def __init__(self, changes, dispatcher):
        self.changes, self.dispatcher, self.resume_token = list(changes), dispatcher, None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def try_next(self):
        if self.changes:
            change = self.changes.pop(0)
            self.resume_token = {"_data": change["token"]}
            return change
        self.dispatcher.stop()
        return None


class _Runs:
    def __init__(self, runs, stream_factory):
        self._runs, self._factory, self.watch_calls = runs, stream_factory, []

    def __getattr__(self, name):
        return getattr(self._runs, name)

    def watch(self, pipeline, resume_after=None, max_await_time_ms=None):
        self.watch_calls.append(resume_after)
        return self._factory()


class _Db:
    def __init__(self, db, runs):
        self._db, self.runs = db, runs

    def __getattr__(self, name):
        return getattr(self._db, name)

    def __getitem__(self, name):
        return self._db[name]


def test_the_change_stream_dispatcher_sends_on_a_change_and_stores_its_resume_token(mock_db):
    from orchestrator.dispatcher import Dispatcher

    run_id = _run(mock_db)
    sender = FakeSender()
    holder = {}
    runs = _Runs(mock_db.runs, lambda: _Stream([{"token": "t1", "operationType": "insert"}], holder["d"]))
    dispatcher = Dispatcher(_Db(mock_db, runs), sender, interval_s=0.01, use_change_stream=True)
    holder["d"] = dispatcher
    dispatcher.run_forever()
    assert sender.sent == [(run_id, 1, "gpu", 5)]
    assert mock_db.dispatcher_state.find_one({"_id": "runs"})["token"] == {"_data": "t1"}

    dispatcher.stopping.clear()
    runs._factory = lambda: _Stream([], dispatcher)
    dispatcher.run_forever()
    assert runs.watch_calls == [None, {"_data": "t1"}], "a restart resumes from the stored token"


def test_dispatch_and_sweep_decisions_are_counted_for_prometheus(mock_db, settings):
    from prometheus_client import REGISTRY

    def value(name):
        return REGISTRY.get_sample_value(name) or 0.0

    before = {n: value(n) for n in ("orchestrator_dispatched_total", "orchestrator_dispatch_send_failed_total",
                                    "orchestrator_requeued_total")}
    _run(mock_db)
    dispatch_once(mock_db, FakeSender(fail=True))
    dispatch_once(mock_db, FakeSender())
    _running_with_expired_lease(mock_db)
    sweep_once(mock_db, settings, FakeSender())
    assert value("orchestrator_dispatch_send_failed_total") == before["orchestrator_dispatch_send_failed_total"] + 1
    assert value("orchestrator_dispatched_total") == before["orchestrator_dispatched_total"] + 2
    assert value("orchestrator_requeued_total") == before["orchestrator_requeued_total"] + 1


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
