"""The demo's figures and the PDF layout of its paper, drawn from step outputs only.

Each figure is a function of `ctx.results`, so the paper step re-renders them instead of reading
PNG files the plots step wrote: on a resumed run those files live on another pod. A builder draws
into a figure or a subfigure it is given, so the same drawing is the plots step's PNG and, in
vector form, a full-width figure of the paper. Figures are built with `matplotlib.figure.Figure`
(no pyplot): no global state and no GUI backend, which is what a worker thread wants.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure, FigureBase
from matplotlib.font_manager import FontProperties
from matplotlib.lines import Line2D
from matplotlib.textpath import text_to_path

from pipeline.demo.paper import Block, Paper

Results = dict[str, dict[str, Any]]

#: Width and height (inches) of every figure: the paper's text width, so a figure is placed at
#: full width without rescaling its fonts.
FIGSIZE = (6.5, 3.1)
#: A spread this large (max / min) gets a log axis: on a linear one the outliers flatten the rest.
LOG_SPREAD = 10.0


def _log_if_spread(ax: Axes, values: Iterable[float], axis: str = "y") -> None:
    positive = [v for v in values if v > 0]
    if positive and max(positive) / min(positive) >= LOG_SPREAD:
        (ax.set_yscale if axis == "y" else ax.set_xscale)("log")


def learning_curve(results: Results, fig: FigureBase) -> None:
    """Stage_1: the untuned baseline's validation loss and accuracy by epoch."""
    curve = results["Stage_1"]["curve"]
    fig.subplots_adjust(left=0.1, right=0.88, bottom=0.16, top=0.9)
    ax = fig.add_subplot()
    ax.plot(curve["epoch"], curve["val_loss"], color="tab:red")
    _log_if_spread(ax, curve["val_loss"])
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation log-loss", color="tab:red")
    acc = ax.twinx()
    acc.plot(curve["epoch"], curve["val_accuracy"], color="tab:blue")
    acc.set_ylabel("validation accuracy", color="tab:blue")
    ax.set_title(f"Preliminary baseline, untuned (lr = {results['Stage_1']['lr']:g})", fontsize=10)


def lr_sweep(results: Results, fig: FigureBase) -> None:
    """Stage_2 and Stage_3: validation loss against learning rate for both arms, the kept rate
    of each ringed; log axes, since a too-large rate's loss is orders of magnitude above the rest."""
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.16, top=0.9)
    ax = fig.add_subplot()
    arms = (("baseline", results["Stage_2"]["trials"], results["Stage_2"]["best_lr"], "tab:blue"),
            (results["Stage_3"]["idea"], results["Stage_3"]["proposed"]["trials"],
             results["Stage_3"]["proposed"]["lr"], "tab:orange"))
    losses = []
    for label, trials, kept, color in arms:
        ax.plot([t["lr"] for t in trials], [t["val_loss"] for t in trials], marker="o", color=color, label=label)
        best = next(t for t in trials if t["lr"] == kept)
        ax.plot([kept], [best["val_loss"]], marker="o", markersize=13, fillstyle="none", color=color, linestyle="")
        losses += [t["val_loss"] for t in trials]
    ax.set_xscale("log")
    _log_if_spread(ax, losses)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("validation log-loss (tuning replicate)")
    ax.set_title("Learning-rate sweep (ringed: the rate each arm kept)", fontsize=10)
    ax.legend(fontsize=8)


def seed_comparison(results: Results, fig: FigureBase) -> None:
    """Stage_3: per-replicate validation loss of baseline and change, paired by replicate."""
    s3 = results["Stage_3"]
    base, prop = s3["baseline"]["val_loss"], s3["proposed"]["val_loss"]
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.1, top=0.9)
    ax = fig.add_subplot()
    for b, p in zip(base, prop, strict=True):
        ax.plot([0, 1], [b, p], color="grey", alpha=0.6)
    ax.errorbar([0, 1], [s3["baseline"]["mean"], s3["proposed"]["mean"]],
                yerr=[s3["baseline"]["stderr"], s3["proposed"]["stderr"]],
                fmt="o", color="black", capsize=6, label="mean ± standard error")
    _log_if_spread(ax, base + prop)
    ax.set_xticks([0, 1], ["baseline", s3["idea"]])
    ax.set_xlim(-0.4, 1.4)
    ax.set_ylabel("validation log-loss")
    ax.set_title(f"{len(base)} held-out replicates, paired (grey: one replicate)", fontsize=10)
    ax.legend(fontsize=8)


def ablation(results: Results, fig: FigureBase) -> None:
    """Stage_4: mean validation loss of the full change, each leave-one-out variant, the baseline."""
    s3, s4 = results["Stage_3"], results["Stage_4"]
    labels = ["full change"] + [f"without {a['removed']}" for a in s4["ablations"]] + ["baseline"]
    means = [s3["proposed"]["mean"]] + [a["mean"] for a in s4["ablations"]] + [s3["baseline"]["mean"]]
    errs = [s3["proposed"]["stderr"]] + [a["stderr"] for a in s4["ablations"]] + [s3["baseline"]["stderr"]]
    fig.subplots_adjust(left=0.3, right=0.97, bottom=0.16, top=0.9)
    ax = fig.add_subplot()
    ax.errorbar(means, range(len(labels)), xerr=errs, fmt="o", color="tab:green", capsize=4)
    _log_if_spread(ax, means, "x")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_ylim(len(labels) - 0.5, -0.5)
    ax.set_xlabel("validation log-loss (mean ± standard error)")
    ax.set_title("Ablations: one component removed at a time", fontsize=10)


@dataclass(frozen=True)
class Plot:
    file: str
    build: Callable[[Results, FigureBase], None]


#: Key -> figure; the plots step writes them all, the paper places them all (its `Block.figure`
#: names the key).
FIGURES: dict[str, Plot] = {
    "learning_curve": Plot("learning_curve.png", learning_curve),
    "lr_sweep": Plot("lr_sweep.png", lr_sweep),
    "seed_comparison": Plot("seed_comparison.png", seed_comparison),
    "ablation": Plot("ablation.png", ablation),
}


def standalone(key: str, results: Results) -> Figure:
    """One figure on its own, for the plots step's PNG."""
    fig = Figure(figsize=FIGSIZE)
    FIGURES[key].build(results, fig)
    return fig


# --- the paper's layout -------------------------------------------------------------------------

_PAGE_W, _PAGE_H = 8.27, 11.69  # A4 portrait, inches
_LEFT, _TOP, _BOTTOM = (_PAGE_W - FIGSIZE[0]) / 2, 0.8, 0.8
_TEXT_W = FIGSIZE[0]
#: Lines are wrapped a little short of the text width: PDF viewers and PNG renderers that hint
#: glyphs draw text up to 3% wider than the PDF font metrics measure it.
_WRAP_W = 0.97 * _TEXT_W
#: kind -> (font size, weight, style, space above in inches).
_STYLE = {
    "title": (15.0, "bold", "normal", 0.0), "byline": (8.5, "normal", "italic", 0.08),
    "heading": (11.5, "bold", "normal", 0.2), "text": (9.5, "normal", "normal", 0.08),
    "caption": (8.5, "normal", "italic", 0.06), "reference": (8.5, "normal", "normal", 0.04),
}
_LINE = 1.3  # line height, in font sizes


def write_paper(path: Path, paper: Paper, results: Results) -> int:
    """Write the paper as a multi-page A4 PDF (vector text and figures) and return its word count,
    for the `ai.paper.generated` event."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with PdfPages(path, metadata={"Title": paper.title, "Creator": "ai-scientist-orchestrator demo"}) as pdf:
        for page in _Layout(results).pages(paper):
            pdf.savefig(page)
    return paper.word_count()


class _Layout:
    """Flows the paper's blocks down A4 pages, starting a new page when a block does not fit."""

    def __init__(self, results: Results):
        self.results = results
        self.done: list[Figure] = []
        self.page: Figure | None = None
        self.y = 0.0  # inches from the top of the current page

    def pages(self, paper: Paper) -> list[Figure]:
        self._text("title", paper.title)
        for block in paper.blocks:
            if block.kind == "figure":
                self._figure(block)
            elif block.kind == "table":
                self._table(block)
            else:
                self._text(block.kind, block.text)
        self._finish()
        return self.done

    def _room(self, height: float) -> Figure:
        if self.page is None or self.y + height > _PAGE_H - _BOTTOM:
            self._finish()
            self.page, self.y = Figure(figsize=(_PAGE_W, _PAGE_H)), _TOP
        return self.page

    def _finish(self) -> None:
        if self.page is not None:
            self.page.text(0.5, 0.4 / _PAGE_H, str(len(self.done) + 1), ha="center", fontsize=8)
            self.done.append(self.page)
            self.page = None

    def _put(self, x: float, text: str, kind: str, **kw: Any) -> None:
        """One line of text with its top at `self.y`; moves `self.y` below it."""
        size, weight, style, _ = _STYLE[kind]
        page = self._room(size * _LINE / 72)
        page.text(x / _PAGE_W, 1 - self.y / _PAGE_H, _literal(text), fontsize=size, weight=weight, style=style,
                  va="top", **kw)
        self.y += size * _LINE / 72

    def _text(self, kind: str, text: str) -> None:
        size, weight, _, above = _STYLE[kind]
        # A heading stays with the first three lines below it; a paragraph may break across pages.
        keep = 3 * _STYLE["text"][0] * _LINE / 72 if kind == "heading" else 0.0
        self._room(above + size * _LINE / 72 + keep)
        if self.y > _TOP:
            self.y += above
        for line in wrap(text, size, _WRAP_W, weight):
            self._put(_LEFT, line, kind)

    def _figure(self, block: Block) -> None:
        caption = wrap(block.text, _STYLE["caption"][0], _WRAP_W)
        height = FIGSIZE[1] + 0.1 + len(caption) * _STYLE["caption"][0] * _LINE / 72
        page = self._room(0.15 + height)
        self.y += 0.15
        top, bottom = self.y / _PAGE_H, (self.y + FIGSIZE[1]) / _PAGE_H
        grid = page.add_gridspec(3, 3, height_ratios=[top, bottom - top, 1 - bottom],
                                 width_ratios=[_LEFT, _TEXT_W, _PAGE_W - _LEFT - _TEXT_W], hspace=0, wspace=0)
        FIGURES[block.figure].build(self.results, page.add_subfigure(grid[1, 1]))
        self.y += FIGSIZE[1] + 0.1
        for line in caption:
            self._put(_LEFT, line, "caption")

    def _table(self, block: Block) -> None:
        """Caption above, a header row between rules, one line per row, columns sized to fit."""
        size = _STYLE["text"][0] - 0.5
        row_h = size * _LINE / 72
        caption = wrap(block.text, _STYLE["caption"][0], _WRAP_W)
        page = self._room(0.15 + len(caption) * _STYLE["caption"][0] * _LINE / 72 + (len(block.rows) + 0.5) * row_h)
        self.y += 0.15
        for line in caption:
            self._put(_LEFT, line, "caption")
        widths = [max(_width(row[i], size) for row in block.rows) + 0.25 for i in range(len(block.rows[0]))]
        scale = min(1.0, _TEXT_W / sum(widths))
        for r, row in enumerate(block.rows):
            if r < 2:
                page.add_artist(Line2D([_LEFT / _PAGE_W, (_LEFT + _TEXT_W) / _PAGE_W], [1 - (self.y + 0.03) / _PAGE_H] * 2,
                                       color="black", linewidth=0.6))
            x = _LEFT
            for i, cell in enumerate(row):
                page.text(x / _PAGE_W, 1 - (self.y + 0.05) / _PAGE_H, _literal(cell), fontsize=size, va="top",
                          weight="bold" if r == 0 else "normal")
                x += widths[i] * scale
            self.y += row_h
        page.add_artist(Line2D([_LEFT / _PAGE_W, (_LEFT + _TEXT_W) / _PAGE_W], [1 - (self.y + 0.05) / _PAGE_H] * 2,
                               color="black", linewidth=0.6))
        self.y += 0.08


def _literal(text: str) -> str:
    """Text as written: matplotlib would read a pair of '$' in a hypothesis as mathtext."""
    return text.replace("$", r"\$")


@functools.lru_cache(maxsize=4096)
def _width(text: str, size: float, weight: str = "normal") -> float:
    """Width of `text` in inches at `size` points, measured with the font matplotlib draws with.
    Cached: a paper measures the same words again and again, and each measure lays out glyphs."""
    width, _, _ = text_to_path.get_text_width_height_descent(text, FontProperties(size=size, weight=weight), ismath=False)
    return width / 72


def wrap(text: str, size: float, width: float, weight: str = "normal") -> list[str]:
    """Greedy word wrap of `text` to lines no wider than `width` inches, a line's width taken as
    its words' and spaces' (kerning across a space is negligible next to `_WRAP_W`'s margin)."""
    space = _width("a a", size, weight) - 2 * _width("a", size, weight)
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line, used = "", 0.0
        for word in paragraph.split():
            needed = _width(word, size, weight)
            if line and used + space + needed > width:
                lines.append(line)
                line, used = "", 0.0
            line, used = (f"{line} {word}", used + space + needed) if line else (word, needed)
        lines.append(line)
    return lines
