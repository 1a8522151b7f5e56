"""manage-runs against the real server (FerretDB in the integration lane): run id prefixes
resolved by the `_id` range, and the TTL warning FerretDB earns shown by `stats`, not by
every command."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from orchestrator.db import probe_features
from orchestrator.errors import NotFound
from orchestrator.run_ids import AmbiguousRunId, resolve_run_id
from orchestrator.runs import create_hypothesis_and_run, new_run_document
from tests.servers import PYTHON, ROOT, process_env

pytestmark = pytest.mark.realserver


def test_prefixes_resolve_on_the_real_server(real_db: Any) -> None:
    for run_id in ("c0ffee00-0000-4000-8000-000000000001", "c0ffee00-0000-4000-8000-000000000002",
                   "c0ffee11-0000-4000-8000-000000000003"):
        real_db.runs.insert_one(new_run_document("h", run_id=run_id))
    assert resolve_run_id(real_db, "c0ffee11") == "c0ffee11-0000-4000-8000-000000000003"
    assert resolve_run_id(real_db, "c0ffee00-0000-4000-8000-000000000002") == "c0ffee00-0000-4000-8000-000000000002"
    with pytest.raises(AmbiguousRunId) as ambiguous:
        resolve_run_id(real_db, "c0ffee")
    assert ambiguous.value.candidates == ["c0ffee00-0000-4000-8000-000000000001", "c0ffee00-0000-4000-8000-000000000002",
                                          "c0ffee11-0000-4000-8000-000000000003"]
    with pytest.raises(NotFound):
        resolve_run_id(real_db, "c0ffef")


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**process_env(), "MONGODB_URL": url}
    return subprocess.run([PYTHON, "-m", "ops.cli", *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)


def test_the_cli_takes_a_prefix_and_warns_about_the_server_only_in_stats(real_server: Any, real_db: Any) -> None:
    _, run_id = create_hypothesis_and_run(real_db, "t", "i")
    url = real_server.url(real_db.name)
    shown = _cli(url, "show", run_id[:8], "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["_id"] == run_id
    assert "cannot expire" not in shown.stderr, "an everyday command does not nag"
    stats = _cli(url, "stats", "--json")
    assert stats.returncode == 0, stats.stderr
    expected = 1 if probe_features(real_db).is_ferretdb else 0  # FerretDB v1 refuses TTL indexes
    assert stats.stderr.count("cannot expire events_seen") == expected, stats.stderr
