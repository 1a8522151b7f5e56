"""The demo's ideation: match the hypothesis text against the changes the demo can really test.

The demo cannot test an arbitrary idea, and pretending to would be dishonest, so it scores a fixed
set of template ideas by keyword overlap with the hypothesis and runs the best match only when the
match is clear: a specific keyword anywhere, or a general one in the title, or two distinct ones
in the body; and no other template scoring as high. A hypothesis that matches none, only through
one general word in passing ("at scale", "noisy"), or two templates alike is refused with
`InvalidIdea`, naming what the demo can test. Whatever it runs, it says so in one
sentence (`Match.statement`) that the run, the live view and the paper all show: a hypothesis
that says "Adam" must not be reported under a standardisation title because it also said "scale".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pipeline.errors import InvalidIdea

#: A keyword found in the title counts this many times: the title states the idea, the body
#: often mentions alternatives in passing.
TITLE_WEIGHT = 2
#: Without a specific keyword the best template must score at least this: a general keyword in
#: the title, or two distinct ones in the body. One general word in passing ("at scale", "noisy
#: gradients") does not name a change.
MIN_SCORE = 2


@dataclass(frozen=True)
class IdeaTemplate:
    name: str
    title: str
    #: Word prefixes (may span words) that name this idea, matched at a word start. Only words
    #: specific to the change: a generic one ("optimiser", "decay", "SGD") would tie templates.
    keywords: tuple[str, ...]
    #: General words that point at this idea too, but are often used in passing ("scale",
    #: "noise"): they count in the score, and alone in the body they are no match.
    general: tuple[str, ...]
    #: Component name -> the `Recipe` fields it switches on. Ablations remove one at a time.
    components: dict[str, dict[str, Any]]
    #: What the change does, exactly, for the paper's Methods.
    method: str
    #: Keys of `pipeline.demo.paper.REFERENCES` for the change.
    references: tuple[str, ...]


TEMPLATES: tuple[IdeaTemplate, ...] = (
    IdeaTemplate(
        "feature_standardisation",
        "Standardising input features to zero mean and unit variance",
        ("standardi", "z-score", "zscore", "whiten", "zero mean", "unit variance", "feature scaling"),
        ("normali", "rescal", "scaling", "scale", "center", "centre", "centering", "centring"),
        {"centering": {"center": True}, "scaling": {"scale": True}},
        "each feature has the training set's mean subtracted (centering) and is divided by the "
        "training set's standard deviation (scaling); validation data get the same transform",
        ("lecun1998",),
    ),
    IdeaTemplate(
        "l2_regularisation",
        "An L2 penalty on the weights",
        ("l2", "weight decay", "ridge", "regulari"),
        ("penal", "shrink"),
        {"l2_penalty": {"l2": 0.05}},
        "the gradient gains 0.05 times the weights (the bias excepted): an L2 penalty",
        ("hoerl1970",),
    ),
    IdeaTemplate(
        "label_smoothing",
        "Label smoothing of the training targets",
        ("label smoothing", "soft label", "soft target"),
        ("smooth", "calibrat", "overconfiden"),
        {"smoothed_targets": {"label_smoothing": 0.1}},
        "training targets 0 and 1 become 0.05 and 0.95 (smoothing 0.1)",
        ("szegedy2016",),
    ),
    IdeaTemplate(
        "input_noise_augmentation",
        "Gaussian input-noise augmentation",
        ("input noise", "input-noise", "gaussian noise", "noise injection", "jitter"),
        ("noise", "augment", "perturb", "gaussian"),
        {"gaussian_input_noise": {"input_noise": 0.5}},
        "every epoch, each training feature gets fresh Gaussian noise of half its standard deviation",
        ("bishop1995",),
    ),
    IdeaTemplate(
        "early_stopping",
        "Early stopping on a held-out part of the training set",
        ("early stop", "early-stop"),
        ("patience", "stop training", "overtrain"),
        {"holdout_early_stopping": {"early_stopping": True}},
        "20% of the training set is held out; training stops after 20 epochs without a lower loss "
        "there and keeps the best weights",
        ("prechelt1998",),
    ),
    IdeaTemplate(
        "class_reweighting",
        "Inverse-frequency class weights in the loss",
        ("class weight", "reweight", "re-weight", "inverse frequency", "inverse-frequency",
         "cost-sensitive"),
        ("imbalanc", "balanc"),
        {"inverse_frequency_weights": {"class_weights": True}},
        "each example's loss is weighted by the inverse frequency of its class",
        ("elkan2001",),
    ),
    IdeaTemplate(
        "squared_features",
        "Squared-feature expansion for a non-linear decision boundary",
        ("squared feature", "quadratic", "polynomial", "feature expansion"),
        ("squared", "nonlinear", "non-linear", "interaction"),
        {"squared_terms": {"squared": True}},
        "the square of every feature is added as a further input, doubling the inputs",
        ("hastie2009",),
    ),
    IdeaTemplate(
        "adam_optimiser",
        "The Adam optimiser in place of plain gradient descent",
        ("adam", "adaptive moment", "adaptive learning rate", "adaptive step", "rmsprop",
         "adagrad", "per-parameter learning rate"),
        (),
        {"momentum": {"momentum": 0.9}, "adaptive_step_sizes": {"adaptive": True}},
        "each step is a bias-corrected moving average of the gradients (momentum, decay 0.9) "
        "divided, per parameter, by the root of a bias-corrected moving average of the squared "
        "gradients (adaptive step sizes, decay 0.999, epsilon 1e-8). Both arms use the full "
        "training set at every step, so 'SGD' in a hypothesis means full-batch gradient descent here",
        ("kingma2015",),
    ),
    IdeaTemplate(
        "momentum",
        "Momentum in place of plain gradient descent",
        ("momentum", "heavy ball", "heavy-ball", "polyak"),
        (),
        {"momentum": {"momentum": 0.9}},
        "each update follows a bias-corrected moving average of the gradients (decay 0.9): "
        "heavy-ball momentum in the form Adam uses, its step size tuned like the baseline's",
        ("polyak1964", "kingma2015"),
    ),
    IdeaTemplate(
        "cosine_lr_decay",
        "A cosine learning-rate decay in place of a constant learning rate",
        ("learning-rate schedul", "learning rate schedul", "lr schedul", "cosine",
         "learning-rate decay", "learning rate decay", "lr decay", "warm restart"),
        ("schedul", "anneal"),
        {"cosine_decay": {"lr_schedule": "cosine"}},
        "the learning rate falls from its tuned value to zero over the epochs along half a "
        "cosine (no restarts)",
        ("loshchilov2017",),
    ),
)

TEMPLATES_BY_NAME: dict[str, IdeaTemplate] = {t.name: t for t in TEMPLATES}


#: Matched words the mapping sentence names (each cut at 40 characters), so a hypothesis full of
#: keywords cannot push the sentence past what `ai.ideation.generated` accepts (2,000 characters).
MAX_WORDS_SHOWN = 6


@dataclass(frozen=True)
class Match:
    """The template a hypothesis maps onto and why."""

    template: IdeaTemplate
    score: int
    #: The hypothesis's own words that matched the template's keywords, title first.
    words: tuple[str, ...]
    #: Every template's score, best first (ties: template order).
    candidates: list[dict[str, Any]]

    def statement(self) -> str:
        """The sentence the run, the live view and the paper show: what the demo tests instead."""
        shown = [w[:40] for w in self.words[:MAX_WORDS_SHOWN]]
        words = ", ".join(f"'{w}'" for w in shown) + (", ..." if len(self.words) > MAX_WORDS_SHOWN else "")
        return (f"The demo maps this hypothesis onto its synthetic experiment {self.template.name} "
                f"({self.template.title}; matched on the words {words}). It tests only that change "
                "against a logistic-regression baseline on synthetic data, not the hypothesis as worded.")


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
    """Distinct keywords (specific or general) found, title hits weighted by `TITLE_WEIGHT`."""
    return sum(
        TITLE_WEIGHT * _has(keyword, title) + _has(keyword, body)
        for keyword in template.keywords + template.general
    )


def names_it(template: IdeaTemplate, title: str, body: str) -> bool:
    """Whether a specific keyword of the template occurs anywhere in the hypothesis."""
    return any(_has(keyword, title) or _has(keyword, body) for keyword in template.keywords)


def choose(hypothesis: dict[str, Any]) -> Match:
    """The template the hypothesis clearly names; `InvalidIdea` when none, or not clearly one."""
    title, body = hypothesis_text(hypothesis)
    if not body:
        raise InvalidIdea("The hypothesis has no idea text; write what change to test in 'idea'.")
    scored = sorted(
        ((score(t, title, body), i, t) for i, t in enumerate(TEMPLATES)), key=lambda s: (-s[0], s[1])
    )
    (best, _, template), (second, _, runner_up) = scored[0], scored[1]
    words = _words(template, title, body)
    if best == 0:
        raise InvalidIdea(
            "The demo pipeline can only test these ideas and the hypothesis mentions none of them: "
            + _testable() + ". Use the ai_scientist pipeline for open-ended ideas."
        )
    if best < MIN_SCORE and not names_it(template, title, body):
        raise InvalidIdea(
            f"Only one word of the hypothesis, {words[0]!r}, points at one of the demo's experiments "
            f"({template.name}), and it is a word often used in passing: too little to tell that the "
            "hypothesis is about that change. Name the change to test in the title, or describe it. "
            f"The demo can test: {_testable()}."
        )
    if second == best:
        raise InvalidIdea(
            f"The hypothesis matches two of the demo's experiments equally: {template.name} (words "
            f"{', '.join(words)}) and {runner_up.name} (words {', '.join(_words(runner_up, title, body))}). "
            "Name the one change to test in the title."
        )
    return Match(template, best, words, [{"name": t.name, "score": s} for s, _, t in scored])


def _testable() -> str:
    return "; ".join(f"{t.name} ({t.title[0].lower() + t.title[1:]})" for t in TEMPLATES)


def _words(template: IdeaTemplate, title: str, body: str) -> tuple[str, ...]:
    """The hypothesis's words that start with one of the template's keywords, as written."""
    found: list[str] = []
    for text in (title, body):
        for keyword in template.keywords + template.general:
            for match in re.finditer(_pattern(keyword) + r"[\w-]*", text, re.IGNORECASE):
                if match.group(0).lower() not in (w.lower() for w in found):
                    found.append(match.group(0))
    return tuple(found)


def _pattern(keyword: str) -> str:
    return r"(?<![a-z0-9])" + re.escape(keyword)


def _has(keyword: str, text: str) -> bool:
    return re.search(_pattern(keyword), text.lower()) is not None
