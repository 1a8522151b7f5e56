"""manage-runs through click's test runner, on the embedded database."""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner

from ops.cli import main
from orchestrator.runs import create_hypothesis_and_run


@pytest.fixture
def env(cli_db):
    return cli_db


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def run_json(*args: str):
    code, out = run("--json", *args)
    assert code == 0, out
    return json.loads(out)


def test_enqueue_then_list_and_show_a_run(env):
    queued = run_json("enqueue", "--title", "Scaling", "--idea", "standardise inputs", "--priority", "7")
    [listed] = run_json("list")
    assert listed["_id"] == queued["runId"] and listed["status"] == "QUEUED" and listed["priority"] == 7
    shown = run_json("show", queued["runId"])
    assert shown["hypothesis"]["title"] == "Scaling" and shown["stages"] == []
    code, out = run("show", queued["runId"])
    assert code == 0 and "QUEUED" in out and "Stage_1" in out and "PENDING" in out


def test_list_filters_by_status_and_limits(env):
    ids = [create_hypothesis_and_run(env, "t", "i")[1] for _ in range(3)]
    env.runs.update_one({"_id": ids[0]}, {"$set": {"status": "FAILED"}})
    assert [r["_id"] for r in run_json("list", "--status", "FAILED")] == [ids[0]]
    assert len(run_json("list", "--limit", "2")) == 2
    code, out = run("list", "--status", "BOGUS")
    assert code == 2 and "BOGUS" in out


def test_cancel_a_queued_run_then_retry_it(env):
    run_id = create_hypothesis_and_run(env, "t", "i")[1]
    assert run_json("cancel", run_id, "--reason", "typo")["status"] == "CANCELED"
    code, out = run("cancel", run_id)
    assert code == 4 and "nothing to cancel" in out
    retried = run_json("retry", run_id)
    assert retried["status"] == "QUEUED"
    code, out = run("retry", run_id)
    assert code == 4 and "only FAILED or CANCELED" in out


def test_cancel_of_a_running_run_asks_the_worker_to_stop(env):
    run_id = create_hypothesis_and_run(env, "t", "i")[1]
    env.runs.update_one({"_id": run_id}, {"$set": {"status": "RUNNING"}})
    code, out = run("cancel", run_id)
    assert code == 0 and "cancel requested" in out
    assert env.runs.find_one({"_id": run_id})["cancelRequested"] is True


def test_an_unknown_run_is_a_clear_error_with_its_own_exit_code(env):
    code, out = run("show", "nope")
    assert code == 3 and "no run with id 'nope'" in out


def test_stats_counts_runs_queue_depth_and_live_pods(env):
    run_id = create_hypothesis_and_run(env, "t", "i")[1]
    env.messages.insert_one({"queue": "gpu", "payload": "{}", "priority": 4})
    stats = run_json("stats")
    assert stats["runsByStatus"]["QUEUED"] == 1 and stats["queueDepth"] == {"gpu": 1}
    assert stats["oldestQueuedAgeS"] >= 0 and stats["podsSeenLastMinute"] == []
    code, out = run("stats")
    assert code == 0 and "runs QUEUED" in out and run_id not in out


def test_sweep_runs_one_pass(env, monkeypatch):
    result = run_json("sweep")
    assert result == {"redispatched": 0, "recovered": 0, "eventQueuesDropped": 0, "podsPruned": 0, "runCountsRefreshed": 1,
                      "dedupRecordsPruned": 0}


def test_prune_seen_deletes_old_dedup_records(env):
    from datetime import timedelta

    from orchestrator.utc import utcnow

    env.events_seen.insert_many([{"source": "s", "eventId": "old", "processedAt": utcnow() - timedelta(days=3)},
                                 {"source": "s", "eventId": "new", "processedAt": utcnow()}])
    assert run_json("prune-seen", "--days", "2") == {"deleted": 1}
    assert env.events_seen.count_documents({}) == 1


def test_an_unreachable_database_fails_within_seconds_naming_the_url(monkeypatch):
    monkeypatch.setenv("MONGODB_URL", "mongodb://127.0.0.1:9/nowhere")
    monkeypatch.setenv("MONGODB_TIMEOUT_S", "0.5")
    began = time.monotonic()
    code, out = run("list")
    assert code == 5 and "mongodb://127.0.0.1:9/nowhere" in out and "unreachable" in out
    assert time.monotonic() - began < 10


def test_a_bad_setting_is_reported_with_the_variable(monkeypatch):
    monkeypatch.setenv("MONGODB_URL", "redis://x/y")
    code, out = run("list")
    assert code == 2 and "MONGODB_URL" in out


def test_tail_prints_each_event_of_a_settled_run_as_json_lines(env):
    from orchestrator.events import make_event

    run_id = create_hypothesis_and_run(env, "t", "i")[1]
    env.runs.update_one({"_id": run_id}, {"$set": {"status": "FAILED"}})
    for seq in (3, 1, 2):
        event = make_event("ai.run.log", run_id, seq, "worker://p", {"level": "info", "message": f"m{seq}"})
        env.events.insert_one({"_id": event["id"], "runId": run_id, "seq": seq, "type": event["type"], "data": event["data"]})
    result = CliRunner().invoke(main, ["--json", "tail", run_id])
    assert result.exit_code == 6, "a FAILED run: the run did not finish"
    assert [json.loads(line)["data"]["message"] for line in result.stdout.splitlines()] == ["m1", "m2", "m3"]
    assert result.stderr.strip() == f"run {run_id} FAILED"


def test_tail_gives_up_after_its_timeout_on_a_run_that_does_not_end(env):
    run_id = create_hypothesis_and_run(env, "t", "i")[1]
    began = time.monotonic()
    code, out = run("tail", run_id, "--timeout", "0.5", "--interval", "0.1")
    assert code == 7 and time.monotonic() - began < 5
    assert f"gave up after 0.5 s; run {run_id} is still QUEUED" in out


def test_show_counts_the_run_s_dead_letters(env):
    from orchestrator.events import history_record, make_event
    from orchestrator.utc import utcnow

    run_id = create_hypothesis_and_run(env, "t", "i")[1]
    notice = make_event("ai.run.log", run_id, 1_000_000_005, "worker://pod-a",
                        {"level": "warning", "message": "event x was dead-lettered", "kv": {"deadLetter": True}})
    env.events.insert_one(history_record(notice, received_at=utcnow()))
    assert run_json("show", run_id)["deadLetters"] == 1
    code, out = run("show", run_id)
    assert code == 0 and "dead letters" in out and "1 event(s)" in out


def test_enqueue_takes_wall_clock_limits_and_names_a_bad_one(env):
    queued = run_json("enqueue", "--title", "t", "--idea", "i", "--timeout", "86400", "--step-timeout", "Stage_2=7200")
    assert env.runs.find_one({"_id": queued["runId"]})["limits"] == {"runS": 86400.0, "stepS": {"Stage_2": 7200.0}}
    code, out = run("enqueue", "--title", "t", "--idea", "i", "--step-timeout", "Stage_9=5")
    assert code == 2 and "limits.stepS.Stage_9" in out
    code, out = run("enqueue", "--title", "t", "--idea", "i", "--step-timeout", "Stage_2")
    assert code == 2 and "STEP=SECONDS" in out
    assert env.runs.count_documents({}) == 1, "nothing accepted from the bad ones"
