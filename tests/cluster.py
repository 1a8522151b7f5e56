"""The system as OS processes on the real server, for the process tests: a gunicorn ingest app,
Celery workers, dispatchers. Each process gets its own log file, shown when a test fails."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pymongo
import pytest
import requests

from tests.helpers import READER_TOKEN, WORKER_TOKEN, bearer
from tests.servers import PYTHON, Child, MongoServer, free_port, process_env, wait_until

TOKEN = WORKER_TOKEN


class Cluster:
    def __init__(self, server: MongoServer, database: str, tmp: Path, **env: str):
        self.server = server
        self.tmp = tmp
        self.port = free_port()
        self.base_env = {
            "MONGODB_URL": server.url(database), "INGEST_URL": f"http://127.0.0.1:{self.port}", "INGEST_TOKEN": TOKEN, "READER_TOKEN": READER_TOKEN,
            "ARTIFACT_DIR": str(tmp / "artifacts"), "PIPELINE_MODULES": "tests.pipelines_for_tests",
            "HEARTBEAT_INTERVAL_S": "0.5", "LEASE_S": "3", "CANCEL_GRACE_S": "1", "SCHEDULE_TIMEOUT_S": "20",
            "DISPATCH_INTERVAL": "0.1", "SWEEP_INTERVAL_S": "0.5", "MONGODB_TIMEOUT_S": "2",
            **env,
        }
        self.children: list[Child] = []
        #: Each process's stderr in a file of its own (`Child.errors()`), for a test of its log lines.
        self.stderr_apart = False
        self.db: Any = None  # the test's own client on the database, set by the fixture

    def env(self, **extra: str) -> dict[str, str]:
        return process_env(**{**self.base_env, **extra})

    def start_ingest(self, workers: int = 2, options: tuple[str, ...] = ()) -> Child:
        """gunicorn serving the ingest app; `options` are more of gunicorn's (`-c ...`)."""
        child = Child("gunicorn", [PYTHON, "-m", "gunicorn", "--workers", str(workers), "--bind", f"127.0.0.1:{self.port}",
                                   *options, "ingest_app:create_app()"], self.env(), stderr_apart=self.stderr_apart)
        self.children.append(child)
        wait_until(lambda: requests.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).ok, 30, "gunicorn to serve")
        return child

    def start_worker(self, pod: str, *extra_args: str, env: dict[str, str] | None = None) -> Child:
        env = self.env(POD_ID=pod, SPOOL_DIR=str(self.tmp / f"spool-{pod}"), WORK_DIR=str(self.tmp / f"work-{pod}"),
                       **(env or {}))
        child = Child(f"worker-{pod}", [PYTHON, "-m", "celery", "-A", "tasks", "worker", "-Q", "gpu", "--concurrency", "1",
                                        "--hostname", f"{pod}@%h", "--without-mingle", "--without-gossip", "--loglevel", "INFO",
                                        *extra_args], env, stderr_apart=self.stderr_apart)
        self.children.append(child)
        return child

    def start_dispatcher(self, name: str = "dispatcher") -> Child:
        child = Child(name, [PYTHON, "-c", "from ops.dispatcher import main; main()"], self.env(),
                      stderr_apart=self.stderr_apart)
        self.children.append(child)
        return child

    def wait_status(self, run_id: str, statuses: set[str], timeout: float) -> dict[str, Any]:
        """The run once its status is one of `statuses`; fails the test with every process's log."""
        def reached() -> Any:
            run = self.db.runs.find_one({"_id": run_id})
            return run if run and run["status"] in statuses else None
        try:
            return wait_until(reached, timeout, f"run {run_id} to reach {statuses}")  # type: ignore[return-value]
        except TimeoutError:
            run = self.db.runs.find_one({"_id": run_id})
            pytest.fail(f"run is {run and run.get('status')} (error {run and run.get('error')})\n{self.logs()}")

    def api(self, path: str, **kw: Any) -> Any:
        response = requests.get(f"http://127.0.0.1:{self.port}{path}", headers=bearer(READER_TOKEN), timeout=5, **kw)
        response.raise_for_status()
        return response.json()

    def logs(self) -> str:
        return "\n".join(f"===== {c.name} =====\n{c.output()[-3000:]}" for c in self.children)

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM each process, SIGKILL after `timeout` s."""
        for child in reversed(self.children):
            child.stop(timeout)


@contextmanager
def cluster_on(server: MongoServer, tmp: Path, prefix: str, **env: str) -> Iterator[Cluster]:
    """A cluster on a fresh database of `server` (named `prefix_...`), with the test's own client
    on it as `db`; every process stopped and the database dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    client: Any = pymongo.MongoClient(server.url(name), tz_aware=True, serverSelectionTimeoutMS=5000)
    cluster = Cluster(server, name, tmp, **env)
    cluster.db = client[name]
    try:
        yield cluster
    finally:
        cluster.stop()
        client.drop_database(name)
        client.close()
