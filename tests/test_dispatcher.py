"""The dispatcher's rules: which runs are due and in what order, the unique dispatch decision
(taken once, carried out after an error, withdrawn when orphaned), a failed send flagged for
the sweeper, the change-stream loop; with a fake sender."""

import threading
from datetime import timedelta

import pytest
from pymongo.errors import AutoReconnect

from orchestrator import dispatches, runs
from orchestrator.dispatcher import Dispatcher, dispatch_once, dispatch_run, due_runs
from orchestrator.sweeper import sweep_once
from orchestrator.utc import utcnow
from tests.fakes import FakeChangeStream, FakeSender, WatchableDb, WatchableRuns
from tests.helpers import make_settings, queued_run


def test_due_runs_come_highest_priority_first_then_oldest(mock_db):
    low, high, high_later = queued_run(mock_db, 1), queued_run(mock_db, 9), queued_run(mock_db, 9)
    for offset, run_id in enumerate((low, high, high_later)):
        mock_db.runs.update_one({"_id": run_id}, {"$set": {"createdAt": utcnow() + timedelta(seconds=offset)}})
    assert [r["_id"] for r in due_runs(mock_db, utcnow())] == [high, high_later, low]


def test_a_run_whose_not_before_is_in_the_future_waits(mock_db):
    run_id = queued_run(mock_db)
    mock_db.runs.update_one({"_id": run_id}, {"$set": {"notBefore": utcnow() + timedelta(minutes=5)}})
    assert due_runs(mock_db, utcnow()) == []
    assert [r["_id"] for r in due_runs(mock_db, utcnow() + timedelta(minutes=6))] == [run_id]


def test_a_dispatcher_of_one_queue_leaves_every_other_queues_runs_alone(mock_db):
    theirs, mine = queued_run(mock_db, queue="gpu"), queued_run(mock_db, queue="demo-1")
    sender = FakeSender()
    assert [r["_id"] for r in due_runs(mock_db, utcnow(), queue="demo-1")] == [mine]
    assert dispatch_once(mock_db, sender, queue="demo-1") == 1
    assert sender.sent == [(mine, 1, "demo-1", 5)]
    assert mock_db.runs.find_one({"_id": theirs})["status"] == "QUEUED"


def test_dispatch_schedules_the_next_attempt_and_sends_it_to_the_runs_queue(mock_db):
    run_id = queued_run(mock_db, 7, queue="gpu-a100")
    sender = FakeSender()
    assert dispatch_once(mock_db, sender) == 1
    run = mock_db.runs.find_one({"_id": run_id})
    assert (run["status"], run["attempt"]) == ("SCHEDULED", 1)
    assert run["taskId"] and run["scheduledAt"]
    assert sender.sent == [(run_id, 1, "gpu-a100", 7)]
    assert dispatch_once(mock_db, sender) == 0, "a scheduled run is not sent again"
    assert mock_db.events.count_documents({"runId": run_id, "source": "orchestrator://dispatcher"}) == 1


def test_a_failed_send_leaves_the_decision_and_the_sweeper_sends_it_at_once(mock_db):
    run_id = queued_run(mock_db)
    assert dispatch_once(mock_db, FakeSender(fail=True)) == 0
    run = mock_db.runs.find_one({"_id": run_id})
    assert (run["status"], run["attempt"]) == ("SCHEDULED", 1)
    assert run["sendFailedAt"] is not None and run["sendError"] == "ConnectionError: broker down"
    assert dispatches.get(mock_db, run_id, 1)["taskId"] == run["taskId"]

    still_down = FakeSender(fail=True)
    assert sweep_once(mock_db, make_settings(), still_down)["redispatched"] == 0
    assert mock_db.runs.find_one({"_id": run_id})["sendFailedAt"] is not None, "flagged again for the next pass"
    sender = FakeSender()
    assert sweep_once(mock_db, make_settings(), sender)["redispatched"] == 1, "at once, not after SCHEDULE_TIMEOUT_S"
    assert sender.sent == [(run_id, 1, "gpu", 5)]
    run = mock_db.runs.find_one({"_id": run_id})
    assert run["sendFailedAt"] is None
    assert sweep_once(mock_db, make_settings(), sender)["redispatched"] == 0
    history = [e["data"]["message"] for e in mock_db.events.find({"runId": run_id, "source": "orchestrator://sweeper"})]
    assert history == ["attempt 1: the dispatcher's send failed (ConnectionError: broker down); dispatched again"]


def test_each_attempt_is_decided_once_whoever_asks(mock_db):
    run_id = queued_run(mock_db)
    view = mock_db.runs.find_one({"_id": run_id})
    sender = FakeSender()
    assert dispatch_run(mock_db, view, sender) is True
    mock_db.runs.update_one({"_id": run_id}, {"$set": {"status": "QUEUED", "attempt": 0}})  # as a lost update would
    other = threading.Thread(target=lambda: sender.sent.append(dispatch_run(mock_db, view, sender)))
    other.start()
    other.join()
    assert sender.sent[-1] is False, "the slot of attempt 1 is taken, for another dispatcher"
    assert [s[1] for s in sender.sent[:-1]] == [1]


def test_a_decision_this_process_could_not_carry_out_is_carried_out_on_the_next_pass(mock_db, monkeypatch):
    run_id = queued_run(mock_db)
    real = runs.schedule
    monkeypatch.setattr(runs, "schedule", lambda *a, **k: (_ for _ in ()).throw(AutoReconnect("down")))
    with pytest.raises(AutoReconnect):
        dispatch_once(mock_db, FakeSender())
    monkeypatch.setattr(runs, "schedule", real)
    sender = FakeSender()
    assert dispatch_once(mock_db, sender) == 1
    run = mock_db.runs.find_one({"_id": run_id})
    assert run["taskId"] == dispatches.get(mock_db, run_id, 1)["taskId"] and sender.sent[0][:2] == (run_id, 1)


def test_a_decision_whose_writer_died_is_withdrawn_after_a_while_and_the_run_moves(mock_db):
    run_id = queued_run(mock_db)
    orphan = dispatches.decide(mock_db, run_id, 1, dispatches.DISPATCH, taskId="t-dead")
    mock_db.dispatches.update_one({"_id": orphan["_id"]}, {"$set": {"writer": "another-host:1:dead"}})
    sender, long_connected = FakeSender(), dispatches.ORPHANED_AFTER_S + 1
    assert dispatch_once(mock_db, sender, long_connected) == 0, "a fresh decision of another process is left to it"
    mock_db.dispatches.update_one(
        {"_id": orphan["_id"]}, {"$set": {"at": utcnow() - timedelta(seconds=dispatches.ORPHANED_AFTER_S + 1)}})
    assert dispatch_once(mock_db, sender, connected_for_s=5) == 0, (
        "right after an outage its writer may be about to finish it")
    assert dispatch_once(mock_db, sender, long_connected) == 1 and sender.sent[0][:2] == (run_id, 1)
    assert dispatches.get(mock_db, run_id, 1)["taskId"] != "t-dead"


def test_a_decision_for_a_run_canceled_before_it_was_scheduled_is_withdrawn(mock_db, monkeypatch):
    run_id = queued_run(mock_db)
    view = mock_db.runs.find_one({"_id": run_id})
    runs.cancel_run(mock_db, run_id, by="ann")
    assert dispatch_run(mock_db, view, FakeSender()) is False
    assert dispatches.get(mock_db, run_id, 1) is None
    runs.retry_run(mock_db, run_id)
    sender = FakeSender()
    assert dispatch_once(mock_db, sender) == 1 and sender.sent[0][:2] == (run_id, 1)


def test_a_stale_view_of_the_run_cannot_dispatch_it_twice(mock_db):
    run_id = queued_run(mock_db)
    stale = due_runs(mock_db, utcnow())
    sender = FakeSender()
    dispatch_once(mock_db, sender)

    assert dispatch_run(mock_db, stale[0], sender) is False
    assert len(sender.sent) == 1 and mock_db.runs.find_one({"_id": run_id})["attempt"] == 1


def test_the_change_stream_dispatcher_sends_on_a_change_and_stores_its_resume_token(mock_db):
    run_id = queued_run(mock_db)
    sender = FakeSender()
    holder = {}
    runs = WatchableRuns(mock_db.runs, lambda: FakeChangeStream([{"token": "t1", "operationType": "insert"}], holder["d"]))
    dispatcher = Dispatcher(WatchableDb(mock_db, runs), sender, interval_s=0.01, use_change_stream=True)
    holder["d"] = dispatcher
    dispatcher.run_forever()
    assert sender.sent == [(run_id, 1, "gpu", 5)]
    assert mock_db.dispatcher_state.find_one({"_id": "runs"})["token"] == {"_data": "t1"}

    dispatcher.stopping.clear()
    runs._factory = lambda: FakeChangeStream([], dispatcher)
    dispatcher.run_forever()
    assert runs.watch_calls == [None, {"_data": "t1"}], "a restart resumes from the stored token"




def test_a_failed_send_flag_does_not_outlive_its_attempt(mock_db):
    run_id = queued_run(mock_db)
    dispatch_once(mock_db, FakeSender(fail=True))
    runs.cancel_run(mock_db, run_id, by="ann")
    runs.retry_run(mock_db, run_id)
    sender = FakeSender()
    assert dispatch_once(mock_db, sender) == 1
    run = mock_db.runs.find_one({"_id": run_id})
    assert (run["attempt"], run["sendFailedAt"], run["sendError"]) == (2, None, None)
    assert sweep_once(mock_db, make_settings(), sender)["redispatched"] == 0, "attempt 2 is sent once"
    assert [s[1] for s in sender.sent] == [2]


def test_a_long_sweeper_pass_does_not_hold_up_dispatching(mock_db, caplog):
    """The sweeper runs in its own thread: a pass that takes long (the first count of a year of
    runs) or fails leaves the dispatch loop sending runs as they come."""
    in_pass, release = threading.Event(), threading.Event()
    passes = []

    def sweep():
        passes.append(1)
        if len(passes) == 1:
            raise AutoReconnect("the server went away mid-pass")
        if len(passes) == 2:
            raise ValueError("a bug in a pass")
        in_pass.set()
        release.wait(10)  # a pass that takes as long as the test needs

    sender = FakeSender()
    dispatcher = Dispatcher(mock_db, sender, interval_s=0.01, use_change_stream=False, sweep=sweep, sweep_every_s=0.01)
    loop = threading.Thread(target=dispatcher.run_forever)
    loop.start()
    try:
        assert in_pass.wait(5), "the sweeper goes on after a failed pass"
        run_id = queued_run(mock_db)
        for _ in range(500):
            if sender.sent:
                break
            threading.Event().wait(0.01)
        assert [sent[0] for sent in sender.sent] == [run_id]  # sent while the pass still runs
    finally:
        release.set()
        dispatcher.stop()
        loop.join(10)
    assert not loop.is_alive()
    assert "sweeper cannot reach MongoDB" in caplog.text and "sweeper pass failed" in caplog.text
