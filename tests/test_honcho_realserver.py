"""`honcho start` as the README says, on the real server: the shipped Procfile and `.env.example`,
with nothing added but fresh credentials, the test database's URL and a free WEB_PORT (two
test sessions may run on one machine). web, worker and dispatcher take a queued run to
AWAITING_HUMAN, everything listens on loopback, the worker says ingest is ready, and stopping
honcho leaves no process behind.

A user once found every run stuck at STARTING this way: honcho gave gunicorn PORT=5000 while
INGEST_URL said 8000. Here honcho hands the web process PORT=5000 too (no PORT in `.env`).
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pymongo
import pytest
import requests

from devtools.procs import alive_in
from orchestrator.runs import create_hypothesis_and_run
from tests.servers import PYTHON, ROOT, Child, free_port, process_env, wait_until
from tests.test_configuration_documented import declared, env_example

pytestmark = pytest.mark.slow

PROCESSES = ("web", "worker", "dispatcher")


def honcho_env(tmp_path: Path, url: str, port: int) -> dict[str, str]:
    """`.env` in `tmp_path` as the README makes it: `.env.example` copied, its credentials filled
    by `manage-runs token --fill .env`; then the test's own lines (honcho's later lines win).
    Returns the tokens. The environment honcho itself gets has none of our variables, so `.env`
    is all the processes see."""
    env = tmp_path / ".env"
    shutil.copy(ROOT / ".env.example", env)
    done = subprocess.run([PYTHON, "-m", "ops.cli", "--json", "token", "--fill", str(env)], cwd=ROOT, env=process_env(),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    filled = json.loads(done.stdout)["filled"]
    values = dict(line.split("=", 1) for line in env.read_text().splitlines() if "=" in line and not line.startswith("#"))
    tokens = {name: values[name] for name in filled}
    assert set(tokens) == {"INGEST_TOKEN", "OPERATOR_TOKEN", "READER_TOKEN", "SECRET_KEY"}
    with env.open("a") as out:
        out.write(f"\nMONGODB_URL={url}\nWEB_PORT={port}\n")
    return tokens


def outside_address() -> str | None:
    """An address of this machine other than loopback, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the route
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def test_honcho_start_as_shipped_takes_a_queued_run_to_awaiting_human(real_server, tmp_path):
    database = f"honcho_{uuid.uuid4().hex[:10]}"
    port = free_port()
    tokens = honcho_env(tmp_path, real_server.url(database), port)
    environ = {k: v for k, v in process_env().items() if k not in declared() | env_example() | {"PORT"}}
    honcho = Child("honcho", [PYTHON, "-m", "honcho", "start", "--no-colour", "-f", str(ROOT / "Procfile"), "-e", ".env",
                              *PROCESSES], environ, log_dir=tmp_path, cwd=tmp_path)
    client: pymongo.MongoClient = pymongo.MongoClient(real_server.url(database), serverSelectionTimeoutMS=5000)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: requests.get(f"{url}/readyz", timeout=1).ok, 60, "the web process on WEB_PORT")
        _, run_id = create_hypothesis_and_run(client[database], "honcho as shipped",
                                               "Does L2 regularisation (weight decay) help a small classifier?")
        deadline = time.monotonic() + 120
        while (run := client[database].runs.find_one({"_id": run_id}))["status"] != "AWAITING_HUMAN":
            if time.monotonic() > deadline or run["status"] == "FAILED":
                pytest.fail(f"run is {run['status']} ({run.get('error')})\n{honcho.output()[-6000:]}")
            time.sleep(0.5)
        shown = requests.get(f"{url}/api/runs/{run_id}", headers={"Authorization": f"Bearer {tokens['READER_TOKEN']}"},
                             timeout=5).json()
        assert shown["status"] == "AWAITING_HUMAN" and shown["artifacts"], shown
        assert any(p.is_file() for p in (tmp_path / "artifacts" / "runs" / run_id).rglob("*")), "local artifacts as shipped"
        assert list((tmp_path / "data" / "prometheus" / "web").glob("*.db")), "the web process counts in DATA_DIR"
        output = honcho.output()
        assert f"ingest at {url} is ready; artifacts go to {tmp_path / 'artifacts'}" in output, output[-4000:]
        assert "does not answer" not in output, output[-4000:]
        elsewhere = outside_address()
        if elsewhere is not None:
            with pytest.raises(OSError):
                socket.create_connection((elsewhere, port), timeout=1).close()  # BIND_HOST: loopback only
    finally:
        honcho.process.send_signal(signal.SIGTERM)  # what Ctrl-C does: honcho stops each process's group
        try:
            honcho.process.wait(30)
        finally:
            honcho.stop()
            client.drop_database(database)
            client.close()
    # honcho sends SIGKILL to what is still running 5 s after it sent SIGTERM. An idle Celery
    # worker's warm shutdown took about that long before `tasks/broker.py`; either way is a clean
    # stop here.
    leaders = {int(pid) for pid in re.findall(r"\w+\.1 started \(pid=(\d+)\)", honcho.output())}
    assert len(leaders) == len(PROCESSES), honcho.output()[:3000]
    wait_until(lambda: not alive_in(leaders, by="session"), 10, "every process honcho started to exit")
