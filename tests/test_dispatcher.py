"""The dispatcher's rules: which runs are due and in what order, the guarded schedule, a failed
send put back, the change-stream loop; with a fake sender."""

from datetime import timedelta

from orchestrator.db import utcnow
from orchestrator.dispatcher import Dispatcher, dispatch_once, dispatch_run, due_runs
from tests.fakes import FakeChangeStream, FakeSender, WatchableDb, WatchableRuns
from tests.helpers import queued_run


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


def test_a_failed_send_puts_the_run_back(mock_db):
    run_id = queued_run(mock_db)
    assert dispatch_once(mock_db, FakeSender(fail=True)) == 0
    run = mock_db.runs.find_one({"_id": run_id})
    assert (run["status"], run["attempt"]) == ("QUEUED", 0)


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


