"""The demo's ideation: match the hypothesis text against the changes the demo can really test.

The demo cannot test an arbitrary idea, and pretending to would be dishonest, so it scores a fixed
set of template ideas by keyword overlap with the hypothesis and runs the best match. A
hypothesis that matches none is refused with `InvalidIdea`, naming what the demo can test.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pipeline.errors import InvalidIdea

#: A keyword found in the title counts this many times: the title states the idea, the body
#: often mentions alternatives in passing.
TITLE_WEIGHT = 2


@dataclass(frozen=True)
class IdeaTemplate:
    name: str
    title: str
    #: Word prefixes (may span words) that point at this idea, matched at a word start.
    keywords: tuple[str, ...]
    #: Component name -> the `Recipe` fields it switches on. Ablations remove one at a time.
    components: dict[str, dict[str, Any]]


TEMPLATES: tuple[IdeaTemplate, ...] = (
    IdeaTemplate(
        "feature_standardisation",
        "Standardising input features to zero mean and unit variance",
        ("standardi", "normali", "rescal", "scaling", "scale", "z-score", "zscore", "whiten",
         "zero mean", "unit variance", "center", "centre", "centering", "centring"),
        {"centering": {"center": True}, "scaling": {"scale": True}},
    ),
    IdeaTemplate(
        "l2_regularisation",
        "An L2 penalty on the weights",
        ("l2", "weight decay", "ridge", "regulari", "penal", "shrink"),
        {"l2_penalty": {"l2": 0.05}},
    ),
    IdeaTemplate(
        "label_smoothing",
        "Label smoothing of the training targets",
        ("label smoothing", "smooth", "soft label", "soft target", "calibrat", "overconfiden"),
        {"smoothed_targets": {"label_smoothing": 0.1}},
    ),
    IdeaTemplate(
        "input_noise_augmentation",
        "Gaussian input-noise augmentation",
        ("noise", "augment", "jitter", "perturb", "gaussian"),
        {"gaussian_input_noise": {"input_noise": 0.5}},
    ),
    IdeaTemplate(
        "early_stopping",
        "Early stopping on a held-out part of the training set",
        ("early stop", "early-stop", "patience", "stop training", "overtrain"),
        {"holdout_early_stopping": {"early_stopping": True}},
    ),
    IdeaTemplate(
        "class_reweighting",
        "Inverse-frequency class weights in the loss",
        ("class weight", "reweight", "re-weight", "imbalanc", "balanc", "inverse frequency",
         "cost-sensitive"),
        {"inverse_frequency_weights": {"class_weights": True}},
    ),
    IdeaTemplate(
        "squared_features",
        "Squared-feature expansion for a non-linear decision boundary",
        ("squared", "quadratic", "polynomial", "nonlinear", "non-linear", "feature expansion",
         "interaction"),
        {"squared_terms": {"squared": True}},
    ),
)

TEMPLATES_BY_NAME: dict[str, IdeaTemplate] = {t.name: t for t in TEMPLATES}


def hypothesis_text(hypothesis: dict[str, Any]) -> tuple[str, str]:
    """(title, body) of a hypothesis; the body adds the AI-Scientist idea JSON's prose fields."""
    title = str(hypothesis.get("title") or "").strip()
    parts = [str(hypothesis.get("idea") or "")]
    idea_json = hypothesis.get("ideaJson")
    if isinstance(idea_json, dict):
        for key in ("Title", "Short Hypothesis", "Abstract", "Experiments"):
            if isinstance(idea_json.get(key), str):
                parts.append(idea_json[key])
    return title, " ".join(p.strip() for p in parts if p.strip())


def score(template: IdeaTemplate, title: str, body: str) -> int:
    """Distinct keywords found, title hits weighted by `TITLE_WEIGHT`."""
    return sum(
        TITLE_WEIGHT * _has(keyword, title) + _has(keyword, body) for keyword in template.keywords
    )


def choose(hypothesis: dict[str, Any]) -> tuple[IdeaTemplate, list[dict[str, Any]]]:
    """The best-matching template and every candidate's score, best first (ties: template order)."""
    title, body = hypothesis_text(hypothesis)
    if not body:
        raise InvalidIdea("The hypothesis has no idea text; write what change to test in 'idea'.")
    scored = sorted(
        ((score(t, title, body), i, t) for i, t in enumerate(TEMPLATES)), key=lambda s: (-s[0], s[1])
    )
    if scored[0][0] == 0:
        raise InvalidIdea(
            "The demo pipeline can only test these ideas and the hypothesis mentions none of them: "
            + "; ".join(f"{t.name} ({', '.join(t.keywords[:3])})" for t in TEMPLATES)
            + ". Use the ai_scientist pipeline for open-ended ideas."
        )
    return scored[0][2], [{"name": t.name, "score": s} for s, _, t in scored]


def _has(keyword: str, text: str) -> bool:
    return re.search(r"(?<![a-z0-9])" + re.escape(keyword), text.lower()) is not None
