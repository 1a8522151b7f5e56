"""`manage-runs stats` with pod presence and ingest counts, through click's test runner on the
embedded database."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from click.testing import CliRunner

from ops.cli import main
from orchestrator import ingest_stats, pods
from orchestrator.runs import create_hypothesis_and_run
from orchestrator.utc import utcnow


@pytest.fixture
def env(cli_db):
    return cli_db


def _system(db) -> str:
    run_id = create_hypothesis_and_run(db, "t", "i")[1]
    now = utcnow()
    pods.beat(db, "gpu-busy", "h:1", run_id=run_id, attempt=1, gpu={}, now=now)
    pods.beat(db, "gpu-idle", "h:2", run_id=None, attempt=None, gpu={}, now=now)
    pods.beat(db, "gpu-lost", "h:3", run_id=None, attempt=None, gpu={}, now=now - timedelta(minutes=10))
    ingest_stats.record(db, 42, 1, 3, now=now)
    return run_id


def test_stats_json_shows_pods_busy_idle_and_gone_and_the_ingest_counts_of_the_last_hour(env):
    run_id = _system(env)
    result = CliRunner().invoke(main, ["--json", "stats"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    assert (stats["podsBusy"], stats["podsIdle"], stats["podsGone"]) == (1, 1, 1)
    assert {p["podId"]: p["state"] for p in stats["pods"]} == {"gpu-busy": "busy", "gpu-idle": "idle", "gpu-lost": "gone"}
    assert stats["pods"][0]["run"] == {"runId": run_id, "attempt": 1}
    assert (stats["ingest"]["acceptedLastHour"], stats["ingest"]["rejectedLastHour"]) == (42, 3)
    assert len(stats["ingest"]["perMinute"]) == 60
    assert stats["runsByStatus"]["QUEUED"] == 1 and stats["podsSeenLastMinute"] == [], "the old keys stay"
    assert stats["deadLetters"] == {"total": 0, "runs": []}


def test_stats_table_names_the_pods_in_each_state_and_the_ingest_counts(env):
    _system(env)
    result = CliRunner().invoke(main, ["stats"], terminal_width=200)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()

    def row(label: str) -> str:
        [line] = [line for line in lines if label in line]
        return line

    assert "1 (gpu-busy)" in row("pods busy") and "1 (gpu-idle)" in row("pods idle") and "1 (gpu-lost)" in row("pods gone")
    assert row("events accepted by ingest, last hour").rstrip(" │").endswith("42")
    assert row("events rejected by ingest, last hour").rstrip(" │").endswith("3")


def test_stats_help_says_where_the_pods_and_ingest_counts_come_from():
    result = CliRunner().invoke(main, ["stats", "--help"], terminal_width=200)
    assert result.exit_code == 0 and "presence" in result.output and "ingest" in result.output


def test_stats_shows_the_depth_of_every_known_queue_even_when_empty(env):
    now = utcnow()
    pods.beat(env, "cpu-pod", "h:4", run_id=None, attempt=None, gpu={}, now=now, queues=("cpu",))
    pods.beat(env, "old-pod", "h:5", run_id=None, attempt=None, gpu={}, now=now - timedelta(minutes=10), queues=("old",))
    env.messages.insert_one({"queue": "celeryev.x", "payload": "{}"})
    stats = json.loads(CliRunner().invoke(main, ["stats", "--json"]).stdout)
    assert stats["queueDepth"] == {"gpu": 0, "cpu": 0, "celeryev.x": 1}, "the GPU queue, a live pod's, one with messages"
    result = CliRunner().invoke(main, ["stats"], terminal_width=200)
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in result.stdout.splitlines()
            if "messages in queue" in line}
    assert rows == {"messages in queue celeryev.x": "1", "messages in queue cpu": "0", "messages in queue gpu": "0"}
