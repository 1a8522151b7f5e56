"""The demo's paper as text: title, sections, a table, figure captions and references.

Every number comes from the step outputs, and the text is a plain structure (`Paper`) before it is
laid out (`pipeline.demo.figures.write_paper`), so tests can read what the PDF says. The paper
states what was tested (the mapping of the hypothesis onto a synthetic experiment), refers to every
figure and table by number, discusses what the numbers show and where they stop, including a
baseline whose tuned learning rate sits at the edge of its sweep, and cites only the methods used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pipeline.demo import model
from pipeline.demo import review as reviewer
from pipeline.demo.ideas import TEMPLATES, TEMPLATES_BY_NAME, IdeaTemplate

#: Key -> (in-text label, full reference). Real publications only, each for a method the demo uses.
REFERENCES: dict[str, tuple[str, str]] = {
    "abramowitz1964": ("Abramowitz and Stegun 1964", "Abramowitz, M., Stegun, I. A. (1964). Handbook of Mathematical "
                       "Functions. National Bureau of Standards, Applied Mathematics Series 55, section 26.7."),
    "bengio2012": ("Bengio 2012", "Bengio, Y. (2012). Practical recommendations for gradient-based training of deep "
                   "architectures. In Neural Networks: Tricks of the Trade, 2nd ed., LNCS 7700, pp. 437-478. Springer."),
    "bishop1995": ("Bishop 1995", "Bishop, C. M. (1995). Training with noise is equivalent to Tikhonov regularization. "
                   "Neural Computation, 7(1), 108-116."),
    "cauchy1847": ("Cauchy 1847", "Cauchy, A. (1847). Méthode générale pour la résolution des systèmes d'équations "
                   "simultanées. Comptes rendus de l'Académie des sciences, 25, 536-538."),
    "cox1958": ("Cox 1958", "Cox, D. R. (1958). The regression analysis of binary sequences. Journal of the Royal "
                "Statistical Society, Series B, 20(2), 215-242."),
    "elkan2001": ("Elkan 2001", "Elkan, C. (2001). The foundations of cost-sensitive learning. In Proceedings of the "
                  "17th International Joint Conference on Artificial Intelligence (IJCAI), pp. 973-978."),
    "hastie2009": ("Hastie et al. 2009", "Hastie, T., Tibshirani, R., Friedman, J. (2009). The Elements of Statistical "
                   "Learning, 2nd ed., chapter 5: Basis Expansions and Regularization. Springer."),
    "hoerl1970": ("Hoerl and Kennard 1970", "Hoerl, A. E., Kennard, R. W. (1970). Ridge regression: biased estimation "
                  "for nonorthogonal problems. Technometrics, 12(1), 55-67."),
    "kingma2015": ("Kingma and Ba 2015", "Kingma, D. P., Ba, J. (2015). Adam: a method for stochastic optimization. "
                   "International Conference on Learning Representations (ICLR)."),
    "lecun1998": ("LeCun et al. 1998", "LeCun, Y., Bottou, L., Orr, G. B., Müller, K.-R. (1998). Efficient BackProp. "
                  "In Neural Networks: Tricks of the Trade, LNCS 1524, pp. 9-50. Springer."),
    "loshchilov2017": ("Loshchilov and Hutter 2017", "Loshchilov, I., Hutter, F. (2017). SGDR: stochastic gradient "
                       "descent with warm restarts. International Conference on Learning Representations (ICLR)."),
    "pascanu2013": ("Pascanu et al. 2013", "Pascanu, R., Mikolov, T., Bengio, Y. (2013). On the difficulty of training "
                    "recurrent neural networks. Proceedings of the 30th International Conference on Machine Learning "
                    "(ICML), PMLR 28(3), pp. 1310-1318."),
    "polyak1964": ("Polyak 1964", "Polyak, B. T. (1964). Some methods of speeding up the convergence of iteration "
                   "methods. USSR Computational Mathematics and Mathematical Physics, 4(5), 1-17."),
    "prechelt1998": ("Prechelt 1998", "Prechelt, L. (1998). Early stopping - but when? In Neural Networks: Tricks of "
                     "the Trade, LNCS 1524, pp. 55-69. Springer."),
    "student1908": ("Student 1908", "Student (1908). The probable error of a mean. Biometrika, 6(1), 1-25."),
    "szegedy2016": ("Szegedy et al. 2016", "Szegedy, C., Vanhoucke, V., Ioffe, S., Shlens, J., Wojna, Z. (2016). "
                    "Rethinking the Inception architecture for computer vision. Proceedings of the IEEE Conference on "
                    "Computer Vision and Pattern Recognition (CVPR), pp. 2818-2826."),
}

#: The loss of a model that always predicts 0.5: a baseline near it has learned next to nothing.
CHANCE_LOSS = math.log(2)


@dataclass(frozen=True)
class Block:
    """One piece of the paper, in reading order. kind: heading, byline, text, figure (`figure` is
    a key of `figures.FIGURES`, `text` its caption), table (`rows`, `text` its caption), reference."""

    kind: str
    text: str = ""
    figure: str = ""
    rows: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True)
class Paper:
    title: str
    blocks: tuple[Block, ...]

    def body(self) -> str:
        """The running text only (no captions, table cells or references): what the text says."""
        return "\n".join(b.text for b in self.blocks if b.kind in ("heading", "text"))

    def text(self) -> str:
        """Everything the PDF shows, in order."""
        parts = [self.title]
        for b in self.blocks:
            parts.append(b.text)
            parts += [" ".join(row) for row in b.rows]
        return "\n".join(p for p in parts if p)

    def word_count(self) -> int:
        return len(self.text().split())


def sweep_edge(trials: list[dict[str, Any]], kept_lr: float) -> str | None:
    """'smallest' or 'largest' when the kept learning rate is an end of the sweep, else None: the
    best rate may then lie outside the grid, and the arm may be under-tuned."""
    rates = [t["lr"] for t in trials]
    if kept_lr == min(rates):
        return "smallest"
    if kept_lr == max(rates):
        return "largest"
    return None


class _Writer:
    """Collects blocks, numbers figures and tables in order of appearance, records citations."""

    def __init__(self) -> None:
        self.blocks: list[Block] = []
        self.cited: list[str] = []
        self.numbers: dict[str, int] = {}

    def cite(self, *keys: str) -> str:
        for key in keys:
            if key not in self.cited:
                self.cited.append(key)
        return "(" + "; ".join(REFERENCES[k][0] for k in keys) + ")"

    def ref(self, figure: str) -> str:
        """'Figure N' for a figure key, numbered by first mention."""
        self.numbers.setdefault(figure, len(self.numbers) + 1)
        return f"Figure {self.numbers[figure]}"

    def add(self, kind: str, text: str = "", **kw: Any) -> None:
        self.blocks.append(Block(kind, text, **kw))

    def figure(self, key: str, caption: str) -> None:
        self.add("figure", f"{self.ref(key)}: {caption}", figure=key)

    def references(self) -> None:
        self.add("heading", "References")
        for key in sorted(self.cited, key=lambda k: REFERENCES[k][1]):
            self.add("reference", REFERENCES[key][1])


def build(hypothesis_title: str, results: dict[str, dict[str, Any]]) -> Paper:
    """The paper of one run, from the outputs of ideation and Stage_1..Stage_4."""
    ideation, s1, s2, s3, s4 = (results[k] for k in ("ideation", "Stage_1", "Stage_2", "Stage_3", "Stage_4"))
    template = TEMPLATES_BY_NAME[s3["idea"]]
    title = f"{template.title}: a {len(s3['baseline']['val_loss'])}-seed controlled study on synthetic data"
    mapping = ideation.get("mapping") or f"The demo maps this hypothesis onto its synthetic experiment {template.name}."
    w = _Writer()
    w.add("byline", f"Written by the demo pipeline of ai-scientist-orchestrator from its own measurements (data seed "
                    f"{s1['data_seed']}); not peer reviewed.")
    w.add("heading", "Abstract")
    w.add("text", f"Submitted hypothesis: '{hypothesis_title or template.title}'. The demo tests it as its synthetic "
                  f"experiment {template.name}, {_lower(template.title)}, against a logistic-regression baseline "
                  f"(Section 1 says how it maps the hypothesis). {_abstract(s3)}")
    w.add("heading", "1 Hypothesis and experiment")
    w.add("text", f"The demo pipeline cannot test an open-ended idea: it has {len(TEMPLATES)} fixed experiments on "
                  f"synthetic data and runs the one the hypothesis names clearly, or refuses. {mapping} Every demo "
                  "experiment asks one question: does the change lower the validation log-loss of a logistic "
                  f"regression after {s1['epochs']} epochs of full-batch training, compared with the same model "
                  "without it? A claim about how fast a model learns is therefore measured by the loss it reaches "
                  "within that fixed budget, and a claim about accuracy by the log-loss, with accuracy reported "
                  "alongside.")
    _methods(w, template, s1, s2, s3)
    _results(w, template, s1, s2, s3, s4)
    _discussion(w, template, s1, s2, s3, s4)
    w.references()
    return Paper(title, tuple(w.blocks))


def _abstract(s3: dict[str, Any]) -> str:
    base, prop, gain = s3["baseline"], s3["proposed"], s3["improvement"]
    n = len(base["val_loss"])
    return (f"Over {n} paired held-out replicates, the change {_verb(gain['mean'])} the mean validation log-loss "
            f"from {base['mean']:.4f} ± {base['stderr']:.4f} to {prop['mean']:.4f} ± {prop['stderr']:.4f} (mean ± "
            f"standard error; paired difference {gain['mean']:+.4f} ± {gain['stderr']:.4f}, t({n - 1}) = "
            f"{gain['t']:.2f}, one-sided {_p(gain)}); mean accuracy moves from {base['mean_accuracy']:.3f} "
            f"to {prop['mean_accuracy']:.3f}.")


def _methods(w: _Writer, template: IdeaTemplate, s1: dict, s2: dict, s3: dict) -> None:
    data, grid = s1["dataset"], [t["lr"] for t in s2["trials"]]
    components = list(template.components)
    w.add("heading", "2 Methods")
    w.add("text", f"Data. Each replicate draws {data['n_train']} training and {data['n_val']} validation examples "
                  f"of a binary task with {data['n_features']} features, {data['n_informative']} of them informative; "
                  f"labels follow a logistic model of the informative features, classes are balanced and "
                  f"{model.LABEL_FLIP:.0%} of labels are flipped. The features come in very different units "
                  f"(standard deviations from {data['feature_scale_min']:.3g} to {data['feature_scale_max']:.3g}, "
                  f"with offsets), which makes plain gradient descent badly conditioned {w.cite('lecun1998')}.")
    w.add("text", f"Baseline. Logistic regression {w.cite('cox1958')} on the raw features, trained from zero weights "
                  f"by full-batch gradient descent {w.cite('cauchy1847')} with a constant learning rate for "
                  f"{s1['epochs']} epochs, the gradient's norm clipped at {model.GRAD_CLIP:g} {w.cite('pascanu2013')}.")
    w.add("text", f"Change. {template.title} {w.cite(*template.references)}: {template.method}.")
    lrs = model.LR_GRID
    w.add("text", f"Tuning. Each arm's learning rate is chosen from the same grid of {len(lrs)} values, {min(lrs):g} "
                  f"to {max(lrs):g}, extended by up to {model.MAX_SWEEP_EXTENSIONS} further rates beyond an end "
                  f"while the best rate is that end (the baseline's sweep tried {len(grid)}, {min(grid):g} to "
                  f"{max(grid):g}), by validation log-loss on a separate tuning replicate {w.cite('bengio2012')}; "
                  f"the baseline kept {s3['baseline']['lr']:g} and the change {s3['proposed']['lr']:g}.")
    ablation = (f"Ablations remove one component at a time ({', '.join(components)}), re-tune the learning rate "
                "and evaluate on the same replicates." if len(components) > 1 else
                f"The change has a single component ({components[0]}); its ablation is the baseline re-tuned, so "
                "it repeats the baseline's numbers.")
    w.add("text", f"Evaluation. Both arms are trained on {len(s3['baseline']['val_loss'])} fresh replicates, the same "
                  "draws for each, and compared by the per-replicate differences of their validation log-loss with "
                  f"a one-sided paired t-test {w.cite('student1908')}, p-values from the exact series for integer "
                  f"degrees of freedom {w.cite('abramowitz1964')}. {ablation}")


def _results(w: _Writer, template: IdeaTemplate, s1: dict, s2: dict, s3: dict, s4: dict) -> None:
    curve, base, prop, gain = s1["curve"], s3["baseline"], s3["proposed"], s3["improvement"]
    n = len(base["val_loss"])
    better = sum(b > p for b, p in zip(base["val_loss"], prop["val_loss"], strict=True))
    w.add("heading", "3 Results")
    w.add("text", f"{w.ref('learning_curve')} shows the preliminary run: the baseline at an untuned learning rate of "
                  f"{s1['lr']:g} moves its validation log-loss from {curve['val_loss'][0]:.4f} at epoch "
                  f"{curve['epoch'][0]} to {curve['val_loss'][-1]:.4f} at epoch {curve['epoch'][-1]} (accuracy "
                  f"{curve['val_accuracy'][0]:.3f} to {curve['val_accuracy'][-1]:.3f}); a model that always predicts "
                  f"0.5 scores ln 2 = {CHANCE_LOSS:.4f}.")
    w.figure("learning_curve", f"Learning curve of the untuned baseline (learning rate {s1['lr']:g}) on the tuning "
                               f"replicate: validation log-loss (red, left axis) and accuracy (blue, right axis) every "
                               f"few epochs.")
    sweeps = [("the baseline's", s2["trials"], base["lr"]), ("the change's", prop["trials"], prop["lr"])]
    ranges = "; ".join(f"{who} tuning loss ranges from {min(t['val_loss'] for t in trials):.3g} to "
                       f"{max(t['val_loss'] for t in trials):.3g}, lowest at {kept:g}" for who, trials, kept in sweeps)
    w.add("text", f"{w.ref('lr_sweep')} shows the learning-rate sweeps: {ranges}.{_edge_note(s2, s3)}")
    w.figure("lr_sweep", f"Learning-rate sweep on the tuning replicate: validation log-loss after {s1['epochs']} epochs "
                         "for each rate of the grid, baseline and change; the rate each arm kept is ringed. Logarithmic "
                         "axes wherever the values span an order of magnitude or more.")
    w.add("text", f"Table 1 lists every arm's validation log-loss and accuracy over the {n} held-out replicates. The "
                  f"change gave the lower loss on {better} of {n} replicates ({w.ref('seed_comparison')}): the mean "
                  f"paired difference, baseline minus change, is {gain['mean']:+.4f} ± {gain['stderr']:.4f} (standard "
                  f"error), {_relative(gain, base)} of the baseline's mean loss; t({n - 1}) = {gain['t']:.2f}, "
                  f"one-sided {_p(gain)}.")
    rows = [("baseline", base), (template.name, prop)] + [(f"without {a['removed']}", a) for a in s4["ablations"]]
    w.add("table", f"Table 1: validation log-loss (mean ± standard error) and accuracy (mean) of each arm over {n} "
                   "held-out replicates, with the learning rate each arm kept.",
          rows=(("arm", "learning rate", "val log-loss", "val accuracy", "n"),) + tuple(
              (label, f"{arm['lr']:g}", f"{arm['mean']:.4f} ± {arm['stderr']:.4f}", f"{arm['mean_accuracy']:.3f}",
               str(len(arm["val_loss"]))) for label, arm in rows))
    w.figure("seed_comparison", f"Validation log-loss on each of the {n} held-out replicates; a grey line joins the two "
                                "arms on the same replicate. Black: each arm's mean ± standard error.")
    costs = "; ".join(f"without {a['removed']} the loss is {a['mean']:.4f} ± {a['stderr']:.4f}, "
                      f"{a['delta_mean']:+.4f} ± {a['delta_stderr']:.4f} against the full change" for a in s4["ablations"])
    w.add("text", f"{w.ref('ablation')} shows the ablations: {costs}.")
    w.figure("ablation", f"Ablations: mean validation log-loss ± standard error over the same {n} replicates of the full "
                         "change, the change with one component removed (re-tuned), and the baseline.")


def _discussion(w: _Writer, template: IdeaTemplate, s1: dict, s2: dict, s3: dict, s4: dict) -> None:
    base, gain = s3["baseline"], s3["improvement"]
    n = len(base["val_loss"])
    p = gain.get("p")
    w.add("heading", "4 Discussion")
    small = base["mean"] <= 0 or gain["mean"] / base["mean"] < reviewer.MIN_RELATIVE_IMPROVEMENT
    if gain["mean"] > 0 and p is not None and p < 0.05 and not small:
        shown = (f"On this synthetic task, {_lower(template.title)} lowered the validation log-loss of the tuned "
                 f"baseline by {_relative(gain, base)}, a difference that a paired t-test over {n} replicates tells "
                 f"from chance ({_p(gain)}).")
    elif gain["mean"] > 0 and p is not None and p < 0.05:
        shown = (f"The change lowered the mean loss by only {_relative(gain, base)} of the baseline's. A paired t-test "
                 f"over {n} replicates tells that from chance ({_p(gain)}), but it is below the "
                 f"{reviewer.MIN_RELATIVE_IMPROVEMENT:.0%} the demo's review asks of a meaningful effect.")
    elif gain["mean"] > 0:
        shown = (f"The change lowered the mean loss by {_relative(gain, base)} of the baseline's, but a paired t-test "
                 f"over {n} replicates cannot tell that difference from chance ({_p(gain)}).")
    else:
        shown = f"The change did not lower the loss: the mean paired difference is {gain['mean']:+.4f} ({_p(gain)})."
    if len(s4["ablations"]) > 1:
        top = max(s4["ablations"], key=lambda a: a["delta_mean"])
        shown += (f" Of its components, removing {top['removed']} costs the most ({top['delta_mean']:+.4f}): that "
                  "component carries most of the effect.")
    w.add("text", shown)
    w.add("text", _baseline_note(s1, s2, s3))
    w.add("text", f"Limits. The data are synthetic, from one generative process built so that the demo's changes "
                  "differ for known reasons (badly scaled features favour anything that rescales them). There is "
                  f"one linear model and one metric, measured after a fixed budget of {s1['epochs']} epochs; {n} "
                  "replicates, with every learning rate tuned on a single replicate; and "
                  f"{1 + len(s4['ablations'])} comparisons in all, without correction for multiple testing. The "
                  f"result speaks to {template.name} on this task, not to the hypothesis as worded, nor to other data "
                  "or models.")


def _edge_note(s2: dict, s3: dict) -> str:
    notes = []
    for who, trials, kept in (("baseline", s2["trials"], s3["baseline"]["lr"]),
                              ("change", s3["proposed"]["trials"], s3["proposed"]["lr"])):
        edge = sweep_edge(trials, kept)
        if edge:
            notes.append(f" The {who}'s lowest tuning loss is at the {edge} rate of the grid.")
    return "".join(notes)


def _baseline_note(s1: dict, s2: dict, s3: dict) -> str:
    """What the tuning says about how strong the comparison is."""
    base, prop = s3["baseline"], s3["proposed"]
    parts = []
    for who, trials, kept in (("baseline", s2["trials"], base["lr"]), ("change", prop["trials"], prop["lr"])):
        edge = sweep_edge(trials, kept)
        if edge:
            beyond = "below" if edge == "smallest" else "above"
            parts.append(f"The {who} kept the {edge} learning rate of its sweep ({kept:g}): its best rate may lie "
                         f"{beyond} the grid, so the {who} may be under-tuned"
                         + (" and the gain over it overstated." if who == "baseline" else "."))
    if base["mean"] >= 0.97 * CHANCE_LOSS:
        majority = s1["dataset"]["majority_rate_val"]
        parts.append(f"The baseline's held-out loss, {base['mean']:.4f}, is close to ln 2 = {CHANCE_LOSS:.4f}, the loss "
                     f"of a model that always predicts 0.5, and its accuracy ({base['mean_accuracy']:.3f}) close to "
                     f"the majority class ({majority:.3f}): the change is compared with a baseline that barely learns "
                     f"in {s1['epochs']} epochs, and a gain over it says little about a well-tuned model.")
    if not any(sweep_edge(t, kept) for t, kept in ((s2["trials"], base["lr"]), (prop["trials"], prop["lr"]))):
        parts.insert(0, "Both arms kept a learning rate inside their sweeps, so neither looks under-tuned on this grid.")
    return "Strength of the comparison. " + " ".join(parts)


def _lower(title: str) -> str:
    return title[0].lower() + title[1:]


def _verb(difference: float) -> str:
    return "lowers" if difference > 0 else "raises" if difference < 0 else "does not change"


def _relative(gain: dict, base: dict) -> str:
    return f"{gain['mean'] / base['mean']:.1%}" if base["mean"] > 0 else "n/a"


def _p(gain: dict) -> str:
    """'p = 0.012', or 'p < 0.0001' for the tiny p-values a handful of replicates can still give."""
    p = gain.get("p")
    return "p n/a" if p is None else f"p = {p:.2g}" if p >= 1e-4 else "p < 0.0001"
