import functools
import json
import math
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest

from orchestrator.events import STAGE_NAMES, make_event, validate_event
from pipeline import Canceled, InvalidIdea, get_pipeline
from pipeline.context import RecordingContext
from pipeline.demo import figures, ideas, model
from pipeline.demo import paper as writer
from pipeline.demo import review as reviewer
from pipeline.demo import steps as demo
from pipeline.demo.ideas import TEMPLATES, TEMPLATES_BY_NAME

STANDARDISE = ("Feature standardisation", "Standardise each feature to zero mean and unit variance before training.")
REWEIGHT = ("Class reweighting", "Use inverse-frequency class weights in the loss to correct class imbalance.")
SQUARED = ("Polynomial features", "Add squared quadratic features so the model can fit a non-linear boundary.")
#: The user report's hypothesis: an optimiser claim whose text also says "scale" in passing.
ADAM = ("Adam converges faster than plain SGD",
        "Adam adapts each parameter's step size, so within the same budget it should reach a lower loss than plain "
        "SGD; this matters at scale.")
EXPERIMENT = ("ideation", "Stage_1", "Stage_2", "Stage_3", "Stage_4")
PNG = b"\x89PNG\r\n\x1a\n"


def _context(tmp_path, hypothesis=STANDARDISE, seed=0, workdir="run", **kwargs):
    title, idea = hypothesis
    workdir = tmp_path / workdir
    workdir.mkdir()
    return RecordingContext(hypothesis={"title": title, "idea": idea, "ideaJson": None}, seed=seed,
                            workdir=workdir, **kwargs)


def _run(ctx, steps=STAGE_NAMES):
    pipeline = get_pipeline("demo")
    for name in steps:
        ctx.results[name] = pipeline.step(name).run(ctx)
    return ctx.results


@functools.cache
def _stored_json(hypothesis, seed):
    """All step outputs of one complete run, as the worker stores them (JSON): computed once per
    module, so tests of later steps need not repeat the earlier ones."""
    with tempfile.TemporaryDirectory() as tmp:
        return json.dumps(_run(_context(Path(tmp), hypothesis, seed)))


def _stored(hypothesis=STANDARDISE, seed=0, before=None):
    results = json.loads(_stored_json(hypothesis, seed))
    if before is None:
        return results
    return {k: v for k, v in results.items() if STAGE_NAMES.index(k) < STAGE_NAMES.index(before)}


def _calls_of_step(ctx, name):
    """Run one step and return only the calls it made."""
    before = len(ctx.calls)
    ctx.results[name] = get_pipeline("demo").step(name).run(ctx)
    return ctx.calls[before:]


def test_ideation_picks_the_template_the_hypothesis_names(tmp_path):
    ctx = _context(tmp_path)
    out = _run(ctx, ["ideation"])["ideation"]
    assert out["idea"] == "feature_standardisation"
    assert out["components"] == ["centering", "scaling"]
    assert ctx.of("ideas") == [{"count": len(TEMPLATES), "top_k": sum(c["score"] > 0 for c in out["candidates"]),
                                "chosen": "feature_standardisation", "mapping": out["mapping"]}]
    assert out["candidates"][0] == {"name": "feature_standardisation", "score": out["score"]}
    assert out["words"] == ["standardisation", "Standardise", "zero mean", "unit variance"]


def test_ideation_says_plainly_which_synthetic_experiment_it_maps_the_hypothesis_onto(tmp_path):
    ctx = _context(tmp_path)
    out = _run(ctx, ["ideation"])["ideation"]
    assert out["mapping"].startswith("The demo maps this hypothesis onto its synthetic experiment "
                                     "feature_standardisation (Standardising input features")
    assert "matched on the words 'standardisation', 'Standardise', 'zero mean', 'unit variance'" in out["mapping"]
    assert "not the hypothesis as worded" in out["mapping"]
    assert ctx.of("log")[0]["message"] == out["mapping"]  # in the run's history too


def test_a_hypothesis_stuffed_with_long_keywords_still_gets_a_mapping_ingest_accepts():
    words = ["standardi", "normali", "rescal", "whiten", "centering", "z-score", "scaling", "centring"]
    idea = " ".join(w + "x" * 300 for w in words)
    match = ideas.choose({"title": "Standardise " + idea, "idea": idea})
    statement = match.statement()
    assert len(statement) <= 2000 and statement.count("'") == 2 * ideas.MAX_WORDS_SHOWN and ", ...)" in statement
    validate_event(make_event("ai.ideation.generated", "r", 1, "worker://t",
                              {"count": 1, "mapping": statement, "chosen": match.template.name}))


def test_an_optimiser_hypothesis_is_tested_with_adam_not_by_an_incidental_word(tmp_path):
    ctx = _context(tmp_path, ADAM)
    out = _run(ctx, ["ideation"])["ideation"]
    assert out["idea"] == "adam_optimiser"
    assert out["components"] == ["momentum", "adaptive_step_sizes"]
    assert "adam_optimiser (The Adam optimiser in place of plain gradient descent; matched on the words 'Adam')" \
        in out["mapping"]
    assert {c["name"]: c["score"] for c in out["candidates"]}["feature_standardisation"] == 1  # 'scale', in passing


@pytest.mark.parametrize("title, idea, words", [
    ("A better optimiser", "A better optimiser than SGD trains faster at scale.", "'scale'"),
    ("Try it", "Normalise the data.", "'Normalise'"),
])
def test_a_single_word_in_the_body_is_too_weak_a_match_and_is_refused(tmp_path, title, idea, words):
    with pytest.raises(InvalidIdea, match=f"Only one word of the hypothesis, {words}") as caught:
        _run(_context(tmp_path, (title, idea)), ["ideation"])
    assert "adam_optimiser (the Adam optimiser in place of plain gradient descent)" in str(caught.value)


@pytest.mark.parametrize("title, idea, expected", [
    ("Try it", "Try standardisation.", "feature_standardisation"),
    ("A browser hypothesis", "Standardising inputs speeds up logistic regression.", "feature_standardisation"),
    ("x", "Stop early: early stopping on a holdout.", "early_stopping"),
])
def test_one_word_that_names_a_change_is_a_clear_match(tmp_path, title, idea, expected):
    assert _run(_context(tmp_path, (title, idea)), ["ideation"])["ideation"]["idea"] == expected


def test_a_hypothesis_naming_two_experiments_alike_is_refused_naming_both(tmp_path):
    with pytest.raises(InvalidIdea, match="matches two of the demo's experiments equally: adam_optimiser .* and "
                                          "momentum"):
        _run(_context(tmp_path, ("Adam with momentum", "Use Adam or momentum.")), ["ideation"])


@pytest.mark.parametrize("title, idea, expected", [
    ("Momentum speeds up gradient descent", "Heavy-ball momentum accelerates training.", "momentum"),
    ("A cosine learning-rate schedule beats a constant rate", "Anneal the learning rate.", "cosine_lr_decay"),
    ("Weight decay generalises better", "An L2 penalty on the weights.", "l2_regularisation"),
])
def test_optimiser_and_schedule_hypotheses_land_on_their_own_experiments(tmp_path, title, idea, expected):
    assert _run(_context(tmp_path, (title, idea)), ["ideation"])["ideation"]["idea"] == expected


def test_plain_gradient_descent_is_exactly_the_baseline_update():
    grad = np.array([0.5, -2.0, 1e-3])
    step = model._Optimiser(model.Recipe(lr=0.1), grad.shape, 10).step(grad, 1)
    assert step.tolist() == (0.1 * grad).tolist()


def test_adam_takes_a_step_of_the_learning_rate_per_parameter_whatever_the_gradient_scale():
    grad = np.array([30.0, -0.01, 1e-4])  # badly scaled: Adam's first step ignores the scale
    recipe = model.Recipe(lr=0.1).with_overrides({"momentum": 0.9, "adaptive": True})
    step = model._Optimiser(recipe, grad.shape, 10).step(grad, 1)
    assert step == pytest.approx(0.1 * np.sign(grad), rel=1e-3)


def test_a_cosine_schedule_decays_the_rate_from_its_value_to_near_zero():
    optimiser = model._Optimiser(model.Recipe(lr=0.2, lr_schedule="cosine"), (1,), 100)
    ones = np.ones(1)
    assert optimiser.step(ones, 1)[0] == pytest.approx(0.2)
    assert optimiser.step(ones, 51)[0] == pytest.approx(0.1)
    assert optimiser.step(ones, 100)[0] < 0.2 * 1e-3


@pytest.mark.parametrize("title, idea", [("", ""), ("A title only", "   \n\t")])
def test_a_blank_idea_is_refused_as_an_invalid_idea(tmp_path, title, idea):
    with pytest.raises(InvalidIdea, match="no idea text"):
        _run(_context(tmp_path, (title, idea)), ["ideation"])


def test_an_idea_the_demo_cannot_test_is_refused_naming_what_it_can_test(tmp_path):
    with pytest.raises(InvalidIdea) as caught:
        _run(_context(tmp_path, ("Protein folding", "Fold proteins with a diffusion model.")), ["ideation"])
    assert "feature_standardisation" in str(caught.value)
    assert "ai_scientist pipeline" in str(caught.value)


def test_stage_1_reports_a_learning_curve_with_epochs_as_steps(tmp_path):
    ctx = _context(tmp_path)
    _run(ctx, ["ideation"])
    calls = _calls_of_step(ctx, "Stage_1")
    out = ctx.results["Stage_1"]
    losses = [p for kind, p in calls if kind == "metric" and p["name"] == "preliminary_val_loss"]
    assert [p["step"] for p in losses] == out["curve"]["epoch"]
    assert out["curve"]["epoch"][-1] == model.EPOCHS
    assert [p["value"] for p in losses] == pytest.approx(out["curve"]["val_loss"], rel=1e-5)
    assert out["dataset"]["n_features"] == model.N_INFORMATIVE + model.N_NOISE
    assert sum(kind == "checkpoint" for kind, _ in calls) == len(losses)


def test_stage_2_tries_every_learning_rate_and_keeps_the_best(tmp_path):
    out = _run(_context(tmp_path), EXPERIMENT[:3])["Stage_2"]
    rates = [t["lr"] for t in out["trials"]]
    assert set(model.LR_GRID) <= set(rates) and rates == sorted(rates)
    best = min(out["trials"], key=lambda t: t["val_loss"])
    assert (out["best_lr"], out["best_val_loss"]) == (best["lr"], best["val_loss"])


@pytest.mark.parametrize(("best", "added"), [
    (3e-6, {3e-5, 1e-5, 3e-6, 1e-6}),  # extended past the turn, which it then sees
    (1e-3, set()),  # inside the grid: nothing added
    (30.0, {3.0, 10.0, 30.0, 100.0}),
    (1e-9, {3e-5, 1e-5, 3e-6, 1e-6}),  # never turns: stops after MAX_SWEEP_EXTENSIONS, at an edge still
])
def test_a_sweep_whose_best_is_an_end_of_the_grid_goes_on_beyond_it_a_few_rates(monkeypatch, best, added):
    """The loss falls towards `best`: the sweep extends past the grid's end until it turns."""
    monkeypatch.setattr(model, "fit", lambda data, recipe, rng: model.Fit(abs(math.log10(recipe.lr / best)), 0.5, 1))
    recipe, trials = model.tune_lr(None, model.Recipe(), [0, 1], lambda lr, fit: None)
    rates = [t["lr"] for t in trials]
    assert set(rates) - set(model.LR_GRID) == added and rates == sorted(rates)
    assert recipe.lr == min(trials, key=lambda t: t["val_loss"])["lr"]


def test_stage_3_compares_both_arms_on_the_same_seeds(tmp_path):
    ctx = _context(tmp_path)
    _run(ctx, EXPERIMENT[:3])
    calls = _calls_of_step(ctx, "Stage_3")
    out = ctx.results["Stage_3"]
    for arm in ("baseline", "proposed"):
        assert len(out[arm]["val_loss"]) == len(out[arm]["val_accuracy"]) == demo.N_SEEDS
        assert out[arm]["mean"] == pytest.approx(sum(out[arm]["val_loss"]) / demo.N_SEEDS, rel=1e-5)
        per_seed = [p["step"] for kind, p in calls if kind == "metric" and p["name"] == f"{arm}_val_loss_per_seed"]
        assert per_seed == list(range(1, demo.N_SEEDS + 1))
    assert out["baseline"]["lr"] == ctx.results["Stage_2"]["best_lr"]
    diffs = [b - p for b, p in zip(out["baseline"]["val_loss"], out["proposed"]["val_loss"], strict=True)]
    assert out["improvement"]["mean"] == pytest.approx(sum(diffs) / len(diffs), rel=1e-4)
    assert out["improvement"]["df"] == demo.N_SEEDS - 1
    assert out["improvement"]["p"] == pytest.approx(reviewer.t_sf(out["improvement"]["t"], demo.N_SEEDS - 1), rel=1e-3)


def test_metrics_name_what_they_are_and_no_sweep_trial_is_a_metric(tmp_path):
    """The run keeps the last value per name: a series says what it runs over, and a sweep's
    last trial (the largest rate) never stands as a result."""
    ctx = _context(tmp_path)
    _run(ctx, EXPERIMENT)
    names = {p["name"] for p in ctx.of("metric")}
    assert names == {"preliminary_val_loss", "preliminary_val_accuracy", "baseline_lr", "baseline_tuning_val_loss",
                     "proposed_lr", "baseline_val_loss_per_seed", "proposed_val_loss_per_seed"}
    stepped = {p["name"] for p in ctx.of("metric") if p["step"] is not None}
    assert stepped == {"preliminary_val_loss", "preliminary_val_accuracy", "baseline_val_loss_per_seed",
                       "proposed_val_loss_per_seed"}
    sweeps = [log for log in ctx.of("log") if "learning-rate sweep kept" in log["message"]]
    assert [log["kv"]["arm"] for log in sweeps] == ["baseline", "feature_standardisation"]


def test_a_sweep_that_keeps_an_end_of_its_grid_is_logged_as_a_warning(tmp_path):
    ctx = _context(tmp_path)
    trials = [{"lr": lr, "val_loss": 1.0 + i} for i, lr in enumerate(model.LR_GRID)]  # best: the smallest
    demo._log_sweep(ctx, "baseline", trials, model.LR_GRID[0])
    demo._log_sweep(ctx, "baseline", trials, model.LR_GRID[3])
    first, second = ctx.of("log")
    assert first["level"] == "warning" and first["kv"]["edge"] == "smallest"
    assert "the smallest rate of the grid: its best rate may lie outside it" in first["message"]
    assert second["level"] == "info" and "edge" not in second["kv"]


def test_stage_4_removes_each_component_once_and_measures_its_cost(tmp_path):
    out = _run(_context(tmp_path), EXPERIMENT)
    ablations = out["Stage_4"]["ablations"]
    assert [a["removed"] for a in ablations] == ["centering", "scaling"]
    full = out["Stage_3"]["proposed"]["val_loss"]
    for a in ablations:
        costs = [x - y for x, y in zip(a["val_loss"], full, strict=True)]
        assert a["delta_mean"] == pytest.approx(sum(costs) / len(costs), rel=1e-4, abs=1e-9)


def test_every_step_reports_progress_that_ends_at_one(tmp_path):
    ctx = _context(tmp_path)
    for name in STAGE_NAMES:
        calls = _calls_of_step(ctx, name)
        fractions = [p["fraction"] for kind, p in calls if kind == "progress"]
        assert fractions, name
        assert fractions == sorted(fractions), name
        assert fractions[-1] == 1.0, name
        assert any(kind == "checkpoint" for kind, _ in calls), name


def test_outputs_are_small_json_that_survives_a_round_trip(tmp_path):
    results = _run(_context(tmp_path), STAGE_NAMES)
    assert json.loads(json.dumps(results)) == _stored()
    for name, out in results.items():
        text = json.dumps(out, allow_nan=False)
        assert len(text) < 100_000, name
        assert json.loads(text) == out, name


def test_the_same_seed_and_hypothesis_give_identical_numbers(tmp_path):
    first = _run(_context(tmp_path, seed=7, workdir="a"), EXPERIMENT)
    second = _run(_context(tmp_path, seed=7, workdir="b"), EXPERIMENT)
    assert first == second


def test_a_different_seed_changes_the_numbers(tmp_path):
    first = _run(_context(tmp_path, seed=1, workdir="a"), EXPERIMENT)
    second = _run(_context(tmp_path, seed=2, workdir="b"), EXPERIMENT)
    assert first["Stage_1"]["data_seed"] != second["Stage_1"]["data_seed"]
    assert first["Stage_3"]["baseline"]["val_loss"] != second["Stage_3"]["baseline"]["val_loss"]
    assert first["Stage_3"]["improvement"] != second["Stage_3"]["improvement"]


def test_a_reworded_hypothesis_draws_new_data_for_the_same_idea(tmp_path):
    title, idea = STANDARDISE
    first = _run(_context(tmp_path, workdir="a"), EXPERIMENT)
    second = _run(_context(tmp_path, (title, idea + " Scaling should help."), workdir="b"), EXPERIMENT)
    assert first["ideation"]["idea"] == second["ideation"]["idea"]
    assert first["Stage_3"]["proposed"]["val_loss"] != second["Stage_3"]["proposed"]["val_loss"]


@pytest.mark.parametrize("seed", [0, 1])
def test_a_change_that_helps_passes_auto_validation(tmp_path, seed):
    ctx = _context(tmp_path, STANDARDISE, seed=seed, results=_stored(seed=seed, before="auto_validation"))
    out = _run(ctx, ["auto_validation"])["auto_validation"]
    assert out["verdict"] == "pass"
    assert ctx.of("validation_started") == [{"model": "rule-based-reviewer", "rubric_version": "2"}]
    (verdict,) = ctx.of("verdict")
    assert verdict["verdict"] == "pass"
    assert verdict["scores"] == out["scores"] == {"soundness": 1.0, "evidence": 1.0, "ablation_consistency": 1.0,
                                                  "overall": 1.0}
    test = verdict["results"]["test"]
    assert test["statistic"] >= reviewer.t_critical(demo.N_SEEDS - 1) and test["p_value"] < 0.05
    assert verdict["results"]["effects"]["relative_improvement"] == pytest.approx(
        ctx.results["Stage_3"]["improvement"]["mean"] / ctx.results["Stage_3"]["baseline"]["mean"], rel=1e-3)
    assert "claim supported" in verdict["notes"]


@pytest.mark.parametrize("hypothesis", [STANDARDISE, REWEIGHT], ids=["pass", "fail"])
def test_scores_are_shares_within_0_and_1_and_the_statistics_are_results_under_their_names(tmp_path, hypothesis):
    ctx = _context(tmp_path, hypothesis, results=_stored(hypothesis, before="auto_validation"))
    out = _run(ctx, ["auto_validation"])["auto_validation"]
    (verdict,) = ctx.of("verdict")
    assert all(0.0 <= score <= 1.0 for score in verdict["scores"].values()), verdict["scores"]
    assert not {"significance", "effect_size", "cohen_dz"} & set(verdict["scores"])
    s3, s4 = ctx.results["Stage_3"], ctx.results["Stage_4"]
    results = verdict["results"]
    assert results == out["results"]
    assert results["metric"] == "validation log-loss (lower is better)"
    expected = [("baseline", s3["baseline"]), (s3["idea"], s3["proposed"])] + [
        (f"without {a['removed']}", a) for a in s4["ablations"]]
    assert [a["name"] for a in results["arms"]] == [name for name, _ in expected]
    for arm, (_, stored) in zip(results["arms"], expected, strict=True):
        assert arm["n"] == demo.N_SEEDS
        assert arm["mean"] == pytest.approx(stored["mean"], rel=1e-4)
        assert arm["stderr"] == pytest.approx(stored["stderr"], rel=1e-3)
        assert arm["accuracy"] == pytest.approx(stored["mean_accuracy"], rel=1e-4)
    assert results["test"] == {"name": "paired t-test, one-sided (baseline loss - proposed loss > 0)",
                               "statistic": s3["improvement"]["t"], "df": demo.N_SEEDS - 1,
                               "p_value": pytest.approx(s3["improvement"]["p"], rel=1e-3)}
    assert validate_event(make_event("ai.validation.auto_completed", "r", 1, "s", {
        "verdict": verdict["verdict"], "scores": verdict["scores"], "results": results}))["data"]["results"] == results


def test_the_t_distribution_tail_matches_the_tabled_critical_values():
    for df, critical in reviewer._T_CRITICAL_05.items():
        assert reviewer.t_sf(critical, df) == pytest.approx(0.05, abs=5e-4), df
    assert reviewer.t_sf(0.0, 4) == pytest.approx(0.5)
    assert reviewer.t_sf(-2.132, 4) == pytest.approx(0.95, abs=5e-4)
    assert reviewer.t_sf(1.0, 1) == pytest.approx(0.25)  # Cauchy: atan(1) = pi/4


@pytest.mark.parametrize("hypothesis", [REWEIGHT, SQUARED], ids=["class_reweighting", "squared_features"])
def test_a_change_that_does_not_help_fails_auto_validation(tmp_path, hypothesis):
    ctx = _context(tmp_path, hypothesis)
    out = _run(ctx, (*EXPERIMENT, "auto_validation"))["auto_validation"]
    assert out["verdict"] == "fail"
    failed = {c["name"] for c in out["checks"] if not c["passed"]}
    assert failed & {"improves_on_average", "significant", "meaningful_effect"}
    assert "claim NOT supported" in ctx.of("verdict")[0]["notes"]


def _stage3(base, prop):
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    arm = lambda xs: {"val_loss": xs, "val_accuracy": [0.8] * len(xs), "mean": mean(xs)}  # noqa: E731
    return {"idea": "x", "baseline": arm(base), "proposed": arm(prop)}


STAGE1 = {"dataset": {"majority_rate_val": 0.5}}


def test_the_reviewer_fails_a_significant_but_negligible_improvement():
    stage3 = _stage3([0.600, 0.610, 0.620, 0.630, 0.640], [0.599, 0.6091, 0.6189, 0.6291, 0.6389])
    review = reviewer.review(STAGE1, stage3, {"ablations": []})
    assert review.verdict == "fail"
    assert {c.name: c.passed for c in review.checks}["significant"]
    assert not {c.name: c.passed for c in review.checks}["meaningful_effect"]


def test_the_reviewer_fails_a_change_with_a_harmful_component():
    stage3 = _stage3([0.60, 0.62, 0.61, 0.63, 0.60], [0.50, 0.51, 0.52, 0.50, 0.51])
    harmful = {"removed": "extra", "val_loss": [0.45, 0.46, 0.47, 0.45, 0.46], "val_accuracy": [0.8] * 5,
               "delta_mean": -0.05, "delta_stderr": 0.005}
    review = reviewer.review(STAGE1, stage3, {"ablations": [harmful]})
    assert review.verdict == "fail"
    assert "removing extra lowers the loss" in review.notes
    assert review.scores["ablation_consistency"] == 0.0


def test_a_zero_variance_difference_still_gives_finite_scores():
    stage3 = _stage3([0.6] * 5, [0.6] * 5)
    review = reviewer.review(STAGE1, stage3, {"ablations": []})
    assert review.verdict == "fail"
    assert json.dumps(review.scores, allow_nan=False)


@pytest.mark.parametrize("step", STAGE_NAMES)
def test_a_requested_cancel_stops_every_step(tmp_path, step):
    ctx = _context(tmp_path, cancel_requested=True, results=_stored(before=step))
    with pytest.raises(Canceled):
        get_pipeline("demo").step(step).run(ctx)


def test_plots_writes_real_png_files_and_registers_each_as_a_figure(tmp_path):
    ctx = _context(tmp_path)
    out = _run(ctx, (*EXPERIMENT, "plots"))["plots"]
    artifacts = ctx.of("artifact")
    assert len(artifacts) == len(out["figures"]) == 4
    for artifact, figure in zip(artifacts, out["figures"], strict=True):
        assert (artifact["kind"], artifact["content_type"]) == ("figure", "image/png")
        assert artifact["path"] == ctx.workdir / figure["file"]
        assert artifact["path"].read_bytes()[:8] == PNG
        assert figure["key"] == artifact["key"]


def test_paper_writes_a_real_pdf_and_reports_its_word_count(tmp_path):
    ctx = _context(tmp_path)
    out = _run(ctx, (*EXPERIMENT, "paper"))["paper"]
    (paper,) = ctx.of("paper")
    pdf = paper["path"].read_bytes()
    assert paper["path"] == ctx.workdir / "paper" / "paper.pdf"
    assert pdf.startswith(b"%PDF-") and b"%%EOF" in pdf[-32:]
    assert paper["word_count"] == out["word_count"] > 100
    assert ctx.of("artifact")[-1]["kind"] == "paper"


def test_steps_resume_from_stored_outputs_alone_in_a_fresh_workdir(tmp_path):
    original = _stored()
    for cut in ("Stage_3", "plots"):
        resumed = _context(tmp_path, workdir=f"resumed-at-{cut}", results=_stored(before=cut))
        assert not (resumed.workdir / "figures").exists()
        later = _run(resumed, STAGE_NAMES[STAGE_NAMES.index(cut):])
        assert later["auto_validation"] == original["auto_validation"]
        assert later["Stage_4"] == original["Stage_4"]
        assert (resumed.workdir / "paper" / "paper.pdf").read_bytes().startswith(b"%PDF-")
        assert all(a["path"].read_bytes()[:8] == PNG for a in resumed.of("artifact") if a["kind"] == "figure")


# --- the paper ---------------------------------------------------------------------------------


def _paper(hypothesis=STANDARDISE, results=None):
    results = results or _stored(hypothesis)
    return writer.build(hypothesis[0], results), results


@pytest.mark.parametrize("hypothesis", [STANDARDISE, ADAM], ids=["standardisation", "adam"])
def test_the_paper_text_mentions_each_figure_and_the_chosen_experiment(hypothesis):
    paper, results = _paper(hypothesis)
    body = paper.body()
    placed = [b for b in paper.blocks if b.kind == "figure"]
    assert sorted(b.figure for b in placed) == sorted(figures.FIGURES)
    for n, block in enumerate(placed, start=1):
        assert block.text.startswith(f"Figure {n}: "), block.text
        mention = re.search(rf"Figure {n}\b", body).start()
        assert mention < paper.text().index(f"Figure {n}: ")  # the text refers to it before it appears
    idea = results["ideation"]
    template = TEMPLATES_BY_NAME[idea["idea"]]
    assert idea["mapping"] in body
    assert f"Submitted hypothesis: '{hypothesis[0]}'. The demo tests it as its synthetic experiment {template.name}" \
        in body
    assert paper.title == f"{template.title}: a {demo.N_SEEDS}-seed controlled study on synthetic data"
    assert "Table 1 " in body and [b.text[:8] for b in paper.blocks if b.kind == "table"] == ["Table 1:"]
    assert [b.text for b in paper.blocks if b.kind == "heading"] == [
        "Abstract", "1 Hypothesis and experiment", "2 Methods", "3 Results", "4 Discussion", "References"]


def test_the_adam_paper_reports_adam_not_standardisation():
    paper, results = _paper(ADAM)
    assert paper.title.startswith("The Adam optimiser in place of plain gradient descent")
    assert "standardis" not in paper.title.lower()
    assert "(Kingma and Ba 2015)" in paper.body()
    assert "'SGD' in a hypothesis means full-batch gradient descent here" in paper.body()


@pytest.mark.parametrize("hypothesis", [STANDARDISE, ADAM], ids=["standardisation", "adam"])
def test_the_paper_lists_exactly_the_references_its_text_cites(hypothesis):
    paper, _ = _paper(hypothesis)
    body = paper.body()
    cited = [full for label, full in writer.REFERENCES.values() if f"{label})" in body or f"{label};" in body]
    listed = [b.text for b in paper.blocks if b.kind == "reference"]
    assert sorted(listed) == sorted(cited) and listed == sorted(listed)
    for method in ("Cox 1958", "Cauchy 1847", "Student 1908", "LeCun et al. 1998"):
        assert method in body


def _with_lrs(results, baseline_at, proposed_at):
    results = json.loads(json.dumps(results))
    results["Stage_3"]["baseline"]["lr"] = results["Stage_2"]["trials"][baseline_at]["lr"]
    results["Stage_3"]["proposed"]["lr"] = results["Stage_3"]["proposed"]["trials"][proposed_at]["lr"]
    return results


def _discussion(paper):
    return paper.body()[paper.body().index("4 Discussion"):]


def test_the_discussion_says_when_the_baseline_kept_an_edge_of_its_sweep():
    results = _stored()
    low, _ = _paper(results=_with_lrs(results, 0, 4))
    smallest = results["Stage_2"]["trials"][0]["lr"]
    assert (f"The baseline kept the smallest learning rate of its sweep ({smallest:g}): its best rate may lie below the "
            "grid, so the baseline may be under-tuned and the gain over it overstated.") in _discussion(low)
    assert "The baseline's lowest tuning loss is at the smallest rate of the grid." in low.body()
    high, _ = _paper(results=_with_lrs(results, 4, -1))
    assert "The change kept the largest learning rate of its sweep (1): its best rate may lie above the grid" \
        in _discussion(high)
    inside, _ = _paper(results=_with_lrs(results, 4, 4))
    assert "Both arms kept a learning rate inside their sweeps" in _discussion(inside)
    assert "kept the smallest" not in inside.body() and "kept the largest" not in inside.body()


def test_the_discussion_says_when_the_baseline_barely_beats_chance():
    results = _with_lrs(_stored(), 4, 4)
    results["Stage_3"]["baseline"]["mean"] = 0.69
    assert "close to ln 2 = 0.6931" in _discussion(_paper(results=results)[0])
    results["Stage_3"]["baseline"]["mean"] = 0.5
    assert "ln 2" not in _discussion(_paper(results=results)[0])


def test_the_discussion_states_the_result_and_its_limits():
    passed = _discussion(_paper()[0])
    assert "lowered the validation log-loss of the tuned baseline by" in passed
    assert "Limits. The data are synthetic" in passed and "not to the hypothesis as worded" in passed
    failed = _discussion(_paper(REWEIGHT)[0])  # 0.3% lower, p = 0.04: "significant" but negligible
    assert "lowered the validation log-loss of the tuned baseline" not in failed
    assert "below the 1% the demo's review asks of a meaningful effect" in failed


def test_the_sweep_plot_uses_a_log_loss_axis_when_losses_span_orders_of_magnitude():
    results = _stored()
    losses = [t["val_loss"] for t in results["Stage_2"]["trials"] + results["Stage_3"]["proposed"]["trials"]]
    assert max(losses) / min(losses) > 10  # the raw baseline's largest rates blow the loss up
    ax = figures.standalone("lr_sweep", results).axes[0]
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
    narrow = json.loads(json.dumps(results))
    for i, trial in enumerate(narrow["Stage_2"]["trials"] + narrow["Stage_3"]["proposed"]["trials"]):
        trial["val_loss"] = 0.5 + 0.01 * (i % 9)
    assert figures.standalone("lr_sweep", narrow).axes[0].get_yscale() == "linear"


def test_the_paper_is_a4_pages_with_full_width_figures_and_every_word_of_its_text(tmp_path):
    paper, results = _paper()
    pages = figures._Layout(results).pages(paper)
    assert all(tuple(page.get_size_inches()) == pytest.approx((8.27, 11.69)) for page in pages)
    placed = [sub for page in pages for sub in page.subfigs]
    assert len(placed) == len(figures.FIGURES)
    for sub in placed:
        assert sub.bbox.width / sub.figure.dpi == pytest.approx(figures.FIGSIZE[0], rel=1e-3)
    drawn = " ".join(t.get_text() for page in pages for t in page.texts if t.get_position()[1] > 0.05)
    assert drawn.split() == paper.text().split()  # nothing dropped, in reading order
    path = tmp_path / "paper.pdf"
    assert figures.write_paper(path, paper, results) == paper.word_count()
    boxes = re.findall(rb"/MediaBox \[ ?0 0 ([\d.]+) ([\d.]+) ?\]", path.read_bytes())
    assert len(boxes) == len(pages) >= 3
    assert all((float(w), float(h)) == pytest.approx((595.44, 841.68), abs=0.5) for w, h in boxes)


def test_a_dollar_sign_in_the_hypothesis_is_drawn_as_written():
    paper, results = _paper(("Costs $5 and saves $6", STANDARDISE[1]), _stored())
    texts = [t.get_text() for page in figures._Layout(results).pages(paper) for t in page.texts]
    assert any(r"'Costs \$5 and saves \$6'" in text for text in texts)
