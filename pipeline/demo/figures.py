"""The demo's figures and paper, drawn from step outputs only.

Each figure is a function of `ctx.results`, so the paper step re-renders them instead of reading
PNG files the plots step wrote: on a resumed run those files live on another pod.
Figures are built with `matplotlib.figure.Figure` (no pyplot): no global state and no GUI backend,
which is what a worker thread wants.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

Results = dict[str, dict[str, Any]]

_PAGE = (8.27, 11.69)  # A4 portrait, inches


def learning_curve(results: Results) -> Figure:
    """Stage_1: the baseline's validation loss and accuracy by epoch."""
    curve = results["Stage_1"]["curve"]
    fig = Figure(figsize=(6, 3.6))
    ax = fig.add_subplot()
    ax.plot(curve["epoch"], curve["val_loss"], color="tab:red", label="val loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation log-loss")
    acc = ax.twinx()
    acc.plot(curve["epoch"], curve["val_accuracy"], color="tab:blue", label="val accuracy")
    acc.set_ylabel("validation accuracy")
    ax.set_title(f"Preliminary baseline (lr = {results['Stage_1']['lr']:g})")
    ax.legend(handles=ax.get_lines() + acc.get_lines(), loc="best")
    fig.tight_layout()
    return fig


def lr_sweep(results: Results) -> Figure:
    """Stage_2 and Stage_3: validation loss against learning rate for both arms."""
    fig = Figure(figsize=(6, 3.6))
    ax = fig.add_subplot()
    for label, trials in (("baseline", results["Stage_2"]["trials"]),
                          ("proposed", results["Stage_3"]["proposed"]["trials"])):
        ax.plot([t["lr"] for t in trials], [t["val_loss"] for t in trials], marker="o", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("validation log-loss (tuning split)")
    ax.set_title("Learning-rate sweep")
    ax.legend()
    fig.tight_layout()
    return fig


def seed_comparison(results: Results) -> Figure:
    """Stage_3: per-seed validation loss of baseline and proposed change, paired by seed."""
    s3 = results["Stage_3"]
    base, prop = s3["baseline"]["val_loss"], s3["proposed"]["val_loss"]
    fig = Figure(figsize=(6, 3.6))
    ax = fig.add_subplot()
    for b, p in zip(base, prop, strict=True):
        ax.plot([0, 1], [b, p], color="grey", alpha=0.6)
    ax.errorbar([0, 1], [s3["baseline"]["mean"], s3["proposed"]["mean"]],
                yerr=[s3["baseline"]["stderr"], s3["proposed"]["stderr"]],
                fmt="o", color="black", capsize=6, label="mean ± stderr")
    ax.set_xticks([0, 1], ["baseline", s3["idea"]])
    ax.set_xlim(-0.4, 1.4)
    ax.set_ylabel("validation log-loss")
    ax.set_title(f"{len(base)} seeds, paired")
    ax.legend()
    fig.tight_layout()
    return fig


def ablation(results: Results) -> Figure:
    """Stage_4: mean validation loss of the full change, each leave-one-out variant, the baseline."""
    s3, s4 = results["Stage_3"], results["Stage_4"]
    labels = ["full change"] + [f"without {a['removed']}" for a in s4["ablations"]] + ["baseline"]
    means = [s3["proposed"]["mean"]] + [a["mean"] for a in s4["ablations"]] + [s3["baseline"]["mean"]]
    errs = [s3["proposed"]["stderr"]] + [a["stderr"] for a in s4["ablations"]] + [s3["baseline"]["stderr"]]
    fig = Figure(figsize=(6, 3.6))
    ax = fig.add_subplot()
    ax.errorbar(means, range(len(labels)), xerr=errs, fmt="o", color="tab:green", capsize=4)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_ylim(len(labels) - 0.5, -0.5)
    ax.set_xlabel("validation log-loss (mean ± stderr)")
    ax.set_title("Ablations")
    fig.tight_layout()
    return fig


#: File name -> figure builder; the plots step writes them all, the paper embeds them all.
FIGURES: dict[str, Callable[[Results], Figure]] = {
    "learning_curve.png": learning_curve,
    "lr_sweep.png": lr_sweep,
    "seed_comparison.png": seed_comparison,
    "ablation.png": ablation,
}


def write_paper(
    path: Path, title: str, sections: list[tuple[str, str]], table: list[list[str]], results: Results
) -> int:
    """Write the paper PDF: a text page (sections and a results table), then the figures.

    Returns the word count of the text, for the `ai.paper.generated` event.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with PdfPages(path, metadata={"Title": title, "Creator": "ai-scientist-orchestrator demo"}) as pdf:
        pdf.savefig(_text_page(title, sections, table))
        for build in FIGURES.values():
            pdf.savefig(build(results))
    words = title.split() + [w for head, body in sections for w in (head + " " + body).split()]
    return len(words) + sum(len(" ".join(row).split()) for row in table)


def _text_page(title: str, sections: list[tuple[str, str]], table: list[list[str]]) -> Figure:
    fig = Figure(figsize=_PAGE)
    y = 0.95
    for line in textwrap.wrap(title, 55):
        fig.text(0.08, y, line, fontsize=15, weight="bold")
        y -= 0.03
    y -= 0.01
    for head, body in sections:
        fig.text(0.08, y, head, fontsize=11, weight="bold")
        y -= 0.022
        for line in textwrap.wrap(body, 95):
            fig.text(0.08, y, line, fontsize=9)
            y -= 0.017
        y -= 0.012
    ax = fig.add_axes((0.08, max(0.04, y - 0.03 * len(table)), 0.84, 0.03 * len(table)))
    ax.axis("off")
    ax.table(cellText=table[1:], colLabels=table[0], loc="center").set_fontsize(8)
    return fig
