"""The main job end to end: `manage-runs demo` as a user runs it, in its own process."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
from pathlib import Path

import pytest

from orchestrator.events import EXPERIMENT_STAGES, STAGE_NAMES
from orchestrator.numbers import mean_pm
from tests.servers import PYTHON, ROOT, process_env


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    env = process_env()
    for name in ("MONGODB_URL", "INGEST_URL", "INGEST_TOKEN", "MINIO_ENDPOINT", "SPOOL_DIR", "WORK_DIR", "ARTIFACT_DIR"):
        env.pop(name, None)
    done = subprocess.run([PYTHON, "-m", "ops.cli", "--json", "demo", "--output", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-4000:]
    run = json.loads(done.stdout.strip().splitlines()[-1])
    return run, out


def test_the_demo_run_ends_awaiting_human_review_with_every_stage_completed(demo_run):
    run, _ = demo_run
    assert run["status"] == "AWAITING_HUMAN"
    stages = {s["name"]: s for s in run["stages"]}
    assert set(stages) == set(STAGE_NAMES)
    assert all(s["status"] == "COMPLETED" and s["progress"] == 1.0 for s in stages.values())
    assert all(stages[name]["durationS"] >= 0 for name in EXPERIMENT_STAGES)


def test_the_demo_run_has_measured_metrics_and_a_validation_record(demo_run):
    run, _ = demo_run
    assert {"preliminary_val_loss", "preliminary_val_accuracy", "baseline_val_loss_per_seed"} <= set(run["metrics"])
    assert not [name for name in run["metrics"] if "trial" in name]  # a sweep's last point is no result
    validation = run["validation"]
    assert validation["kind"] == "auto" and validation["verdict"] in ("pass", "fail")
    assert validation["scores"] and validation["notes"]
    assert all(0 <= score <= 1 for score in validation["scores"].values()), validation["scores"]


def test_the_run_says_which_synthetic_experiment_it_tested_and_its_results_per_arm(demo_run):
    run, _ = demo_run
    assert run["chosenIdea"] == "feature_standardisation" == run["hypothesis"]["chosenIdea"]
    assert run["ideaMapping"].startswith("The demo maps this hypothesis onto its synthetic experiment "
                                         "feature_standardisation (")
    results = run["validation"]["results"]
    assert [arm["name"] for arm in results["arms"][:2]] == ["baseline", "feature_standardisation"]
    assert all(arm["n"] == 5 and arm["stderr"] > 0 for arm in results["arms"])
    assert results["test"]["name"].startswith("paired t-test") and results["test"]["df"] == 4


def test_the_summary_puts_the_experiment_first_and_results_apart_from_scores_and_metrics(demo_run):
    from rich.console import Console

    from ops.demo import summary
    from tests.helpers import make_settings

    run, out = demo_run
    console = Console(file=io.StringIO(), width=200)
    console.print(summary(run, make_settings(ARTIFACT_DIR=str(Path(out) / "artifacts"))))
    lines = [line.strip("│ ") for line in console.file.getvalue().splitlines()]
    labels = [line.split("│")[0].strip() for line in lines if "│" in line]
    assert labels[:3] == ["run", "experiment", "status"]
    order = [labels.index(name) for name in ("results", "baseline", "feature_standardisation", "test", "scores",
                                             "score overall", "metrics", "metric preliminary_val_loss")]
    assert order == sorted(order)
    row = {line.split("│")[0].strip(): line.split("│")[1].strip() for line in lines if "│" in line}
    arm = run["validation"]["results"]["arms"][0]
    assert row["baseline"] == f"{mean_pm(arm['mean'], arm['stderr'])} (n = 5), accuracy {arm['accuracy']:.3f}"
    assert row["test"].startswith("paired t-test, one-sided (baseline loss - proposed loss > 0): statistic ")
    assert ", df 4, p = " in row["test"]
    assert row["metrics"] == "last logged value of each, not the result"


def test_paper_and_figures_are_registered_with_the_sha256_of_the_stored_bytes(demo_run):
    run, out = demo_run
    kinds = [a["kind"] for a in run["artifacts"]]
    assert kinds.count("paper") == 1 and kinds.count("figure") >= 1
    for artifact in run["artifacts"]:
        data = (Path(out) / "artifacts" / artifact["key"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == artifact["sha256"] and len(data) == artifact["bytes"]
        assert artifact["key"].startswith(f"runs/{run['_id']}/1/")
    paper = next(a for a in run["artifacts"] if a["kind"] == "paper")
    assert (Path(out) / "artifacts" / paper["key"]).read_bytes().startswith(b"%PDF")
    assert run["paper"]["artifactKey"] == paper["key"]


@pytest.mark.parametrize("configured", [None, "operator-mine-Zy9Xw7Vu5Ts3Rq1Po8Nm6Lk4"], ids=["made", "configured"])
def test_demo_serve_prints_the_console_and_a_token_and_serves_until_ctrl_c(tmp_path, configured):
    import re
    import signal
    import time

    import requests

    env = process_env()
    for name in ("MONGODB_URL", "INGEST_URL", "INGEST_TOKEN", "OPERATOR_TOKEN", "SECRET_KEY", "MINIO_ENDPOINT", "SPOOL_DIR",
                 "WORK_DIR", "ARTIFACT_DIR"):
        env.pop(name, None)
    env["COLUMNS"] = "300"  # the console's URL on one line
    if configured:
        env["OPERATOR_TOKEN"] = configured
    env["PYTHONFAULTHANDLER"] = "1"  # a demo that does not stop dumps its threads on SIGABRT
    stderr = (tmp_path / "stderr.txt").open("w")
    child = subprocess.Popen([PYTHON, "-m", "ops.cli", "demo", "--serve", "--port", "0", "--output", str(tmp_path)],
                             cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not any("serving until Ctrl-C" in line for line in lines):
            line = child.stdout.readline()
            if not line:
                break
            lines.append(line)
        text = "".join(lines)
        url = re.search(r"console: (http://127\.0\.0\.1:\d+/runs/[0-9a-f-]+)", text)
        made = re.search(r"operator token: (\S+)", text)
        assert url, text[-3000:]
        if configured:  # a token the user set is never printed
            assert made is None and configured not in text and "sign in with your OPERATOR_TOKEN" in text
        else:
            assert made, text[-3000:]
        token = configured or made.group(1)
        assert "demo run summary" in text  # printed before it serves
        browser = requests.Session()
        signed = browser.post(url.group(1).split("/runs/")[0] + "/signin", data={"token": token}, timeout=10)
        assert signed.ok
        page = browser.get(url.group(1), headers={"Accept": "text/html"}, timeout=10)
        assert page.status_code == 200 and "AWAITING_HUMAN" in page.text and "Open the paper" in page.text
    finally:
        child.send_signal(signal.SIGINT)
        try:
            code = child.wait(30)
        except subprocess.TimeoutExpired:
            child.send_signal(signal.SIGABRT)
            child.wait(10)
            stderr.close()
            pytest.fail("the demo did not stop on Ctrl-C; its threads:\n" + (tmp_path / "stderr.txt").read_text()[-6000:])
        stderr.close()
    assert code == 0


def test_the_live_view_shows_the_experiment_under_the_hypothesis_and_results_before_metrics():
    from rich.console import Console

    from ops.live import run_view

    run = {"_id": "r1", "status": "AWAITING_HUMAN", "hypothesis": {"title": "Adam converges faster than plain SGD"},
           "ideaMapping": "The demo maps this hypothesis onto its synthetic experiment adam_optimiser.",
           "metrics": {"preliminary_val_loss": 0.67},
           "validation": {"results": {"metric": "validation log-loss", "arms": [
               {"name": "baseline", "mean": 0.687234, "stderr": 0.001934, "n": 5, "accuracy": 0.56}],
               "test": {"name": "paired t-test", "statistic": 20.12, "df": 4, "p_value": 1.8e-5}}}}
    console = Console(file=io.StringIO(), width=200)
    console.print(run_view(run))
    text = console.file.getvalue()
    assert text.index("hypothesis") < text.index("experiment  ") < text.index("status")
    assert "adam_optimiser" in text
    assert text.index("results: validation log-loss") < text.index("metrics (last logged value of each")
    assert "0.6872 ± 0.0019 (n = 5), accuracy 0.560" in text
    assert "paired t-test: statistic 20.12, df 4, p = 1.8e-05" in text
