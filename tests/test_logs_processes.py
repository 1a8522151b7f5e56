"""Every process started as the Procfile starts it, with LOG_FORMAT=json, writes only JSON
objects to stderr, one a line, with the fields `telemetry.logs` promises: the web process
(gunicorn's own lines and the app's; its access log too), the dispatcher and a Celery worker
taking a run from the queue to AWAITING_HUMAN, Flower, and `manage-runs`."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from typing import Any

import pytest

from orchestrator.db import probe_features
from orchestrator.runs import cancel_run, create_hypothesis_and_run
from tests.cluster import cluster_on
from tests.servers import PYTHON, ROOT, Child, free_port, process_env, wait_until

pytestmark = pytest.mark.realserver

FIELDS = {"time", "level", "logger", "message", "process", "pid"}


def json_lines(text: str, process: str, where: str) -> list[dict[str, Any]]:
    """Each line of `text` as the object it must be; fails naming the first line that is not."""
    found = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            pytest.fail(f"{where}: not a JSON line: {line!r}\n{text[-3000:]}")
        assert isinstance(record, dict) and FIELDS <= set(record), f"{where}: {line}"
        assert record["process"] == process, f"{where}: {line}"
        found.append(record)
    return found


def test_the_web_process_the_dispatcher_and_a_worker_log_json_lines_on_stderr(real_server, tmp_path) -> None:
    with cluster_on(real_server, tmp_path, "logs", LOG_FORMAT="json") as cluster:
        cluster.stderr_apart = True
        web = cluster.start_ingest(1, options=("-c", "python:ingest_app.gunicorn_conf", "--access-logfile", "-"))
        worker = cluster.start_worker("pod-logs")
        dispatcher = cluster.start_dispatcher()
        _, run_id = create_hypothesis_and_run(cluster.db, "t", "idea", idea_json={"stage_s": 0.05}, pipeline="sleepy")
        cluster.wait_status(run_id, {"AWAITING_HUMAN"}, 60)
        cluster.stop()
    web_lines = json_lines(web.errors(), "ingest", "gunicorn's stderr")
    assert {"gunicorn.error", "ingest_app"} <= {line["logger"] for line in web_lines}, web.errors()[-2000:]
    access = json_lines(web.output().removesuffix(web.errors()), "ingest", "gunicorn's access log")
    assert any("/api/ingest/events" in line["message"] for line in access), "the worker's posts were logged"
    worker_lines = json_lines(worker.errors(), "worker", "the worker's stderr")
    assert any(line["message"].endswith(" ready.") for line in worker_lines)
    assert any(line["logger"] == "celery.app.trace" and "succeeded" in line["message"] for line in worker_lines), \
        "Celery's line about the task, from the pool child that ran it"
    dispatcher_lines = json_lines(dispatcher.errors(), "dispatcher", "the dispatcher's stderr")
    assert any(line["message"].startswith("database: ") for line in dispatcher_lines)


def test_manage_runs_logs_json_lines_on_stderr(real_server, real_db) -> None:
    env = process_env(MONGODB_URL=real_server.url(real_db.name), LOG_FORMAT="json")
    done = subprocess.run([PYTHON, "-m", "ops.cli", "stats", "--json"], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    lines = json_lines(done.stderr, "cli", "manage-runs stats")
    expected = 1 if probe_features(real_db).is_ferretdb else 0  # FerretDB v1 refuses TTL indexes: a warning
    assert sum("cannot expire events_seen" in line["message"] for line in lines) == expected, done.stderr
    assert all(line["level"] in ("WARNING", "ERROR", "CRITICAL") for line in lines), "the CLI stays quiet"


def test_flower_logs_json_lines_on_stderr(real_server, real_db, tmp_path) -> None:
    """Flower as the Procfile starts it; its start-up lines (where it listens, the broker) are
    INFO, so its --logging level still applies."""
    env = process_env(MONGODB_URL=real_server.url(real_db.name), LOG_FORMAT="json")
    port = free_port()
    flower = Child("flower", [PYTHON, "-m", "celery", "-A", "tasks", "flower", f"--port={port}", "--address=127.0.0.1",
                              "--read_only=True", "--enable_events=False", "--persistent=True",
                              f"--db={tmp_path / 'flower'}"], env, log_dir=tmp_path, stderr_apart=True)
    try:
        wait_until(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/healthcheck", timeout=1).status == 200, 30,
                   "Flower to answer")
    finally:
        flower.stop()
    lines = json_lines(flower.errors(), "flower", "Flower's stderr")
    assert any(f"127.0.0.1:{port}" in line["message"] for line in lines), flower.errors()[-2000:]
    assert any(line["message"].startswith("Broker: ") for line in lines), flower.errors()[-2000:]


def test_the_worker_s_text_lines_are_celery_s_and_a_run_s_end_in_its_id(real_server, tmp_path) -> None:
    """LOG_FORMAT=text (the default): Celery's own format, a line logged for a run (here its
    heartbeat seeing the cancel) ending in ` run=<id>/<attempt>`."""
    with cluster_on(real_server, tmp_path, "textlogs", LOG_FORMAT="text") as cluster:
        cluster.stderr_apart = True
        cluster.start_ingest()
        worker = cluster.start_worker("pod-text")
        cluster.start_dispatcher()
        _, run_id = create_hypothesis_and_run(cluster.db, "t", "idea", idea_json={"stage_s": 30}, pipeline="sleepy")
        cluster.wait_status(run_id, {"RUNNING"}, 60)
        cancel_run(cluster.db, run_id, by="operator", reason="enough")
        cluster.wait_status(run_id, {"CANCELED"}, 60)
        cluster.stop()
    lines = worker.errors().splitlines()
    canceled = [line for line in lines if "cancel requested" in line]
    assert canceled and all(line.startswith("[") and line.endswith(f" run={run_id}/1") for line in canceled), lines[-30:]
    assert any(line.endswith(" ready.") for line in lines), "Celery's lines outside a run carry no suffix"
