"""What `manage-runs demo` prints, as a user sees it with its output redirected: its own lines,
the live view and the summary; no settings dump, no access log; a timeout said as one."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from tests.servers import PYTHON, ROOT, process_env


def _demo(out: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    given, env = env or {}, process_env()
    for name in ("MONGODB_URL", "INGEST_URL", "INGEST_TOKEN", "OPERATOR_TOKEN", "SECRET_KEY", "MINIO_ENDPOINT",
                 "SPOOL_DIR", "WORK_DIR", "ARTIFACT_DIR"):
        env.pop(name, None)
    env["COLUMNS"] = "100"
    env.update(given)
    return subprocess.run([PYTHON, "-m", "ops.cli", "demo", "--output", str(out), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)


def test_the_demo_prints_no_settings_dump_or_access_log_and_its_summary_on_lines_of_its_own(tmp_path: Path) -> None:
    done = _demo(tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stderr == "", "a demo that went well writes nothing to stderr"
    assert "settings" not in done.stdout and "HTTP/1.1" not in done.stdout
    lines = done.stdout.splitlines()
    first = lines[0]
    assert first.startswith("demo: database mongomock://") and "queue demo-" in first
    ingest = first.split("ingest ", 1)[1].split(",", 1)[0]
    assert ingest.startswith("http://127.0.0.1:") and not ingest.endswith(":8000"), "the URL it really serves"
    title = next(i for i, line in enumerate(lines) if "demo run summary" in line)
    assert lines[title].strip() == "demo run summary", "the summary starts a line of its own, not after a frame"


def test_a_demo_that_times_out_says_so_cancels_its_run_and_exits_6(tmp_path: Path) -> None:
    done = _demo(tmp_path, "--timeout", "0.3")
    assert done.returncode == 6, done.stderr[-4000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("timed out after 0.3 s; run ") and last.endswith(" is CANCELED"), done.stderr[-2000:]
    assert "Traceback" not in done.stderr


def test_a_second_demo_in_the_same_folder_does_not_replay_the_first_ones_spool(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "leftover").write_text("events of an embedded database that is gone\n")
    done = _demo(tmp_path)
    assert done.returncode == 0 and done.stderr == "", done.stderr[-4000:]
    assert not (spool / "leftover").exists()


def test_a_demo_whose_object_store_does_not_answer_says_which_variable_at_its_start(tmp_path: Path) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    done = _demo(tmp_path, "--timeout", "3", env={"MINIO_ENDPOINT": f"127.0.0.1:{port}", "MINIO_ACCESS_KEY": "k",
                                                   "MINIO_SECRET_KEY": "secret-key", "MINIO_BUCKET": "b"})
    first = done.stderr.strip().splitlines()[0]
    assert first.startswith("WARNING ops.demo: ") and "MINIO_ENDPOINT" in first and str(port) in first, done.stderr[-3000:]
    assert "INGEST_URL" not in done.stderr, "the demo's own ingest answered"
