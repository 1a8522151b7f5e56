"""Every entry point stops on a bad setting with one line on stderr and exit status 2: no
traceback, and never the password of MONGODB_URL. Each runs as the Procfile runs it, in its
own process, on the embedded database or none (no database server is started)."""

from __future__ import annotations

import subprocess

import pytest
import requests

from tests.helpers import WORKER_TOKEN
from tests.servers import PYTHON, ROOT, Child, free_port, process_env, wait_until

PASSWORD = "hunter2-secret"
BAD_PORT = f"mongodb://u:{PASSWORD}@host:99999/db"
GUNICORN = [PYTHON, "-m", "gunicorn", "-c", "python:ingest_app.gunicorn_conf", "--workers", "2"]

ENTRY_POINTS = {
    "manage-runs": [PYTHON, "-m", "ops.cli", "list"],
    "orchestrator-dispatcher": [PYTHON, "-m", "ops.dispatcher"],
    "demo": [PYTHON, "-m", "ops.cli", "demo", "--timeout", "5"],
    "celery worker": [PYTHON, "-m", "celery", "-A", "tasks", "worker", "-Q", "gpu", "--pool", "solo"],
    "gunicorn": [*GUNICORN, "--bind", "127.0.0.1:0", "ingest_app:create_app()"],
}


def start(argv: list[str], tmp_path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = process_env(**{"INGEST_TOKEN": WORKER_TOKEN, "SPOOL_DIR": str(tmp_path / "spool"), "WORK_DIR": str(tmp_path / "work"),
                             "ARTIFACT_DIR": str(tmp_path / "artifacts"), **env})
    for name in ("INGEST_URL", "MINIO_ENDPOINT"):
        environ.pop(name, None)
    return subprocess.run([*argv, *(["--output", str(tmp_path / "demo")] if "demo" in argv else [])],
                          cwd=ROOT, env=environ, capture_output=True, text=True, timeout=60)


def error_lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    """stderr without gunicorn's own timestamped log lines and Python's warnings."""
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    return [line for line in lines if not line.startswith("[") and "Warning" not in line and not line.startswith(" ")]


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
@pytest.mark.parametrize(("variable", "value"), [("MONGODB_URL", BAD_PORT), ("MONGODB_TIMEOUT_S", "nan"), ("LOG_FORMAT", "xml")])
def test_a_bad_setting_is_one_line_and_exit_status_2(entry, variable, value, tmp_path):
    done = start(ENTRY_POINTS[entry], tmp_path, **{variable: value})
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output and PASSWORD not in output, output
    [line] = error_lines(done)
    assert line.startswith(f"error: {variable}=") and ("u:***@host:99999" in line or variable != "MONGODB_URL"), line


def test_gunicorn_refuses_to_start_without_a_token_in_one_line(tmp_path):
    done = start([*GUNICORN, "--bind", "127.0.0.1:0", "ingest_app:create_app()"], tmp_path, INGEST_TOKEN="")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    [line] = error_lines(done)
    assert line.startswith("error: INGEST_TOKEN is not set")


def test_gunicorn_refuses_a_short_webhook_secret_in_one_line(tmp_path):
    secret = "whsec_c2hvcnQ="  # base64 of "short": 5 bytes
    done = start([*GUNICORN, "--bind", "127.0.0.1:0", "ingest_app:create_app()"], tmp_path, INGEST_WEBHOOK_SECRET=secret)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    [line] = error_lines(done)
    assert line.startswith("error: INGEST_WEBHOOK_SECRET decodes to 5 bytes") and secret not in line


def test_gunicorn_booting_the_ingest_app_logs_no_password_or_token(tmp_path):
    port = free_port()
    env = process_env(MONGODB_URL=f"mongomock://u:{PASSWORD}@localhost/boot", INGEST_TOKEN="tok-secret-42-" + WORKER_TOKEN,
                      ARTIFACT_DIR=str(tmp_path / "artifacts"))
    child = Child("gunicorn-boot", [*GUNICORN, "--bind", f"127.0.0.1:{port}", "--access-logfile", "-",
                                    "ingest_app:create_app()"], env, log_dir=tmp_path, cwd=ROOT)
    try:
        wait_until(lambda: requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok, 30, "gunicorn to serve")
        requests.post(f"http://127.0.0.1:{port}/api/ingest/events", data="{}", timeout=5,
                      headers={"Authorization": "Bearer wrong"})
    finally:
        child.stop()
    output = child.output()
    assert "ingest app starting with settings" in output and "mongomock://u:***@localhost/boot" in output, output
    assert PASSWORD not in output and "tok-secret-42" not in output, output
