import functools
import json
import tempfile
from pathlib import Path

import pytest

from orchestrator.events import STAGE_NAMES
from pipeline import Canceled, InvalidIdea, get_pipeline
from pipeline.context import RecordingContext
from pipeline.demo import model
from pipeline.demo import review as reviewer
from pipeline.demo import steps as demo
from pipeline.demo.ideas import TEMPLATES

STANDARDISE = ("Feature standardisation", "Standardise each feature to zero mean and unit variance before training.")
REWEIGHT = ("Class reweighting", "Use inverse-frequency class weights in the loss to correct class imbalance.")
SQUARED = ("Polynomial features", "Add squared quadratic features so the model can fit a non-linear boundary.")
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
    assert ctx.of("ideas") == [{"count": len(TEMPLATES), "top_k": sum(c["score"] > 0 for c in out["candidates"])}]
    assert out["candidates"][0] == {"name": "feature_standardisation", "score": out["score"]}


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
    losses = [p for kind, p in calls if kind == "metric" and p["name"] == "val_loss"]
    assert [p["step"] for p in losses] == out["curve"]["epoch"]
    assert out["curve"]["epoch"][-1] == model.EPOCHS
    assert [p["value"] for p in losses] == pytest.approx(out["curve"]["val_loss"], rel=1e-5)
    assert out["dataset"]["n_features"] == model.N_INFORMATIVE + model.N_NOISE
    assert sum(kind == "checkpoint" for kind, _ in calls) == len(losses)


def test_stage_2_tries_every_learning_rate_and_keeps_the_best(tmp_path):
    out = _run(_context(tmp_path), EXPERIMENT[:3])["Stage_2"]
    assert [t["lr"] for t in out["trials"]] == list(model.LR_GRID)
    best = min(out["trials"], key=lambda t: t["val_loss"])
    assert (out["best_lr"], out["best_val_loss"]) == (best["lr"], best["val_loss"])


def test_stage_3_compares_both_arms_on_the_same_seeds(tmp_path):
    ctx = _context(tmp_path)
    _run(ctx, EXPERIMENT[:3])
    calls = _calls_of_step(ctx, "Stage_3")
    out = ctx.results["Stage_3"]
    for arm in ("baseline", "proposed"):
        assert len(out[arm]["val_loss"]) == len(out[arm]["val_accuracy"]) == demo.N_SEEDS
        assert out[arm]["mean"] == pytest.approx(sum(out[arm]["val_loss"]) / demo.N_SEEDS, rel=1e-5)
        per_seed = [p["step"] for kind, p in calls if kind == "metric" and p["name"] == f"{arm}_val_loss"]
        assert per_seed == list(range(1, demo.N_SEEDS + 1))
    assert out["baseline"]["lr"] == ctx.results["Stage_2"]["best_lr"]
    diffs = [b - p for b, p in zip(out["baseline"]["val_loss"], out["proposed"]["val_loss"], strict=True)]
    assert out["improvement"]["mean"] == pytest.approx(sum(diffs) / len(diffs), rel=1e-4)


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
    assert ctx.of("validation_started") == [{"model": "rule-based-reviewer", "rubric_version": "1"}]
    (verdict,) = ctx.of("verdict")
    assert verdict["verdict"] == "pass"
    assert verdict["scores"] == out["scores"]
    assert verdict["scores"]["significance"] >= reviewer.t_critical(demo.N_SEEDS - 1)
    assert verdict["scores"]["effect_size"] == pytest.approx(
        ctx.results["Stage_3"]["improvement"]["mean"] / ctx.results["Stage_3"]["baseline"]["mean"], rel=1e-3)
    assert "claim supported" in verdict["notes"]


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
    harmful = {"removed": "extra", "delta_mean": -0.05, "delta_stderr": 0.005}
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
