"""The demo's auto-validation: a rule-based reviewer that checks the claim against the seeds.

The claim of every demo run is "the proposed change lowers validation log-loss". The reviewer
recomputes the paired statistics from the stored per-seed numbers (it trusts no summary field)
and passes the run only if every check holds, so a change that does not help fails.

Its `scores` are shares of checks passed, all within 0..1, so they read alike; the measured
numbers (each arm's mean ± standard error, the paired t statistic with its df and p-value, effect
sizes) go in `results` under their own names, never among the scores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

MODEL = "rule-based-reviewer"
#: 2: scores are 0..1 shares of checks; t, effect sizes and per-arm results moved to `results`.
RUBRIC_VERSION = "2"
#: What every demo result measures, as `results.metric` says it.
METRIC = "validation log-loss (lower is better)"
#: The name `results.test` gives the test, saying which way it is one-sided.
TEST_NAME = "paired t-test, one-sided (baseline loss - proposed loss > 0)"

#: Smallest mean improvement, as a share of the baseline's loss, that counts as a result.
#: Below it a "significant" gain is too small to matter and likely an artefact of the optimiser.
MIN_RELATIVE_IMPROVEMENT = 0.01
#: Largest drop in validation accuracy (absolute) tolerated alongside a lower loss.
MAX_ACCURACY_DROP = 0.01
#: One-sided 5% critical values of Student's t by degrees of freedom; beyond the table, 1.96 is
#: used, which is conservative for a one-sided test.
_T_CRITICAL_05 = {
    1: 6.314, 2: 2.920, 3: 2.353, 4: 2.132, 5: 2.015, 6: 1.943, 7: 1.895, 8: 1.860, 9: 1.833,
    10: 1.812, 12: 1.782, 15: 1.753, 20: 1.725, 30: 1.697,
}
#: |t| is capped here so a zero-variance difference still gives a finite JSON number.
_T_CAP = 1e6


@dataclass(frozen=True)
class Paired:
    """Paired comparison of two arms over the same seeds; `diff` = a - b per seed."""

    n: int
    mean: float
    stderr: float
    t: float

    @property
    def df(self) -> int:
        return max(self.n - 1, 0)

    @property
    def p_one_sided(self) -> float:
        """P(T >= t) under no mean difference: the chance of a t this large by luck alone."""
        return t_sf(self.t, self.df) if self.df >= 1 else 1.0

    @classmethod
    def of(cls, a: list[float], b: list[float]) -> Paired:
        diffs = [x - y for x, y in zip(a, b, strict=True)]
        n = len(diffs)
        mean = sum(diffs) / n
        sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1)) if n > 1 else 0.0
        stderr = sd / math.sqrt(n) if n else 0.0
        if stderr > 0:
            t = max(-_T_CAP, min(_T_CAP, mean / stderr))
        else:
            t = 0.0 if mean == 0 else math.copysign(_T_CAP, mean)
        return cls(n, mean, stderr, t)


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class Review:
    verdict: str
    scores: dict[str, float]
    notes: str
    checks: tuple[Check, ...]
    results: dict[str, Any]


def t_critical(df: int) -> float:
    """One-sided 5% critical value for `df` degrees of freedom (the next smaller tabled df)."""
    if df < 1:
        return math.inf
    return _T_CRITICAL_05[max(k for k in _T_CRITICAL_05 if k <= df)] if df <= 30 else 1.96


def t_sf(t: float, df: int) -> float:
    """P(T >= t) for Student's t with `df` >= 1 degrees of freedom, exact for integer df
    (Abramowitz & Stegun 26.7.3 and 26.7.4: a finite series in the angle atan(t / sqrt(df))), so
    the demo needs no scipy."""
    theta = math.atan(abs(t) / math.sqrt(df))
    s, c2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2:  # odd: A = 2/pi * (theta + sin * (cos + 2/3 cos^3 + ...))
        term, series = math.cos(theta), 0.0
        for k in range((df - 1) // 2):
            series += term
            term *= c2 * (2 * k + 2) / (2 * k + 3)
        inside = 2 / math.pi * (theta + s * series)
    else:  # even: A = sin * (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ...)
        term, series = 1.0, 0.0
        for k in range(df // 2):
            series += term
            term *= c2 * (2 * k + 1) / (2 * k + 2)
        inside = s * series
    tail = max(0.0, (1.0 - inside) / 2)  # P(T >= |t|)
    return tail if t >= 0 else 1.0 - tail


def arm_result(name: str, arm: dict[str, Any]) -> dict[str, Any]:
    """One arm as `results.arms` lists it, recomputed from its per-seed losses."""
    losses = arm["val_loss"]
    n = len(losses)
    mean = sum(losses) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in losses) / (n - 1)) if n > 1 else 0.0
    accuracy = sum(arm["val_accuracy"]) / n
    return {"name": name, "mean": round(mean, 6), "stderr": round(sd / math.sqrt(n), 6), "n": n,
            "accuracy": round(accuracy, 6)}


def results(stage3: dict[str, Any], stage4: dict[str, Any]) -> dict[str, Any]:
    """The measured outcome: every arm (baseline, the change, each ablation), the paired test of
    baseline against the change, and its effect sizes."""
    base, prop = stage3["baseline"], stage3["proposed"]
    gain = Paired.of(base["val_loss"], prop["val_loss"])
    base_mean = sum(base["val_loss"]) / len(base["val_loss"])
    arms = [arm_result("baseline", base), arm_result(stage3["idea"], prop)]
    arms += [arm_result(f"without {a['removed']}", a) for a in stage4["ablations"]]
    return {
        "metric": METRIC,
        "arms": arms,
        "test": {"name": TEST_NAME, "statistic": round(gain.t, 4), "df": gain.df,
                 "p_value": float(f"{gain.p_one_sided:.4g}")},
        "effects": {
            "mean_difference": round(gain.mean, 6),
            "mean_difference_stderr": round(gain.stderr, 6),
            "relative_improvement": round(gain.mean / base_mean, 6) if base_mean > 0 else 0.0,
            "cohen_dz": round(gain.mean / (gain.stderr * math.sqrt(gain.n)), 4) if gain.stderr > 0 else 0.0,
        },
    }


def review(stage1: dict[str, Any], stage3: dict[str, Any], stage4: dict[str, Any]) -> Review:
    """Check the measured seeds and ablations; pass only if every check holds."""
    base, prop = stage3["baseline"], stage3["proposed"]
    gain = Paired.of(base["val_loss"], prop["val_loss"])  # positive: the change lowers the loss
    base_mean = sum(base["val_loss"]) / len(base["val_loss"])
    relative = gain.mean / base_mean if base_mean > 0 else 0.0
    accuracy = Paired.of(prop["val_accuracy"], base["val_accuracy"])
    critical = t_critical(gain.n - 1)
    soundness = _soundness_checks(stage1, base, prop, accuracy)
    evidence = [
        Check("improves_on_average", gain.mean > 0,
              f"mean val-loss change {-gain.mean:+.4f} (baseline {base_mean:.4f})"),
        Check("significant", gain.t >= critical,
              f"paired t({gain.df}) = {gain.t:.2f}, one-sided p = {gain.p_one_sided:.2g}, over {gain.n} seeds; "
              f"needs t >= {critical:.3f} (one-sided 5%)"),
        Check("meaningful_effect", relative >= MIN_RELATIVE_IMPROVEMENT,
              f"relative improvement {relative:.2%}, needs >= {MIN_RELATIVE_IMPROVEMENT:.0%}"),
        _ablation_check(stage4, base_mean, critical),
    ]
    checks = tuple(soundness + evidence)
    passed = all(c.passed for c in checks)
    scores = {  # shares of checks, 0..1; the statistics are in `results`
        "soundness": _share(soundness),
        "evidence": _share(evidence),
        "ablation_consistency": _ablation_share(stage4),
        "overall": _share(list(checks)),
    }
    return Review("pass" if passed else "fail", scores, _notes(stage3, checks, passed), checks,
                  results(stage3, stage4))


def _soundness_checks(stage1: dict[str, Any], base: dict, prop: dict, accuracy: Paired) -> list[Check]:
    losses = base["val_loss"] + prop["val_loss"]
    majority = stage1["dataset"]["majority_rate_val"]
    base_acc = sum(base["val_accuracy"]) / len(base["val_accuracy"])
    return [
        Check("finite_results", all(math.isfinite(x) for x in losses), f"{len(losses)} losses measured"),
        Check("enough_seeds", len(base["val_loss"]) >= 3, f"{len(base['val_loss'])} seeds per arm"),
        Check("baseline_learns", base_acc > majority,
              f"baseline accuracy {base_acc:.3f} vs majority class {majority:.3f}"),
        Check("accuracy_not_worse", accuracy.mean >= -MAX_ACCURACY_DROP,
              f"mean accuracy change {accuracy.mean:+.4f}, tolerated drop {MAX_ACCURACY_DROP}"),
    ]


def _ablation_check(stage4: dict[str, Any], base_mean: float, critical: float) -> Check:
    """No component may hurt: removing it must not lower the loss significantly and by a
    meaningful amount (the same two bars the whole change has to clear, mirrored)."""
    harmful = []
    for a in stage4["ablations"]:
        t = a["delta_mean"] / a["delta_stderr"] if a["delta_stderr"] > 0 else 0.0
        if -a["delta_mean"] >= MIN_RELATIVE_IMPROVEMENT * base_mean and t <= -critical:
            harmful.append(a["removed"])
    if harmful:
        return Check("ablations_consistent", False,
                     f"removing {', '.join(harmful)} lowers the loss: that component hurts")
    costs = ", ".join(f"{a['removed']} {a['delta_mean']:+.4f}" for a in stage4["ablations"])
    return Check("ablations_consistent", True, f"loss change when each component is removed: {costs}")


def _ablation_share(stage4: dict[str, Any]) -> float:
    """Share of components whose removal raises the loss (they carry part of the effect)."""
    ablations = stage4["ablations"]
    return round(sum(a["delta_mean"] > 0 for a in ablations) / len(ablations), 4) if ablations else 0.0


def _share(checks: list[Check]) -> float:
    return round(sum(c.passed for c in checks) / len(checks), 4)


def _notes(stage3: dict[str, Any], checks: tuple[Check, ...], passed: bool) -> str:
    head = f"{stage3['idea']}: " + ("claim supported." if passed else "claim NOT supported.")
    lines = [f"[{'ok' if c.passed else 'FAIL'}] {c.name}: {c.detail}" for c in checks]
    return "\n".join([head, *lines])
