"""What AI-Scientist-v2 leaves behind that the run keeps: plots, paper, reviews, token usage.

File names follow SakanaAI/AI-Scientist-v2 @ defddb8 (`launch_scientist_bfts.py`,
`perform_icbinb_writeup.py`, `perform_plotting.py`, `utils/token_tracker.py`).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ProducedFile:
    """A file AI-Scientist-v2 wrote that the run should keep, with its artifact kind."""

    path: Path
    kind: str
    content_type: str


#: Review outputs as launch_scientist_bfts.py writes them into the idea dir.
_REVIEW_FILES = (("review_text.txt", "text/plain"), ("review_img_cap_ref.json", "application/json"))


def find_paper(idea_dir: Path) -> Path | None:
    """The paper PDF, chosen like launch_scientist_bfts.py's `find_pdf_path_for_review`: a
    reflection PDF marked final, else the highest-numbered reflection, else `<idea_dir name>.pdf`
    (the writeup's compile target), else any PDF in the idea dir."""
    if not idea_dir.is_dir():
        return None
    pdfs = sorted(p for p in idea_dir.glob("*.pdf") if p.is_file())
    reflections = [p for p in pdfs if "reflection" in p.name]
    final = [p for p in reflections if "final" in p.name.lower()]
    if final:
        return final[0]
    numbered = [(int(m.group(1)), p) for p in reflections if (m := re.search(r"reflection[_.]?(\d+)", p.name))]
    if numbered:
        return max(numbered)[1]
    if reflections:
        return reflections[0]
    main = idea_dir / f"{idea_dir.name}.pdf"
    return main if main.is_file() else (pdfs[0] if pdfs else None)


def produced_files(idea_dir: Path) -> list[ProducedFile]:
    """Figures (`figures/*.png`, from plot aggregation), the paper and the review files, in that
    order; only the ones that exist."""
    found = [ProducedFile(p, "figure", "image/png") for p in sorted((idea_dir / "figures").glob("*.png"))]
    paper = find_paper(idea_dir)
    if paper:
        found.append(ProducedFile(paper, "paper", "application/pdf"))
    found += [ProducedFile(idea_dir / name, "review", ctype) for name, ctype in _REVIEW_FILES
              if (idea_dir / name).is_file()]
    return found


def review_verdict(review: Any, pass_overall: float) -> tuple[str, dict[str, float], str]:
    """The review (or the ensemble's meta-review) -> (verdict, numeric scores, notes).

    Pass when the Overall score reaches `pass_overall`, as the replaced worker judged; upstream's
    own Accept/Reject decision is kept in the notes. An unreadable review fails: it is no evidence."""
    review = review if isinstance(review, dict) else {}
    scores = {k.lower().replace(" ", "_"): float(v) for k, v in review.items()
              if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
    overall = scores.get("overall")
    verdict = "pass" if overall is not None and overall >= pass_overall else "fail"
    parts = [f"Overall: {overall:g} (pass at >= {pass_overall:g})" if overall is not None else "Overall: missing"]
    parts += [f"{k}: {review[k]}" for k in ("Decision", "Summary", "Weaknesses") if review.get(k)]
    return verdict, scores, "\n".join(str(p) for p in parts)[:10_000]


def merge_token_usage(files: list[Path]) -> dict[str, Any]:
    """Upstream's `token_tracker.get_summary()` of each child, summed per model."""
    total: dict[str, Any] = {}
    for path in files:
        try:
            summary = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for model, usage in (summary.items() if isinstance(summary, dict) else ()):
            if not isinstance(usage, dict):
                continue
            into = total.setdefault(model, {"tokens": {}, "cost (USD)": 0.0})
            for kind, count in (usage.get("tokens") or {}).items():
                if isinstance(count, (int, float)):
                    into["tokens"][kind] = into["tokens"].get(kind, 0) + count
            cost = usage.get("cost (USD)")
            if isinstance(cost, (int, float)):
                into["cost (USD)"] += cost
    return total


@dataclass
class PlotWatcher:
    """Finds the tree search's plots as they appear, each once, when it has stopped changing
    (same size and mtime on two looks): a PNG still being written is left for the next look."""

    seen: set[Path] = field(default_factory=set)
    _last: dict[Path, tuple[int, int]] = field(default_factory=dict)

    def ready(self, log_dir: Path, *, final: bool = False) -> list[Path]:
        """New, complete plots under `log_dir/experiment_results`; `final` when no writer is left."""
        found = []
        for path in sorted((log_dir / "experiment_results").glob("*/*.png")):
            if path in self.seen:
                continue
            try:
                stat = path.stat()
            except OSError:
                continue
            mark = (stat.st_size, stat.st_mtime_ns)
            if final or self._last.get(path) == mark:
                self.seen.add(path)
                found.append(path)
            self._last[path] = mark
        return found
