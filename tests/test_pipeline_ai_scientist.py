import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from pipeline import AllNodesBuggy, Canceled, MaxIterationsReached, PipelineError, PipelineUnavailable
from pipeline.ai_scientist import child, credentials, steps
from pipeline.ai_scientist.config import AiScientistConfig, Probe
from pipeline.ai_scientist.ideas import DEFAULT_EXPERIMENTS, DEFAULT_RISKS, IDEA_KEYS, complete, slug
from pipeline.ai_scientist.logs import (
    PROGRESS_CAP,
    ProgressTranslator,
    best_node,
    diagnose,
    find_log_dir,
    max_iterations,
    read_stage,
)
from pipeline.ai_scientist.outputs import PlotWatcher, find_paper, merge_token_usage, produced_files, review_verdict
from pipeline.context import RecordingContext
from pipeline.errors import InvalidIdea

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


def _metric(*finals, lower=True, name="validation loss"):
    data = [{"dataset_name": f"d{i}", "final_value": v, "best_value": v} for i, v in enumerate(finals)]
    return {"value": {"metric_names": [{"metric_name": name, "lower_is_better": lower, "description": "",
                                        "data": data}]}, "maximize": None, "name": None, "description": None}


def _node(node_id, buggy, loss, plots_ok=True):
    metric = _metric(loss) if loss is not None else {"value": None, "maximize": None, "name": None, "description": None}
    return {"id": node_id, "is_buggy": buggy, "is_buggy_plots": (False if plots_ok else None) if not buggy else None,
            "metric": metric}


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


def test_the_first_poll_reports_progress_node_counts_and_the_best_metric(tmp_path):
    ctx, translator, _ = _translator(tmp_path)
    snapshot = translator.poll()
    assert snapshot.sub_stages == (STAGE_2,)
    assert ctx.of("progress") == [{"fraction": 2 / 12, "eta_s": None}]
    metrics = {m["name"]: (m["value"], m["step"]) for m in ctx.of("metric")}
    # b2 has no plot verdict yet (is_buggy_plots None): upstream counts only a3, carried over from
    # Stage_1 under its own id, as good, and so picks it although b2's loss is lower
    assert metrics == {"total_nodes": (2.0, 2), "good_nodes": (1.0, 2), "buggy_nodes": (0.0, 2),
                       "best_metric": (pytest.approx(0.48), 2)}
    assert snapshot.best_node == "a3"
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


def test_a_stage_ends_at_its_checkpoint_or_when_the_next_one_starts(tmp_path):
    idea_dir = _idea_dir(tmp_path)
    ctx = RecordingContext(workdir=tmp_path)
    log_dir = idea_dir / "logs" / "0-run"
    assert ProgressTranslator(ctx, log_dir, "Stage_1", 20).stage_over()
    stage_2 = ProgressTranslator(ctx, log_dir, "Stage_2", 12)
    assert not stage_2.stage_over()
    (log_dir / STAGE_2 / "checkpoint.pkl").write_bytes(b"")  # upstream saves it when a main stage ends
    assert stage_2.stage_over()
    _write_stage(log_dir / "stage_4_ablation_studies_1_first_attempt", [_node("z", False, 0.3)])
    (log_dir / "stage_4_ablation_studies_1_first_attempt" / "checkpoint.pkl").write_bytes(b"")
    assert not ProgressTranslator(ctx, log_dir, "Stage_4", 12).stage_over()  # the summaries come after it


def test_stage_1_best_metric_is_the_best_mean_over_datasets_among_working_nodes(tmp_path):
    snapshot = read_stage(_idea_dir(tmp_path) / "logs" / "0-run", 1)
    assert (snapshot.total_nodes, snapshot.good_nodes, snapshot.buggy_nodes) == (3, 2, 1)
    assert snapshot.best_metric == pytest.approx(0.48)
    assert (snapshot.metric_name, snapshot.maximize) == ("validation loss", False)


@pytest.mark.parametrize("metric, expected", [
    ({"value": 0.91, "maximize": True, "name": "accuracy"}, (0.91, "accuracy", True)),
    ({"value": {"a": 0.2, "b": 0.4}, "maximize": False, "name": "loss"}, (0.3, "loss", False)),
    ({"value": {"metric_names": [{"metric_name": "f1", "lower_is_better": False,
                                  "data": [{"dataset_name": "a", "final_value": 0.7, "best_value": 0.75}]}]}},
     (0.7, "f1", True)),
])
def test_every_metric_format_of_the_journal_is_read(tmp_path, metric, expected):
    stage = tmp_path / "stage_1_initial_implementation_1_preliminary"
    _write_stage(stage, [{"id": "n", "is_buggy": False, "is_buggy_plots": False, "metric": metric}])
    snapshot = read_stage(tmp_path, 1)
    value, name, maximize = expected
    assert (snapshot.best_metric, snapshot.metric_name, snapshot.maximize) == (pytest.approx(value), name, maximize)


def test_the_best_node_is_upstreams_choice_among_good_nodes_only():
    # the case the replaced reading got wrong: 0.30 belongs to a node whose plots were never
    # judged (is_buggy_plots None), which upstream's Journal.good_nodes never counts
    nodes = [_node("unjudged", False, 0.30, plots_ok=False), _node("g1", False, None),
             {**_node("g2", False, None), "metric": _metric(0.50, 0.56)}, _node("bug", True, None)]
    node, metric = best_node(nodes)
    assert node["id"] == "g2" and metric.mean == pytest.approx(0.53)


def test_the_best_node_compares_the_mean_over_every_metric_and_dataset_like_upstream():
    def two_metrics(loss, accuracy):
        value = {"metric_names": [
            {"metric_name": "loss", "lower_is_better": True, "data": [{"dataset_name": "d", "final_value": loss}]},
            {"metric_name": "accuracy", "lower_is_better": False, "data": [{"dataset_name": "d", "final_value": accuracy}]},
        ]}
        return {"value": value, "maximize": None, "name": None, "description": None}

    a = {**_node("a", False, None), "metric": two_metrics(0.40, 0.90)}  # mean 0.65
    b = {**_node("b", False, None), "metric": two_metrics(0.50, 0.60)}  # mean 0.55
    node, metric = best_node([a, b])
    # upstream's MetricValue: one mean over all metrics, in the first metric's direction (lower)
    assert node["id"] == "b"
    assert (metric.mean, metric.names, metric.maximize) == (pytest.approx(0.55), "loss, accuracy", False)
    assert best_node([_node("x", True, None)]) is None


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


def test_the_review_passes_at_the_configured_overall_score_and_keeps_upstreams_decision():
    verdict, scores, notes = review_verdict({"Decision": "Reject", "Overall": 6, "Soundness": 3,
                                             "Summary": "Solid.", "Weaknesses": ["small data"]}, 6)
    assert verdict == "pass"
    assert scores == {"overall": 6.0, "soundness": 3.0}
    assert notes.startswith("Overall: 6 (pass at >= 6)\nDecision: Reject\nSummary: Solid.")
    assert review_verdict({"Decision": "Accept", "Overall": 5}, 6)[0] == "fail"
    assert review_verdict({"Overall": 5}, 4.5)[0] == "pass"
    assert review_verdict("not a review", 6) == ("fail", {}, "Overall: missing")
    assert review_verdict({"Overall": float("nan")}, 6)[0] == "fail"


def test_missing_idea_keys_are_filled_with_the_documented_defaults():
    hypothesis = {"title": "Warm restarts help small CNNs", "idea": "Cosine restarts beat step decay."}
    idea, filled = complete({"Title": "Warm Restarts, Revisited!", "Experiments": ["cifar10 sweep"]}, hypothesis)
    assert set(idea) >= set(IDEA_KEYS)
    assert filled == ["Name", "Abstract", "Short Hypothesis", "Risk Factors and Limitations"]
    assert idea["Name"] == "warm_restarts_revisited"
    assert idea["Abstract"] == idea["Short Hypothesis"] == "Cosine restarts beat step decay."
    assert idea["Experiments"] == ["cifar10 sweep"] and idea["Risk Factors and Limitations"] == DEFAULT_RISKS
    idea, filled = complete({}, hypothesis)
    assert idea["Title"] == "Warm restarts help small CNNs" and idea["Experiments"] == DEFAULT_EXPERIMENTS
    with pytest.raises(InvalidIdea, match="title and a description"):
        complete({"Title": "  "}, {"title": "", "idea": ""})
    assert slug("../../etc/passwd") == "etc_passwd" and slug("日本") == "idea"


@pytest.mark.parametrize("key, value, reason", [
    ("Title", ["a list"], "ideaJson.Title must be text, not list"),
    ("Short Hypothesis", {"x": 1}, "ideaJson.Short Hypothesis must be text, not dict"),
    ("Experiments", {"plan": "a dict"}, "ideaJson.Experiments must be text, a list of texts or a list of objects"),
    ("Experiments", ["text", 3], "ideaJson.Experiments must be text"),
    ("Risk Factors and Limitations", [{"x": 1}], "ideaJson.Risk Factors and Limitations must be text or a list of texts"),
    ("Code", 42, "ideaJson.Code must be text, not int"),
])
def test_an_idea_upstream_would_fail_on_hours_later_is_refused_naming_the_key(key, value, reason):
    idea = {"Title": "T", "Abstract": "A", key: value}
    with pytest.raises(InvalidIdea, match=reason):
        complete(idea, {"title": "t", "idea": "i"})


def _cfg(tmp_path, **kw):
    return AiScientistConfig(root=tmp_path, python=Path(sys.executable), bfts_config=tmp_path / "bfts_config.yaml", **kw)


BFTS = {"agent": {"code": {"model": "anthropic.claude-3-5-sonnet-20241022-v2:0"}, "feedback": {"model": "gpt-4o"},
                  "vlm_feedback": {"model": "gpt-4o"}}, "generate_report": True, "report": {"model": "gpt-4o"}}


def test_every_missing_credential_of_this_and_later_steps_is_named_before_any_work(tmp_path):
    cfg = _cfg(tmp_path, model_review="claude-3-5-sonnet")
    with pytest.raises(PipelineUnavailable) as caught:
        credentials.check("ideation", cfg, BFTS, {}, generate_ideas=False)
    message = str(caught.value)
    assert "anthropic.claude-3-5-sonnet-20241022-v2:0 (Amazon Bedrock) needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in message
    assert "gpt-4o (OpenAI) needs OPENAI_API_KEY" in message
    assert "claude-3-5-sonnet (Anthropic) needs ANTHROPIC_API_KEY" in message
    env = {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "OPENAI_API_KEY": "o", "ANTHROPIC_API_KEY": "a"}
    credentials.check("ideation", cfg, BFTS, env, generate_ideas=True)  # Bedrock's region defaults to us-east-1
    # the last step needs only the reviewer's key
    credentials.check("auto_validation", cfg, BFTS, {"ANTHROPIC_API_KEY": "a"}, generate_ideas=False)
    with pytest.raises(PipelineUnavailable, match="does not support the model 'mistral-7b'"):
        credentials.client_need("mistral-7b")


def test_bedrock_credentials_boto3_finds_elsewhere_count_and_ollama_in_the_tree_search_needs_an_openai_key(tmp_path):
    cfg = _cfg(tmp_path, model_review="gpt-4o-2024-11-20")
    env = {"OPENAI_API_KEY": "o"}
    role = Probe(vlms=("gpt-4o-2024-11-20", "gpt-4o-2024-05-13"), aws_credentials=True)
    credentials.check("Stage_1", cfg, BFTS, env, generate_ideas=False, probe=role)  # a pod's role, found by boto3
    with pytest.raises(PipelineUnavailable, match="Amazon Bedrock"):
        credentials.check("Stage_1", cfg, BFTS, env, generate_ideas=False, probe=Probe(role.vlms, aws_credentials=False))
    ollama = {**BFTS, "agent": {**BFTS["agent"], "code": {"model": "ollama/qwen3:32b"}}}
    with pytest.raises(PipelineUnavailable, match="ollama/qwen3:32b .* needs OPENAI_API_KEY"):
        credentials.check("Stage_1", cfg, ollama, {}, generate_ideas=False, probe=role)


def test_the_writeup_and_review_models_must_be_among_upstreams_vision_models(tmp_path):
    probe = Probe(vlms=("gpt-4o-2024-11-20",), aws_credentials=True)
    cfg = _cfg(tmp_path, model_writeup_small="gpt-4o-2024-05-13", model_review="o1-preview")
    with pytest.raises(PipelineUnavailable) as caught:
        credentials.check("paper", cfg, BFTS, {"OPENAI_API_KEY": "o"}, generate_ideas=False, probe=probe)
    assert "gpt-4o-2024-05-13 is not one of upstream's vision models (gpt-4o-2024-11-20)" in str(caught.value)
    assert "o1-preview is not one of upstream's vision models" in str(caught.value)


def test_the_checkout_the_interpreter_and_upstreams_imports_are_checked_with_the_fix_named(tmp_path, monkeypatch):
    monkeypatch.delenv("AI_SCIENTIST_ROOT", raising=False)
    with pytest.raises(PipelineUnavailable, match="AI_SCIENTIST_ROOT is not set.*git clone .*requirements.txt"):
        AiScientistConfig.from_env()
    cfg = AiScientistConfig.from_env({"AI_SCIENTIST_ROOT": str(tmp_path), "AI_SCIENTIST_REVIEW_ENSEMBLE": "5"})
    assert cfg.python == tmp_path / ".venv" / "bin" / "python" and cfg.review_ensemble == 5
    with pytest.raises(PipelineUnavailable, match="AI_SCIENTIST_PASS_OVERALL='high' is not a float"):
        AiScientistConfig.from_env({"AI_SCIENTIST_ROOT": str(tmp_path), "AI_SCIENTIST_PASS_OVERALL": "high"})
    with pytest.raises(PipelineUnavailable, match="AI_SCIENTIST_POLL_S='nan' must be a finite number"):
        AiScientistConfig.from_env({"AI_SCIENTIST_ROOT": str(tmp_path), "AI_SCIENTIST_POLL_S": "nan"})
    relative = AiScientistConfig.from_env({"AI_SCIENTIST_ROOT": "checkout", "AI_SCIENTIST_PYTHON": "venv/bin/python"})
    assert relative.python.is_absolute() and relative.root.is_absolute()
    with pytest.raises(PipelineUnavailable, match="not an AI-Scientist-v2 checkout"):
        cfg.check_code()
    (tmp_path / "ai_scientist" / "blank_icbinb_latex").mkdir(parents=True)
    (tmp_path / "ai_scientist" / "__init__.py").write_text("")
    (tmp_path / "ai_scientist" / "blank_icbinb_latex" / "template.tex").write_text("")
    with pytest.raises(PipelineUnavailable, match="no tree-search config"):
        cfg.check_code()
    (tmp_path / "bfts_config.yaml").write_text("exp_name: mine\ngenerate_report: false\n")
    with pytest.raises(PipelineUnavailable, match="no Python interpreter at .*AI_SCIENTIST_PYTHON"):
        cfg.check_code()
    cfg = _cfg(tmp_path)
    with pytest.raises(PipelineUnavailable, match="cannot import AI-Scientist-v2 .*No module named"):
        cfg.check_code()
    settings, changed = cfg.tree_search_settings()
    assert (settings["exp_name"], settings["generate_report"]) == ("run", True)
    assert changed == ["exp_name: 'mine' -> 'run'", "generate_report: False -> True"]


def test_plots_are_found_once_each_and_only_when_they_stopped_changing(tmp_path):
    results = tmp_path / "experiment_results" / "experiment_a1_proc_7"
    results.mkdir(parents=True)
    (results / "loss.png").write_bytes(b"\x89PNG partial")
    watcher = PlotWatcher()
    assert watcher.ready(tmp_path) == []
    assert watcher.ready(tmp_path) == [results / "loss.png"]
    (results / "acc.png").write_bytes(b"\x89PNG")
    assert watcher.ready(tmp_path) == []
    assert watcher.ready(tmp_path, final=True) == [results / "acc.png"]
    assert watcher.ready(tmp_path, final=True) == []


def test_token_usage_of_every_phase_is_summed_per_model(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"gpt-4o": {"tokens": {"prompt": 10, "completion": 2}, "cost (USD)": 0.5}}))
    (tmp_path / "b.json").write_text(json.dumps({"gpt-4o": {"tokens": {"prompt": 5}, "cost (USD)": 0.25},
                                                 "o1": {"tokens": {"prompt": 1}, "cost (USD)": 1.0}}))
    (tmp_path / "broken.json").write_text("{")
    total = merge_token_usage(sorted(tmp_path.glob("*.json")))
    assert total == {"gpt-4o": {"tokens": {"prompt": 15, "completion": 2}, "cost (USD)": 0.75},
                     "o1": {"tokens": {"prompt": 1}, "cost (USD)": 1.0}}


def test_a_restart_clears_every_entry_that_would_bump_upstreams_run_index(tmp_path):
    for name in ("logs/0-run", "0-run/working", "1-run"):
        (tmp_path / name).mkdir(parents=True)
    (tmp_path / "idea.json").write_text("{}")
    (tmp_path / "data").mkdir()
    assert child.clear_tree_search(tmp_path) == ["0-run", "1-run", "logs"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "idea.json"]


class _Process:
    """Stands in for the tree-search child: running while `returncode` is None."""

    def __init__(self, returncode):
        self.returncode = returncode

    def poll(self):
        return self.returncode


def _follow(tmp_path, stage, returncode):
    ctx = RecordingContext(workdir=tmp_path)
    translator = ProgressTranslator(ctx, tmp_path / "ai_scientist" / "logs" / "0-run", stage, 20)
    steps._follow(ctx, _cfg(tmp_path, poll_s=0.001), _Process(returncode), translator, PlotWatcher())
    return ctx, translator


def test_following_a_stage_ends_when_the_tree_search_starts_the_next_one(tmp_path):
    _idea_dir(tmp_path)
    ctx, translator = _follow(tmp_path, "Stage_1", None)
    assert translator.summary()["total_nodes"] == 3
    assert ctx.of("metric")


def test_a_tree_search_that_ends_on_buggy_nodes_fails_the_stage_as_all_nodes_buggy(tmp_path):
    _write_stage(tmp_path / "ai_scientist" / "logs" / "0-run" / STAGE_1, [_node("a", True, None)])
    with pytest.raises(AllNodesBuggy, match="Stage_1"):
        _follow(tmp_path, "Stage_1", 0)


def test_a_tree_search_that_crashes_before_a_stage_names_its_log(tmp_path):
    _idea_dir(tmp_path)
    with pytest.raises(RuntimeError, match="exited with code 1 before finishing Stage_2; see .*experiments.log"):
        _follow(tmp_path, "Stage_2", 1)


def test_logs_outside_0_run_fail_the_stage_instead_of_feeding_empty_summaries_on(tmp_path):
    idea = _idea_dir(tmp_path)
    (idea / "logs" / "1-run").mkdir()
    with pytest.raises(PipelineError, match="wrote its logs to .*1-run, not logs/0-run"):
        _follow(tmp_path, "Stage_2", None)


def test_a_cancel_stops_a_running_child_and_its_process_group(tmp_path, monkeypatch):
    (tmp_path / "ai_scientist").mkdir()
    (tmp_path / "ai_scientist" / "__init__.py").write_text("")
    (tmp_path / "bfts_config.yaml").write_text("agent: {steps: 1}\n")
    script = tmp_path / "sleeper.py"
    script.write_text("import subprocess, sys, time\nsubprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
                      "time.sleep(60)\n")
    monkeypatch.setattr(child, "ENTRY", script)
    started = []
    real_start = child.start
    monkeypatch.setattr(child, "start", lambda *a, **k: started.append(real_start(*a, **k)) or started[-1])
    ctx = RecordingContext(workdir=tmp_path / "work", cancel_requested=True)
    with pytest.raises(Canceled):
        child.run(ctx, _cfg(tmp_path, poll_s=0.01), "plots", {})
    (process,) = started
    assert process.returncode is not None
    with pytest.raises(ProcessLookupError):  # its grandchild too
        os.killpg(process.pid, 0)
