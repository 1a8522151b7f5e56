"""The `ai_scientist` pipeline against a stand-in of upstream AI-Scientist-v2, in child processes.

`fixtures/ai_scientist_v2/` is a miniature checkout of SakanaAI/AI-Scientist-v2 @ defddb8 (see its
README): the same module names and signatures, the writeup's relative template path, the run-index
bumping, paths relative to the working directory, seed aggregation from `AI_SCIENTIST_ROOT`, the
files upstream writes; LLMs, GPUs and LaTeX are simulated. Each test copies it as a checkout and
runs it through an interpreter wrapper that records every call, standing in for upstream's venv.
"""

import json
import os
import time

import pytest

from devtools.procs import alive_in
from pipeline import AllNodesBuggy, ExperimentStateLost, PipelineUnavailable
from pipeline.ai_scientist import ai_scientist_pipeline, child, steps
from pipeline.context import RecordingContext
from tests.upstream_standin import IDEA, install_upstream


@pytest.fixture
def upstream(tmp_path, monkeypatch):
    """The stand-in installed, its environment set, every tree search stopped at the end."""
    for name, value in install_upstream(tmp_path).items():
        monkeypatch.setenv(name, value)
    checkout = tmp_path / "AI-Scientist-v2"
    yield checkout
    with steps._TREE_SEARCHES_LOCK:
        for process, _ in steps._TREE_SEARCHES.values():
            child.stop(process)
        steps._TREE_SEARCHES.clear()


def _context(tmp_path, idea_json=IDEA, **kw):
    hypothesis = {"title": "Warm restarts help small CNNs", "idea": "Cosine restarts beat step decay.",
                  "ideaJson": idea_json}
    return RecordingContext(workdir=tmp_path / "work", hypothesis=hypothesis, **kw)


def _run(ctx, until=None):
    """Drive the steps as the worker does: each step's outputs stored for the later ones."""
    for step in ai_scientist_pipeline().steps:
        ctx.results[step.name] = step.run(ctx)
        if step.name == until:
            return ctx.results
    return ctx.results


def _idea_dir(ctx):
    return ctx.workdir / "ai_scientist" / "experiments" / ctx.results["ideation"]["idea"]["Name"]


def _pdf_text(path):
    return path.read_bytes().decode("latin-1")


def test_a_run_goes_through_every_step_on_upstreams_code_in_its_own_interpreter(upstream, tmp_path, monkeypatch):
    for name in ("INGEST_TOKEN", "MINIO_SECRET_KEY", "MONGODB_URL"):
        monkeypatch.setenv(name, f"secret-{name}")
    ctx = _context(tmp_path)
    results = _run(ctx)

    idea = _idea_dir(ctx)
    assert sorted(p.name for p in (idea / "logs").iterdir()) == ["0-run"]
    assert [results[f"Stage_{n}"]["stage"] for n in range(1, 5)] == ["Stage_1", "Stage_2", "Stage_3", "Stage_4"]
    # upstream's metric-based best node among good nodes (the stand-in's losses: 0.9 * 0.9**k per stage)
    assert [results[f"Stage_{n}"]["best_metric"] for n in range(1, 5)] == pytest.approx([0.729, 0.567, 0.405, 0.243])
    # each stage's best node is carried into the next under its own id, as upstream does
    stage_2_journal = json.loads(next((idea / "logs" / "0-run").glob("stage_2_*/journal.json")).read_text())
    assert results["Stage_1"]["best_node"] in {n["id"] for n in stage_2_journal["nodes"]}
    # seed aggregation found its seeds' data: AI_SCIENTIST_ROOT and the cwd agree
    assert list((idea / "logs" / "0-run" / "experiment_results").glob("seed_aggregation_*/*.png"))
    kinds = {}
    for call in ctx.of("artifact"):
        kinds.setdefault(call["kind"], []).append(call["key"])
    assert kinds["plot"] and all("/experiment_results/" in key for key in kinds["plot"])
    assert len(kinds["plot"]) == len(set(kinds["plot"]))  # each plot once
    assert kinds["figure"] == results["plots"]["figures"] and kinds["figure"]
    # the paper is the page-limited final PDF, written from logs/0-run's summaries and the figures
    assert results["paper"]["final"] is True and results["paper"]["file"].endswith("_reflection_final_page_limit.pdf")
    assert ctx.of("paper")[0]["key"].endswith(results["paper"]["file"])
    assert kinds["review"] and results["auto_validation"]["verdict"] == "pass"
    assert ctx.of("validation_started") == [{"model": "gpt-4o-2024-11-20", "rubric_version": "ai-scientist-v2"}]
    assert "token_tracker.json" in " ".join(kinds["token_usage"]) and results["auto_validation"]["token_usage"]
    # every phase ran through the configured interpreter, from the run's own root
    calls = (tmp_path / "python-calls.txt").read_text().splitlines()
    phases = [c.split()[1] for c in calls if c.startswith("orchestrator_entry.py")]
    assert phases == ["experiments", "plots", "writeup", "review"]
    assert not (upstream / "experiments").exists() and not list(upstream.glob("*.log"))
    # the children (which run LLM-written code) get the model keys, not the control plane's secrets
    child_env = (tmp_path / "child-env.txt").read_text()
    assert "OPENAI_API_KEY=sk-test" in child_env and "secret-" not in child_env


def test_the_paper_is_written_from_the_summaries_of_logs_0_run(upstream, tmp_path):
    ctx = _context(tmp_path)
    _run(ctx, until="paper")
    paper = _idea_dir(ctx) / ctx.results["paper"]["file"]
    summary = json.loads((_idea_dir(ctx) / "logs" / "0-run" / "baseline_summary.json").read_text())
    assert summary  # generate_report was on
    assert "no results" not in _pdf_text(paper).lower()


def test_the_config_values_the_adapter_depends_on_are_enforced(upstream, tmp_path):
    config = upstream / "bfts_config.yaml"
    config.write_text(config.read_text().replace("exp_name: run", "exp_name: mine")
                      .replace("generate_report: True", "generate_report: False"))
    ctx = _context(tmp_path)
    _run(ctx, until="Stage_4")
    warnings = [c["message"] for c in ctx.of("log") if c["level"] == "warning"]
    assert any("exp_name: 'mine' -> 'run'" in w for w in warnings)
    assert any("generate_report: False -> True" in w for w in warnings)
    log_dir = _idea_dir(ctx) / "logs" / "0-run"
    assert (log_dir / "research_summary.json").is_file()


def test_a_tree_search_killed_mid_stage_starts_over_in_logs_0_run(upstream, tmp_path, monkeypatch):
    monkeypatch.setenv("STANDIN_HANG_STAGE", "3")  # Stage_1 ends when stage 2 logs its first node
    ctx = _context(tmp_path)
    _run(ctx, until="Stage_1")
    assert [c for c in ctx.of("artifact") if c["kind"] == "plot"]  # uploaded while the tree search runs
    # the pod's worker dies: its child is killed (no atexit cleanup), the registry is gone
    with steps._TREE_SEARCHES_LOCK:
        for process, _ in steps._TREE_SEARCHES.values():
            child.stop(process)
        steps._TREE_SEARCHES.clear()
    idea = _idea_dir(ctx)
    assert (idea / "0-run").is_dir()  # the killed run's workspace, which would bump the run index
    monkeypatch.delenv("STANDIN_HANG_STAGE")

    for step in ai_scientist_pipeline().steps[2:]:
        ctx.results[step.name] = step.run(ctx)

    assert sorted(p.name for p in (idea / "logs").iterdir()) == ["0-run"]
    assert any("left 0-run, logs" in c["message"] for c in ctx.of("log"))
    assert ctx.results["paper"]["final"] and ctx.results["auto_validation"]["verdict"] == "pass"


def test_without_the_final_pdf_the_best_reflection_is_the_paper_as_upstreams_launcher_does(upstream, tmp_path,
                                                                                          monkeypatch):
    monkeypatch.setenv("STANDIN_FINAL_PDF_FAILS", "1")
    ctx = _context(tmp_path)
    _run(ctx, until="paper")
    assert ctx.results["paper"]["final"] is False
    assert ctx.results["paper"]["file"].endswith("_reflection3.pdf")
    assert any("did not finish its page-limited version" in c["message"] for c in ctx.of("log"))


def test_the_review_is_an_ensemble_and_the_overall_threshold_is_configurable(upstream, tmp_path, monkeypatch):
    monkeypatch.setenv("STANDIN_REVIEW_OVERALL", "5")
    ctx = _context(tmp_path)
    _run(ctx)
    assert ctx.results["auto_validation"]["verdict"] == "fail"
    args = json.loads((ctx.workdir / "ai_scientist" / "review.args.json").read_text())
    assert (args["num_reviews_ensemble"], args["num_reflections"]) == (3, 2)
    # upstream's own ensemble ran (it raises at defddb8 unless the child repairs its batch call)
    log = (ctx.workdir / "ai_scientist" / "review.log").read_text()
    assert "Traceback" not in log
    combined = json.loads((_idea_dir(ctx) / "review_text.txt").read_text())
    assert combined["Overall"] == 5 and combined["Decision"] == "Reject"
    monkeypatch.setenv("AI_SCIENTIST_PASS_OVERALL", "5")
    assert steps.auto_validation(ctx)["verdict"] == "pass"


def test_missing_credentials_fail_the_run_before_any_upstream_code_runs(upstream, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    ctx = _context(tmp_path)
    with pytest.raises(PipelineUnavailable, match="OPENAI_API_KEY"):
        _run(ctx, until="ideation")
    calls = (tmp_path / "python-calls.txt").read_text()
    assert "orchestrator_entry.py" not in calls


def test_a_partial_idea_is_completed_and_accepted_by_upstreams_agent_manager(upstream, tmp_path):
    ctx = _context(tmp_path, idea_json={"Title": "Warm restarts help small CNNs"})
    _run(ctx, until="Stage_1")
    assert ctx.results["ideation"]["filled"] == ["Name", "Abstract", "Short Hypothesis", "Experiments",
                                                 "Risk Factors and Limitations"]
    assert ctx.results["Stage_1"]["total_nodes"] > 0


def test_without_idea_json_upstreams_ideation_writes_the_idea(upstream, tmp_path):
    ctx = _context(tmp_path, idea_json=None)
    _run(ctx, until="ideation")
    idea = ctx.results["ideation"]["idea"]
    assert ctx.results["ideation"]["generated"] >= 1 and idea["Title"]
    assert ctx.of("ideas") == [{"count": ctx.results["ideation"]["generated"], "top_k": 1}]


def test_a_stage_of_only_buggy_nodes_fails_as_all_nodes_buggy(upstream, tmp_path, monkeypatch):
    monkeypatch.setenv("STANDIN_ALL_BUGGY_STAGE", "1")
    with pytest.raises(AllNodesBuggy, match="Stage_1"):
        _run(_context(tmp_path), until="Stage_1")


def test_a_checkout_whose_interpreter_cannot_import_upstream_is_refused(upstream, tmp_path, monkeypatch):
    (upstream / "ai_scientist" / "perform_plotting.py").unlink()
    with pytest.raises(PipelineUnavailable, match="cannot import AI-Scientist-v2.*perform_plotting"):
        _run(_context(tmp_path), until="ideation")
    assert os.environ["AI_SCIENTIST_ROOT"] == str(upstream)


def test_a_later_attempt_on_the_same_pod_takes_the_tree_search_from_the_earlier_one(upstream, tmp_path):
    first = RecordingContext(workdir=tmp_path / "run" / "1", attempt=1, hypothesis=_context(tmp_path).hypothesis)
    _run(first, until="Stage_4")
    # attempt 2 retries from plots: the worker hands it the stored outputs and a fresh work dir
    second = RecordingContext(workdir=tmp_path / "run" / "2", attempt=2, hypothesis=first.hypothesis,
                              results=dict(first.results))
    for step in ai_scientist_pipeline().steps[5:]:
        second.results[step.name] = step.run(second)
    assert any("from attempt 1 on this pod" in c["message"] for c in second.of("log"))
    total = json.loads((second.workdir / "ai_scientist" / "token_tracker.json").read_text())
    first_only = json.loads((first.workdir / "ai_scientist" / "token_usage" / "experiments.json").read_text())
    assert first_only and set(first_only) <= set(total)  # attempt 1's tree search counts in the run's total
    assert second.of("paper")[0]["key"].startswith("runs/run-test/2/ai_scientist/experiments/warm_restarts/")
    # with no attempt here that ran it, the step says so instead of failing somewhere upstream
    third = RecordingContext(workdir=tmp_path / "other" / "3", attempt=3, hypothesis=first.hypothesis,
                             results=dict(first.results))
    with pytest.raises(ExperimentStateLost, match="did not run the experiment stages"):
        steps.plots(third)


def _tree_search_of(ctx):
    with steps._TREE_SEARCHES_LOCK:
        (process, _), = [v for k, v in steps._TREE_SEARCHES.items() if k.is_relative_to(child.run_root(ctx))]
    return process


def _gone(process, within_s: float = 5.0):
    """No live process is left in `process`'s group within `within_s` (`killpg(pgid, 0)` would
    count killed members not yet reaped, which in a container may be never)."""
    deadline = time.monotonic() + within_s
    while alive_in({process.pid}, by="group") and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive_in({process.pid}, by="group")


def test_the_pipelines_close_stops_a_tree_search_left_running_between_two_stages(upstream, tmp_path, monkeypatch):
    monkeypatch.setenv("STANDIN_HANG_STAGE", "3")
    ctx = _context(tmp_path)
    _run(ctx, until="Stage_1")
    process = _tree_search_of(ctx)
    assert process.poll() is None  # Stage_1 is over, the tree search goes on for the next steps
    ai_scientist_pipeline().close(ctx)  # e.g. a cancel seen before Stage_2 starts
    assert process.returncode is not None and _gone(process) and not steps._TREE_SEARCHES


def test_a_tree_search_whose_worker_died_is_killed_when_the_next_attempt_starts_its_own(upstream, tmp_path, monkeypatch):
    monkeypatch.setenv("STANDIN_HANG_STAGE", "3")
    first = RecordingContext(workdir=tmp_path / "run" / "1", attempt=1, hypothesis=_context(tmp_path).hypothesis)
    _run(first, until="Stage_1")
    orphan = _tree_search_of(first)
    with steps._TREE_SEARCHES_LOCK:
        steps._TREE_SEARCHES.clear()  # the worker process died; its child, in its own session, did not
    monkeypatch.delenv("STANDIN_HANG_STAGE")
    second = RecordingContext(workdir=tmp_path / "run" / "2", attempt=2, hypothesis=first.hypothesis,
                              results=dict(first.results))
    second.results["Stage_2"] = steps.experiment_step("Stage_2")(second)
    orphan.wait(timeout=10)
    assert _gone(orphan)
    assert any(f"process group {orphan.pid}" in c["message"] for c in second.of("log"))


def test_a_pod_without_the_writeups_latex_programs_is_refused_before_the_tree_search(upstream, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    with pytest.raises(PipelineUnavailable, match="the writeup needs pdflatex, bibtex, chktex, pdftotext on PATH"):
        _run(_context(tmp_path), until="ideation")
