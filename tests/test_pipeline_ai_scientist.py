import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest

from pipeline import (
    AllNodesBuggy,
    Canceled,
    MaxIterationsReached,
    PipelineError,
    PipelineUnavailable,
    ai_scientist,
    get_pipeline,
)
from pipeline.ai_scientist import (
    PROGRESS_CAP,
    ProgressTranslator,
    diagnose,
    find_log_dir,
    find_paper,
    max_iterations,
    produced_files,
    read_stage,
    review_verdict,
)
from pipeline.context import RecordingContext

FIXTURE = Path(__file__).parent / "fixtures" / "ai_scientist" / "idea_dir"
STAGE_1 = "stage_1_initial_implementation_1_preliminary"
STAGE_2 = "stage_2_baseline_tuning_1_first_attempt"


def _idea_dir(tmp_path):
    target = tmp_path / "ai_scientist"
    shutil.copytree(FIXTURE, target)
    return target


def _translator(tmp_path, stage="Stage_2", budget=12):
    idea_dir = _idea_dir(tmp_path)
    ctx = RecordingContext(workdir=tmp_path)
    return ctx, ProgressTranslator(ctx, idea_dir / "logs" / "0-run", stage, budget), idea_dir


def _journal(directory):
    return json.loads((directory / "journal.json").read_text())


def _node(node_id, buggy, loss):
    metric = {"value": None, "maximize": None, "name": None, "description": None}
    if loss is not None:
        metric["value"] = {"metric_names": [{"metric_name": "validation loss", "lower_is_better": True,
                                             "description": "", "data": [{"dataset_name": "d", "final_value": loss,
                                                                          "best_value": loss}]}]}
    return {"id": node_id, "is_buggy": buggy, "is_buggy_plots": False if not buggy else None, "metric": metric}


def _write_stage(directory, nodes, progress=True):
    (directory / "notes").mkdir(parents=True, exist_ok=True)
    (directory / "journal.json").write_text(json.dumps({"nodes": nodes, "node2parent": {}, "__version": "2"}))
    if progress:
        (directory / "notes" / "stage_progress.json").write_text(json.dumps({
            "stage": directory.name[len("stage_"):], "total_nodes": len(nodes),
            "buggy_nodes": sum(n["is_buggy"] is True for n in nodes),
            "good_nodes": sum(n["is_buggy"] is False and n["is_buggy_plots"] is False for n in nodes),
            "best_metric": "None", "current_findings": "",
        }))


def test_check_available_names_what_to_pip_install_when_ai_scientist_is_missing(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(PipelineUnavailable) as caught:
        ai_scientist.check_available()
    message = str(caught.value)
    assert "'ai_scientist'" in message
    assert "pip install 'ai-scientist @ git+https://github.com/SakanaAI/AI-Scientist-v2'" in message


def test_get_pipeline_refuses_ai_scientist_before_any_step_runs_when_it_is_missing(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(PipelineUnavailable, match="pip install"):
        get_pipeline("ai_scientist")


def test_an_installed_package_still_needs_a_checkout_for_its_config_and_templates(monkeypatch, tmp_path):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    monkeypatch.delenv("AI_SCIENTIST_ROOT", raising=False)
    monkeypatch.delenv("AI_SCIENTIST_BFTS_CONFIG", raising=False)
    with pytest.raises(PipelineUnavailable, match="AI_SCIENTIST_ROOT is not set"):
        ai_scientist.check_available()
    monkeypatch.setenv("AI_SCIENTIST_ROOT", str(tmp_path))
    with pytest.raises(PipelineUnavailable, match="no BFTS config at .*bfts_config.yaml"):
        ai_scientist.check_available()
    (tmp_path / "bfts_config.yaml").write_text("agent:\n  steps: 5\n")
    ai_scientist.check_available()


def test_the_first_poll_reports_progress_node_counts_and_the_best_metric(tmp_path):
    ctx, translator, _ = _translator(tmp_path)
    snapshot = translator.poll()
    assert snapshot.sub_stages == (STAGE_2,)
    assert ctx.of("progress") == [{"fraction": 2 / 12, "eta_s": None}]
    metrics = {m["name"]: (m["value"], m["step"]) for m in ctx.of("metric")}
    # b2 has no plot verdict yet, so stage_progress.json counts one good node of two
    assert metrics == {"total_nodes": (2.0, 2), "good_nodes": (1.0, 2), "buggy_nodes": (0.0, 2),
                       "best_metric": (pytest.approx(0.45), 2)}
    assert ctx.of("log")[0]["message"] == "Stage_2 best_metric is validation loss"


def test_an_unchanged_poll_makes_no_calls(tmp_path):
    ctx, translator, _ = _translator(tmp_path)
    translator.poll()
    before = len(ctx.calls)
    translator.poll()
    translator.poll()
    assert len(ctx.calls) == before


def test_a_change_between_polls_reports_only_what_changed(tmp_path):
    ctx, translator, idea_dir = _translator(tmp_path)
    translator.poll()
    stage = idea_dir / "logs" / "0-run" / STAGE_2
    journal = _journal(stage)
    journal["nodes"].append({**journal["nodes"][1], "id": "b3", "step": 2, "is_buggy_plots": False,
                             "metric": _node("b3", False, 0.40)["metric"]})
    (stage / "journal.json").write_text(json.dumps(journal))
    progress = json.loads((stage / "notes" / "stage_progress.json").read_text())
    (stage / "notes" / "stage_progress.json").write_text(json.dumps({**progress, "total_nodes": 3, "good_nodes": 2}))
    before = len(ctx.calls)

    translator.poll()

    new = ctx.calls[before:]
    assert ("progress", {"fraction": 3 / 12, "eta_s": None}) in new
    changed = {p["name"]: p["value"] for kind, p in new if kind == "metric"}
    assert changed == {"total_nodes": 3.0, "good_nodes": 2.0, "best_metric": pytest.approx(0.40)}
    assert all(p["step"] == 3 for kind, p in new if kind == "metric")


def test_a_half_written_file_is_skipped_until_it_is_complete(tmp_path):
    ctx, translator, idea_dir = _translator(tmp_path)
    translator.poll()
    stage = idea_dir / "logs" / "0-run" / STAGE_2
    progress_file = stage / "notes" / "stage_progress.json"
    complete = json.dumps({**json.loads(progress_file.read_text()), "total_nodes": 4, "buggy_nodes": 2})
    progress_file.write_text(complete[: len(complete) // 2])
    (stage / "journal.json").write_text('{"nodes": [{"id": "b1", "is_bu')
    before = len(ctx.calls)

    snapshot = translator.poll()

    assert ctx.calls[before:] == []
    assert snapshot.total_nodes == 2
    progress_file.write_text(complete)
    translator.poll()
    changed = {p["name"]: p["value"] for kind, p in ctx.calls[before:] if kind == "metric"}
    assert changed["total_nodes"] == 4.0 and changed["buggy_nodes"] == 2.0


def test_nothing_is_reported_before_the_stage_has_logs(tmp_path):
    ctx = RecordingContext(workdir=tmp_path)
    translator = ProgressTranslator(ctx, tmp_path / "logs" / "0-run", "Stage_3", 12)
    assert translator.poll() is None
    assert ctx.calls == []
    assert translator.summary() == {"stage": "Stage_3", "sub_stages": [], "total_nodes": 0}


def test_counts_come_from_the_journal_when_stage_progress_is_missing(tmp_path):
    stage = tmp_path / "logs" / "0-run" / "stage_3_creative_research_1_first_attempt"
    _write_stage(stage, [_node("c1", True, None), _node("c2", False, 0.3)], progress=False)
    snapshot = read_stage(tmp_path / "logs" / "0-run", 3)
    assert (snapshot.total_nodes, snapshot.good_nodes, snapshot.buggy_nodes) == (2, 1, 1)
    assert snapshot.best_metric == pytest.approx(0.3)


def test_sub_stages_add_up_and_progress_follows_the_newest_without_going_back(tmp_path):
    log_dir = tmp_path / "logs" / "0-run"
    first = [_node(f"x{i}", False, 0.5 - i / 100) for i in range(6)]
    _write_stage(log_dir / "stage_2_baseline_tuning_1_first_attempt", first)
    ctx = RecordingContext(workdir=tmp_path)
    translator = ProgressTranslator(ctx, log_dir, "Stage_2", 8)
    translator.poll()
    _write_stage(log_dir / "stage_2_baseline_tuning_2_lr_sweep", [_node("y0", False, 0.44), _node("y1", True, None)])
    snapshot = translator.poll()
    assert snapshot.sub_stages == ("stage_2_baseline_tuning_1_first_attempt", "stage_2_baseline_tuning_2_lr_sweep")
    assert (snapshot.total_nodes, snapshot.current_nodes) == (8, 2)
    assert snapshot.best_metric == pytest.approx(0.44)
    assert [p["fraction"] for p in ctx.of("progress")] == [6 / 8]


def test_progress_stays_below_one_until_the_step_itself_finishes(tmp_path):
    log_dir = tmp_path / "logs" / "0-run"
    _write_stage(log_dir / "stage_4_ablation_studies_1_first_attempt", [_node(f"z{i}", False, 0.4) for i in range(5)])
    ctx = RecordingContext(workdir=tmp_path)
    ProgressTranslator(ctx, log_dir, "Stage_4", 3).poll()
    assert ctx.of("progress") == [{"fraction": PROGRESS_CAP, "eta_s": None}]


def test_the_next_stage_starting_ends_this_one(tmp_path):
    idea_dir = _idea_dir(tmp_path)
    ctx = RecordingContext(workdir=tmp_path)
    log_dir = idea_dir / "logs" / "0-run"
    assert ProgressTranslator(ctx, log_dir, "Stage_1", 20).next_stage_started()
    assert not ProgressTranslator(ctx, log_dir, "Stage_2", 12).next_stage_started()


def test_stage_1_best_metric_is_the_best_mean_over_datasets_among_working_nodes(tmp_path):
    snapshot = read_stage(_idea_dir(tmp_path) / "logs" / "0-run", 1)
    assert (snapshot.total_nodes, snapshot.good_nodes, snapshot.buggy_nodes) == (3, 2, 1)
    assert snapshot.best_metric == pytest.approx(0.48)
    assert (snapshot.metric_name, snapshot.maximize) == ("validation loss", False)


@pytest.mark.parametrize("metric, expected", [
    ({"value": 0.91, "maximize": True, "name": "accuracy"}, (0.91, "accuracy", True)),
    ({"value": {"a": 0.2, "b": 0.4}, "maximize": False, "name": "loss"}, (0.3, "loss", False)),
    ({"value": {"metric_names": [{"metric_name": "f1", "lower_is_better": False,
                                  "data": [{"dataset_name": "a", "value": 0.7}]}]}}, (0.7, "f1", True)),
])
def test_every_metric_format_of_the_journal_is_read(tmp_path, metric, expected):
    stage = tmp_path / "stage_1_initial_implementation_1_preliminary"
    _write_stage(stage, [{"id": "n", "is_buggy": False, "is_buggy_plots": False, "metric": metric}])
    snapshot = read_stage(tmp_path, 1)
    value, name, maximize = expected
    assert (snapshot.best_metric, snapshot.metric_name, snapshot.maximize) == (pytest.approx(value), name, maximize)


def test_a_stage_of_only_buggy_nodes_is_diagnosed_as_all_nodes_buggy(tmp_path):
    _write_stage(tmp_path / STAGE_1, [_node("a", True, None), _node("b", True, None)])
    cause = diagnose("Stage_1", read_stage(tmp_path, 1), 20)
    assert isinstance(cause, AllNodesBuggy)
    assert "All 2 nodes of Stage_1 are buggy" in str(cause)


def test_a_stage_without_a_good_node_at_its_budget_is_diagnosed_as_max_iterations(tmp_path):
    nodes = [_node("a", True, None), {**_node("b", False, 0.5), "is_buggy_plots": True}]
    _write_stage(tmp_path / STAGE_1, nodes)
    cause = diagnose("Stage_1", read_stage(tmp_path, 1), 2)
    assert isinstance(cause, MaxIterationsReached)
    assert "limit of 2 iterations" in str(cause)


def test_a_healthy_stage_has_no_diagnosis(tmp_path):
    assert diagnose("Stage_1", read_stage(_idea_dir(tmp_path) / "logs" / "0-run", 1), 20) is None
    assert diagnose("Stage_1", None, 20) is None


def test_the_iteration_budget_is_read_like_the_agent_manager_reads_it():
    config = {"agent": {"steps": 5, "stages": {"stage1_max_iters": 20, "stage2_max_iters": 12}}}
    assert max_iterations(config, 1) == 20
    assert max_iterations(config, 3) == 5
    with pytest.raises(PipelineError, match="stage 4"):
        max_iterations({"agent": {}}, 4)


def test_the_log_dir_is_the_highest_numbered_run(tmp_path):
    assert find_log_dir(tmp_path) is None
    for name in ("0-run", "2-run", "10-run", "notes"):
        (tmp_path / "logs" / name).mkdir(parents=True)
    assert find_log_dir(tmp_path).name == "10-run"


def test_produced_files_lists_figures_the_paper_and_the_reviews(tmp_path):
    idea_dir = tmp_path / "2025-01-01_idea"
    (idea_dir / "figures").mkdir(parents=True)
    for name in ("b_ablation.png", "a_main.png"):
        (idea_dir / "figures" / name).write_bytes(b"\x89PNG\r\n\x1a\n")
    for name in ("2025-01-01_idea.pdf", "2025-01-01_idea_reflection1.pdf", "2025-01-01_idea_reflection3.pdf"):
        (idea_dir / name).write_bytes(b"%PDF-1.5")
    (idea_dir / "review_text.txt").write_text("{}")
    (idea_dir / "review_img_cap_ref.json").write_text("{}")

    found = [(f.path.name, f.kind, f.content_type) for f in produced_files(idea_dir)]

    assert found == [
        ("a_main.png", "figure", "image/png"),
        ("b_ablation.png", "figure", "image/png"),
        ("2025-01-01_idea_reflection3.pdf", "paper", "application/pdf"),
        ("review_text.txt", "review", "text/plain"),
        ("review_img_cap_ref.json", "review", "application/json"),
    ]


def test_the_paper_is_the_final_reflection_then_the_compiled_pdf(tmp_path):
    idea_dir = tmp_path / "idea"
    idea_dir.mkdir()
    assert find_paper(idea_dir) is None
    (idea_dir / "idea.pdf").write_bytes(b"%PDF")
    assert find_paper(idea_dir).name == "idea.pdf"
    (idea_dir / "idea_reflection_final_page_limit.pdf").write_bytes(b"%PDF")
    (idea_dir / "idea_reflection5.pdf").write_bytes(b"%PDF")
    assert find_paper(idea_dir).name == "idea_reflection_final_page_limit.pdf"


def test_only_an_explicit_accept_passes_the_review():
    verdict, scores, notes = review_verdict({"Decision": "Accept", "Overall": 6, "Soundness": 3,
                                             "Summary": "Solid.", "Weaknesses": ["small data"]})
    assert verdict == "pass"
    assert scores == {"overall": 6.0, "soundness": 3.0}
    assert notes.startswith("Decision: Accept\nSummary: Solid.")
    assert review_verdict({"Decision": "Reject", "Overall": 3})[0] == "fail"
    assert review_verdict("not a review") == ("fail", {}, "no readable review")


class _Process:
    """Stands in for the tree-search child: running while `returncode` is None."""

    def __init__(self, returncode):
        self.returncode = returncode

    def poll(self):
        return self.returncode


def _follow(tmp_path, stage, returncode, monkeypatch):
    monkeypatch.setattr(ai_scientist, "POLL_INTERVAL_S", 0.0)
    ctx = RecordingContext(workdir=tmp_path)
    translator = ProgressTranslator(ctx, tmp_path / "ai_scientist" / "logs" / "0-run", stage, 20)
    ai_scientist._follow(ctx, _Process(returncode), translator)
    return ctx, translator


def test_following_a_stage_ends_when_the_tree_search_starts_the_next_one(tmp_path, monkeypatch):
    _idea_dir(tmp_path)
    ctx, translator = _follow(tmp_path, "Stage_1", None, monkeypatch)
    assert translator.summary()["total_nodes"] == 3
    assert ctx.of("metric")


def test_a_tree_search_that_ends_on_buggy_nodes_fails_the_stage_as_all_nodes_buggy(tmp_path, monkeypatch):
    _write_stage(tmp_path / "ai_scientist" / "logs" / "0-run" / STAGE_1, [_node("a", True, None)])
    with pytest.raises(AllNodesBuggy, match="Stage_1"):
        _follow(tmp_path, "Stage_1", 0, monkeypatch)


def test_a_tree_search_that_crashes_before_a_stage_names_its_log(tmp_path, monkeypatch):
    _idea_dir(tmp_path)
    with pytest.raises(RuntimeError, match="exited with code 1 before finishing Stage_2; see .*tree_search.log"):
        _follow(tmp_path, "Stage_2", 1, monkeypatch)


def test_a_cancel_stops_a_running_child_and_its_process_group(tmp_path, monkeypatch):
    script = tmp_path / "sleeper.py"
    script.write_text("import time\ntime.sleep(60)\n")
    monkeypatch.setattr(ai_scientist, "_ENTRY", script)
    monkeypatch.setattr(ai_scientist, "POLL_INTERVAL_S", 0.01)
    started = []
    real_start = ai_scientist._start_child

    def start_and_keep(*args):
        started.append(real_start(*args))
        return started[-1]

    monkeypatch.setattr(ai_scientist, "_start_child", start_and_keep)
    config = ai_scientist.AiScientistConfig(root=tmp_path, bfts_config=tmp_path / "bfts_config.yaml")
    ctx = RecordingContext(workdir=tmp_path, cancel_requested=True)
    with pytest.raises(Canceled):
        ai_scientist._run_child(ctx, config, "plots", {})
    (child,) = started
    assert child.returncode is not None
    with pytest.raises(ProcessLookupError):
        os.killpg(child.pid, 0)
