"""The `demo` pipeline: a small, real experiment that runs every stage in a few seconds on a CPU.

It tests one of a few template changes to a logistic-regression baseline on synthetic data (see
`pipeline.demo.model` for why some changes help and others do not), with the shape of an AI-Scientist run:
ideation, a preliminary fit, baseline tuning, a multi-seed comparison, ablations, figures, a
paper, and a rule-based review that fails the run when the measurements do not support the claim.

Numbers depend on `ctx.seed` and the hypothesis text only, so every attempt of a run computes the
same ones, and each step reads earlier outputs from `ctx.results` only (never their files).

Metrics are progress signals named for what they are: the run keeps the last value logged per
name, so a series says what it runs over (`preliminary_*` per epoch, `*_per_seed` per replicate),
and a sweep's trials are no metrics at all (its last trial, the largest rate, is no result). The
headline result (each arm's mean ± standard error over n, the test statistic with its df and
p-value) goes with the verdict as structured `results`, and into the logs, not into metrics.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np

from pipeline.base import Pipeline, Step
from pipeline.context import RunContext
from pipeline.demo import figures, model
from pipeline.demo import paper as writer
from pipeline.demo import review as reviewer
from pipeline.demo.ideas import TEMPLATES_BY_NAME, IdeaTemplate, choose, hypothesis_text
from pipeline.errors import PipelineError

NAME = "demo"
#: Held-out replicates per arm in Stage_3 and Stage_4: enough for a paired t-test, few enough to
#: stay fast. Replicate 0 is the tuning split and never used for the comparison.
N_SEEDS = 5
#: Stage_1 reports validation metrics every this many epochs (each is an event; keep them few).
REPORT_EVERY = 10
#: Stage_1's untuned learning rate: a plausible first guess before any sweep.
STAGE1_LR = 1e-3
_TUNING_REPLICATE = 0
#: Random streams of a run, as the second word of a `default_rng([data_seed, stream, ...])` seed
#: (streams 0 and 1 draw the data in `pipeline.demo.model.make_dataset`).
_FIT_STREAM = 2
_TUNE_STREAM = 3


def demo_pipeline() -> Pipeline:
    """The registry's factory for `demo`."""
    return Pipeline(NAME, (
        Step("ideation", ideation),
        Step("Stage_1", preliminary_investigation),
        Step("Stage_2", baseline_tuning),
        Step("Stage_3", research_agenda),
        Step("Stage_4", ablation_studies),
        Step("plots", plots),
        Step("paper", paper),
        Step("auto_validation", auto_validation),
    ))


def ideation(ctx: RunContext) -> dict[str, Any]:
    """Score the template ideas against the hypothesis, keep the clear best match, and say in one
    sentence (on the run, in the live view, in the paper) that this is what the demo tests."""
    ctx.progress(0.0)
    ctx.checkpoint()
    match = choose(ctx.hypothesis)
    template, statement = match.template, match.statement()
    matched = [c for c in match.candidates if c["score"] > 0]
    ctx.report_ideas(count=len(match.candidates), top_k=len(matched), chosen=template.name, mapping=statement)
    ctx.log(statement, score=match.score, matched=len(matched))
    ctx.progress(1.0)
    return {
        "idea": template.name,
        "title": template.title,
        "components": list(template.components),
        "score": match.score,
        "words": list(match.words),
        "mapping": statement,
        "candidates": match.candidates,
    }


def preliminary_investigation(ctx: RunContext) -> dict[str, Any]:
    """Draw the dataset and fit the untuned baseline, reporting its learning curve."""
    _need(ctx, "ideation")
    seed = data_seed(ctx)
    data = model.make_dataset(seed, _TUNING_REPLICATE)
    described = data.describe()
    ctx.log("dataset drawn", **described)
    recipe = model.Recipe(lr=STAGE1_LR)
    epochs = recipe.n_epochs()
    curve: dict[str, list[float]] = {"epoch": [], "val_loss": [], "val_accuracy": []}

    def on_epoch(epoch: int, loss: float, accuracy: float) -> None:
        curve["epoch"].append(epoch)
        curve["val_loss"].append(model.round6(loss))
        curve["val_accuracy"].append(model.round6(accuracy))
        ctx.metric("preliminary_val_loss", loss, step=epoch)
        ctx.metric("preliminary_val_accuracy", accuracy, step=epoch)
        ctx.progress(epoch / epochs)
        ctx.checkpoint()

    result = model.fit(data, recipe, np.random.default_rng([seed, _FIT_STREAM]), on_epoch, REPORT_EVERY)
    ctx.log(f"untuned baseline: val loss {result.val_loss:.4f}, accuracy {result.val_accuracy:.3f}")
    return {
        "data_seed": seed,
        "dataset": described,
        "lr": recipe.lr,
        "epochs": epochs,
        "curve": curve,
        "val_loss": model.round6(result.val_loss),
        "val_accuracy": model.round6(result.val_accuracy),
    }


def baseline_tuning(ctx: RunContext) -> dict[str, Any]:
    """Sweep the baseline's learning rate on the tuning split; keep the best."""
    seed = _need(ctx, "Stage_1")["data_seed"]
    best, trials = _tune(seed, model.Recipe(), _trial_reporter(ctx, 0.0, 1.0))
    best_loss = min(t["val_loss"] for t in trials)
    ctx.metric("baseline_lr", best.lr)
    ctx.metric("baseline_tuning_val_loss", best_loss)
    _log_sweep(ctx, "baseline", trials, best.lr)
    ctx.progress(1.0)  # the sweep's length is known only at its end (it may go beyond its grid)
    return {"trials": trials, "best_lr": best.lr, "best_val_loss": best_loss}


def research_agenda(ctx: RunContext) -> dict[str, Any]:
    """Tune the proposed change like the baseline, then compare both on fresh seeds."""
    template = _template(ctx)
    seed = _need(ctx, "Stage_1")["data_seed"]
    baseline = model.Recipe(lr=_need(ctx, "Stage_2")["best_lr"])
    proposed, trials = _tune(seed, _recipe(template, exclude=None), _trial_reporter(ctx, 0.0, 0.4))
    _log_sweep(ctx, template.name, trials, proposed.lr)
    arms = _evaluate(ctx, seed, {"baseline": baseline, "proposed": proposed}, N_SEEDS, 0.4)
    gain = reviewer.Paired.of(arms["baseline"]["val_loss"], arms["proposed"]["val_loss"])
    ctx.metric("proposed_lr", proposed.lr)
    ctx.log(f"{template.name}: val loss {arms['baseline']['mean']:.4f} -> {arms['proposed']['mean']:.4f}",
            t=round(gain.t, 3), df=gain.df, p=float(f"{gain.p_one_sided:.4g}"), seeds=N_SEEDS)
    arms["proposed"]["trials"] = trials
    return {
        "idea": template.name,
        "components": list(template.components),
        **arms,
        "improvement": {"mean": model.round6(gain.mean), "stderr": model.round6(gain.stderr),
                        "t": round(gain.t, 4), "df": gain.df, "p": float(f"{gain.p_one_sided:.4g}")},
    }


def ablation_studies(ctx: RunContext) -> dict[str, Any]:
    """Remove one component at a time (re-tuned like the others) and measure what it costs."""
    template = _template(ctx)
    seed = _need(ctx, "Stage_1")["data_seed"]
    full = _need(ctx, "Stage_3")["proposed"]
    n_seeds = len(full["val_loss"])
    ablations = []
    for i, component in enumerate(template.components):
        share = 1 / len(template.components)
        recipe, _ = _tune(seed, _recipe(template, exclude=component), _trial_reporter(ctx, i * share, share / 2))
        arm = _evaluate(ctx, seed, {component: recipe}, n_seeds, (i + 0.5) * share, share / 2)[component]
        cost = reviewer.Paired.of(arm["val_loss"], full["val_loss"])  # > 0: the component helps
        ctx.log(f"without {component}: val loss {arm['mean']:.4f} ± {arm['stderr']:.4f}, {cost.mean:+.4f} against the "
                "full change", component=component, lr=recipe.lr)
        ablations.append({"removed": component, **arm, "delta_mean": model.round6(cost.mean),
                          "delta_stderr": model.round6(cost.stderr)})
    ctx.progress(1.0)
    return {"idea": template.name, "ablations": ablations}


def plots(ctx: RunContext) -> dict[str, Any]:
    """Render the figures from the stored results and register each as an artifact."""
    results = _experiment_results(ctx)
    out_dir = ctx.workdir / "figures"
    out_dir.mkdir(parents=True, exist_ok=True)
    saved = []
    for i, (name, plot) in enumerate(figures.FIGURES.items(), start=1):
        ctx.checkpoint()
        path = out_dir / plot.file
        figures.standalone(name, results).savefig(path, dpi=100)
        key = ctx.save_artifact(path, kind="figure", content_type="image/png")
        saved.append({"file": f"figures/{plot.file}", "key": key})
        ctx.progress(i / len(figures.FIGURES))
    return {"figures": saved}


def paper(ctx: RunContext) -> dict[str, Any]:
    """Write a short PDF paper with the measured numbers and the figures re-rendered from data."""
    results = _experiment_results(ctx)
    ctx.checkpoint()
    ctx.progress(0.1)
    hypothesis_title, _ = hypothesis_text(ctx.hypothesis)
    document = writer.build(hypothesis_title, results)
    path = ctx.workdir / "paper" / "paper.pdf"
    word_count = figures.write_paper(path, document, results)
    ctx.progress(0.9)
    key = ctx.report_paper(path, word_count=word_count)
    ctx.progress(1.0)
    return {"title": document.title, "key": key, "word_count": word_count}


def auto_validation(ctx: RunContext) -> dict[str, Any]:
    """Rule-based review of the claim against the measured seeds and ablations."""
    ctx.checkpoint()
    ctx.validation_started(model=reviewer.MODEL, rubric_version=reviewer.RUBRIC_VERSION)
    ctx.progress(0.1)
    review = reviewer.review(_need(ctx, "Stage_1"), _need(ctx, "Stage_3"), _need(ctx, "Stage_4"))
    ctx.report_verdict(review.verdict, scores=review.scores, notes=review.notes, results=review.results)
    ctx.log(f"auto-validation: {review.verdict}", "info", **review.scores)
    ctx.progress(1.0)
    return {
        "verdict": review.verdict,
        "scores": review.scores,
        "results": review.results,
        "checks": [{"name": c.name, "passed": c.passed, "detail": c.detail} for c in review.checks],
    }


def data_seed(ctx: RunContext) -> int:
    """The run's data seed: from `ctx.seed` and the hypothesis text, stable across processes
    (Python's `hash()` of a string is salted per process, so it would not be). 48 bits: the
    seed travels in the stage summary, and BSON and JavaScript numbers hold it exactly."""
    title, body = hypothesis_text(ctx.hypothesis)
    digest = hashlib.sha256(f"{ctx.seed}\x00{title}\x00{body}".encode()).digest()
    return int.from_bytes(digest[:6], "big")


def _need(ctx: RunContext, step: str) -> dict[str, Any]:
    try:
        return ctx.results[step]
    except KeyError:
        raise PipelineError(
            f"the outputs of step {step!r} are missing from ctx.results; the worker must run or "
            "restore earlier steps first"
        ) from None


def _template(ctx: RunContext) -> IdeaTemplate:
    return TEMPLATES_BY_NAME[_need(ctx, "ideation")["idea"]]


def _recipe(template: IdeaTemplate, exclude: str | None) -> model.Recipe:
    """The baseline recipe with every component of the idea except `exclude` switched on."""
    overrides: dict[str, Any] = {}
    for name, fields in template.components.items():
        if name != exclude:
            overrides.update(fields)
    return model.Recipe().with_overrides(overrides)


def _tune(
    seed: int, recipe: model.Recipe, on_trial: Callable[[float, model.Fit], None]
) -> tuple[model.Recipe, list[dict[str, float]]]:
    """Every arm is tuned the same way: the same grid, split and random stream."""
    return model.tune_lr(model.make_dataset(seed, _TUNING_REPLICATE), recipe, [seed, _TUNE_STREAM], on_trial)


def _trial_reporter(ctx: RunContext, start: float, span: float) -> Callable[[float, model.Fit], None]:
    """A `tune_lr` callback: progress and a cancel check per trial. No metric: the run keeps the
    last value per metric name, and the sweep's last point (the largest rate) is no result."""
    done = 0

    def on_trial(lr: float, result: model.Fit) -> None:
        nonlocal done
        done += 1
        ctx.progress(min(1.0, start + span * done / (len(model.LR_GRID) + model.MAX_SWEEP_EXTENSIONS)))
        ctx.checkpoint()

    return on_trial


def _log_sweep(ctx: RunContext, arm: str, trials: list[dict[str, float]], kept: float) -> None:
    """One line per sweep: the rate kept, and a warning when it is an end of the grid."""
    edge = writer.sweep_edge(trials, kept)
    loss = min(t["val_loss"] for t in trials)
    if edge:
        ctx.log(f"{arm} learning-rate sweep kept {kept:g}, the {edge} rate of the grid: its best rate may lie outside "
                f"it (tuning val loss {loss:.4f})", "warning", arm=arm, lr=kept, edge=edge)
    else:
        ctx.log(f"{arm} learning-rate sweep kept {kept:g} (tuning val loss {loss:.4f})", arm=arm, lr=kept)


def _evaluate(
    ctx: RunContext, seed: int, recipes: dict[str, model.Recipe], n_seeds: int, start: float,
    span: float | None = None,
) -> dict[str, dict[str, Any]]:
    """Fit every recipe on replicates 1..n_seeds (the same draws for each: paired)."""
    span = 1.0 - start if span is None else span
    runs: dict[str, dict[str, list[float]]] = {arm: {"val_loss": [], "val_accuracy": []} for arm in recipes}
    for replicate in range(1, n_seeds + 1):
        data = model.make_dataset(seed, replicate)
        for arm, recipe in recipes.items():
            result = model.fit(data, recipe, np.random.default_rng([seed, _FIT_STREAM, replicate]))
            runs[arm]["val_loss"].append(model.round6(result.val_loss))
            runs[arm]["val_accuracy"].append(model.round6(result.val_accuracy))
            if len(recipes) > 1:
                ctx.metric(f"{arm}_val_loss_per_seed", result.val_loss, step=replicate)
        ctx.progress(min(1.0, start + span * replicate / n_seeds))
        ctx.checkpoint()
    return {arm: _summary(recipes[arm], run) for arm, run in runs.items()}


def _summary(recipe: model.Recipe, run: dict[str, list[float]]) -> dict[str, Any]:
    losses = np.array(run["val_loss"])
    stderr = losses.std(ddof=1) / np.sqrt(len(losses)) if len(losses) > 1 else 0.0
    return {"lr": recipe.lr, **run, "mean": model.round6(float(losses.mean())), "stderr": model.round6(float(stderr)),
            "mean_accuracy": model.round6(float(np.mean(run["val_accuracy"])))}


def _experiment_results(ctx: RunContext) -> dict[str, dict[str, Any]]:
    return {name: _need(ctx, name) for name in ("ideation", "Stage_1", "Stage_2", "Stage_3", "Stage_4")}

