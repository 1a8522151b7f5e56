"""The `ai_scientist` pipeline: an adapter over SakanaAI's AI-Scientist-v2 (import name `ai_scientist`).

Testable here: `check_available`, and the log reading in `_ai_scientist_files` (re-exported:
`ProgressTranslator`, `produced_files`, ...). NOT TESTABLE HERE: the steps below that call
AI-Scientist-v2 (through `_ai_scientist_entry.py` in a child process); they need the package, GPUs,
LLM API keys and a LaTeX toolchain, and are kept a thin transcription of `launch_scientist_bfts.py`.

How the steps map on AI-Scientist-v2, which runs its four experiment stages in one call:
- ideation uses the hypothesis' `ideaJson` when it is a complete AI-Scientist idea, else runs
  AI-Scientist's ideation with the hypothesis text as the workshop description.
- The first experiment step starts the whole tree search in a child process; each of Stage_1..4
  follows its own stage in the logs (`ProgressTranslator`) and ends when the next stage starts.
- The tree search keeps its state on local disk. If a run resumes on a pod that lacks it, the
  tree search starts again from its first stage (rebuilt from the stored ideation output), and
  plots/paper/auto_validation raise `ExperimentStateLost` when the files they need are gone.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline._ai_scientist_files import (
    PROGRESS_CAP,
    ProducedFile,
    ProgressTranslator,
    StageSnapshot,
    diagnose,
    find_log_dir,
    find_paper,
    max_iterations,
    produced_files,
    read_stage,
    stage_dirs,
)
from pipeline.base import Pipeline, Step
from pipeline.context import RunContext
from pipeline.errors import ExperimentStateLost, InvalidIdea, PipelineError, PipelineUnavailable

__all__ = [
    "NAME", "PROGRESS_CAP", "AiScientistConfig", "ProducedFile", "ProgressTranslator", "StageSnapshot",
    "ai_scientist_pipeline", "check_available", "diagnose", "find_log_dir", "find_paper",
    "max_iterations", "produced_files", "read_stage", "review_verdict", "stage_dirs",
]

NAME = "ai_scientist"
PACKAGE = "ai_scientist"
INSTALL = "pip install 'ai-scientist @ git+https://github.com/SakanaAI/AI-Scientist-v2'"
#: A checkout of AI-Scientist-v2: its bfts_config.yaml and LaTeX templates are not in the package.
ROOT_ENV = "AI_SCIENTIST_ROOT"
#: Optional: a BFTS config other than `$AI_SCIENTIST_ROOT/bfts_config.yaml`.
BFTS_CONFIG_ENV = "AI_SCIENTIST_BFTS_CONFIG"
#: Seconds between polls of a child process and its logs: tree-search steps take minutes, and a
#: cancel should still be seen within seconds.
POLL_INTERVAL_S = 5.0
#: Seconds a child gets to exit after SIGTERM before SIGKILL.
STOP_GRACE_S = 10.0
#: Keys AI-Scientist-v2's AgentManager refuses to start without.
IDEA_KEYS = ("Name", "Title", "Abstract", "Short Hypothesis", "Experiments", "Risk Factors and Limitations")

_ENTRY = Path(__file__).with_name("_ai_scientist_entry.py")
_IDEA_DIR = "ai_scientist"
_TREE_SEARCHES: dict[Path, subprocess.Popen] = {}
_TREE_SEARCHES_LOCK = threading.Lock()


@dataclass(frozen=True)
class AiScientistConfig:
    """Paths from the environment and model choices; the defaults are launch_scientist_bfts.py's."""

    root: Path
    bfts_config: Path
    model_ideation: str = "gpt-4o-2024-05-13"
    model_agg_plots: str = "o3-mini-2025-01-31"
    model_writeup: str = "o1-preview-2024-09-12"
    model_citation: str = "gpt-4o-2024-11-20"
    model_review: str = "gpt-4o-2024-11-20"
    num_cite_rounds: int = 20
    writeup_retries: int = 3
    page_limit: int = 4
    ideation_generations: int = 1
    ideation_reflections: int = 5
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> AiScientistConfig:
        environ = dict(os.environ if environ is None else environ)
        root = environ.get(ROOT_ENV, "")
        if not root:
            raise PipelineUnavailable(NAME, f"{ROOT_ENV} is not set; point it at a checkout of "
                                            "SakanaAI/AI-Scientist-v2 (its bfts_config.yaml and LaTeX "
                                            "templates are not part of the package)")
        config = Path(environ.get(BFTS_CONFIG_ENV) or Path(root) / "bfts_config.yaml")
        if not config.is_file():
            raise PipelineUnavailable(NAME, f"no BFTS config at {config}; set {BFTS_CONFIG_ENV} to "
                                            "AI-Scientist-v2's bfts_config.yaml")
        return cls(root=Path(root), bfts_config=config, env={ROOT_ENV: root})

    def bfts_settings(self) -> dict[str, Any]:
        import yaml  # AI-Scientist-v2 depends on omegaconf, which brings PyYAML

        return yaml.safe_load(self.bfts_config.read_text(encoding="utf-8")) or {}


def check_available() -> None:
    """Raise `PipelineUnavailable` naming the fix when this worker cannot run AI-Scientist-v2."""
    if importlib.util.find_spec(PACKAGE) is None:
        raise PipelineUnavailable(NAME, f"the Python package {PACKAGE!r} (AI-Scientist-v2) is not "
                                        f"installed; install it with: {INSTALL}")
    AiScientistConfig.from_env()


def ai_scientist_pipeline() -> Pipeline:
    """The registry's factory for `ai_scientist`; the config is read when a step runs."""
    return Pipeline(NAME, (
        Step("ideation", ideation),
        *(Step(stage, _experiment_step(stage)) for stage in ("Stage_1", "Stage_2", "Stage_3", "Stage_4")),
        Step("plots", plots),
        Step("paper", paper),
        Step("auto_validation", auto_validation),
    ))


def ideation(ctx: RunContext) -> dict[str, Any]:
    """A complete `ideaJson` is used as is; otherwise AI-Scientist generates ideas from the text."""
    given = ctx.hypothesis.get("ideaJson")
    if isinstance(given, dict) and all(given.get(k) for k in IDEA_KEYS):
        ctx.report_ideas(count=1, top_k=1)
        return {"idea": given, "generated": 0}
    text = "\n\n".join(str(ctx.hypothesis.get(k) or "").strip() for k in ("title", "idea")).strip()
    if not text:
        raise InvalidIdea("The hypothesis has neither a complete ideaJson nor any title or idea text.")
    cfg = AiScientistConfig.from_env()
    out = _idea_dir(ctx) / "generated_ideas.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    _run_child(ctx, cfg, "ideas", {"out": str(out), "description": text, "model": cfg.model_ideation,
                                    "max_num_generations": cfg.ideation_generations,
                                    "num_reflections": cfg.ideation_reflections})
    ideas = [i for i in _read_json(out, default=[]) if isinstance(i, dict) and all(i.get(k) for k in IDEA_KEYS)]
    if not ideas:
        raise InvalidIdea("AI-Scientist-v2 ideation produced no complete idea from the hypothesis.")
    ctx.report_ideas(count=len(ideas), top_k=1)
    return {"idea": ideas[0], "generated": len(ideas)}


def _experiment_step(stage: str) -> Callable[[RunContext], dict[str, Any]]:
    def run(ctx: RunContext) -> dict[str, Any]:
        cfg = AiScientistConfig.from_env()
        main_stage = int(stage[-1])
        budget = max_iterations(cfg.bfts_settings(), main_stage)
        process = _tree_search(ctx, cfg)
        translator = ProgressTranslator(ctx, _log_dir(ctx), stage, budget)
        try:
            _follow(ctx, process, translator)
        except BaseException:
            _stop(process)  # a cancel, a lost lease or a failed stage: nothing will read its logs
            with _TREE_SEARCHES_LOCK:
                _TREE_SEARCHES.pop(_idea_dir(ctx), None)
            raise
        ctx.progress(1.0)
        return translator.summary()

    run.__name__ = run.__qualname__ = f"experiment_{stage}"
    run.__doc__ = f"Follow AI-Scientist-v2's tree search through {stage}."
    return run


def _follow(ctx: RunContext, process: subprocess.Popen, translator: ProgressTranslator) -> None:
    """Poll the tree search until `translator`'s stage is over; raise why if it ended early."""
    while True:
        translator.log_dir = _log_dir(ctx)  # exists once the child has written its config
        translator.poll()
        if translator.next_stage_started():
            return
        if process.poll() is not None:
            translator.poll()
            if process.returncode == 0 and translator.main_stage == 4 and translator.snapshot:
                return
            raise _early_end(translator, process.returncode)
        ctx.checkpoint()
        time.sleep(POLL_INTERVAL_S)


def plots(ctx: RunContext) -> dict[str, Any]:
    """Aggregate the experiment plots (AI-Scientist's LLM-written aggregator) and register them."""
    cfg = AiScientistConfig.from_env()
    idea_dir = _idea_dir(ctx)
    log_dir = find_log_dir(idea_dir)
    results = log_dir / "experiment_results" if log_dir else None
    if results is None or not results.is_dir():
        raise ExperimentStateLost(f"no tree-search results under {idea_dir}: this pod did not run the "
                                  "experiment stages; reset the run to start it over")
    staged = idea_dir / "experiment_results"
    _copy_tree(results, staged)
    try:
        _run_child(ctx, cfg, "plots", {"idea_dir": str(idea_dir), "model": cfg.model_agg_plots})
    finally:
        _remove_tree(staged)
    keys = [ctx.save_artifact(f.path, kind=f.kind, content_type=f.content_type)
            for f in produced_files(idea_dir) if f.kind == "figure"]
    ctx.progress(1.0)
    return {"figures": keys}


def paper(ctx: RunContext) -> dict[str, Any]:
    """Write the ICBINB-format paper with citations and register the PDF."""
    cfg = AiScientistConfig.from_env()
    idea_dir = _idea_dir(ctx)
    if not (idea_dir / "figures").is_dir():
        raise ExperimentStateLost(f"no figures under {idea_dir}: the plots step ran on another pod")
    _run_child(ctx, cfg, "writeup", {"idea_dir": str(idea_dir), "model_writeup": cfg.model_writeup,
                                      "model_citation": cfg.model_citation, "page_limit": cfg.page_limit,
                                      "num_cite_rounds": cfg.num_cite_rounds, "retries": cfg.writeup_retries})
    pdf = find_paper(idea_dir)
    if pdf is None:
        raise RuntimeError(f"the writeup finished but left no PDF in {idea_dir}")
    key = ctx.report_paper(pdf)
    ctx.progress(1.0)
    return {"key": key, "file": pdf.name}


def auto_validation(ctx: RunContext) -> dict[str, Any]:
    """AI-Scientist's LLM review of the paper; its Accept/Reject decision is the verdict."""
    cfg = AiScientistConfig.from_env()
    idea_dir = _idea_dir(ctx)
    pdf = find_paper(idea_dir)
    if pdf is None:
        raise ExperimentStateLost(f"no paper PDF under {idea_dir}: the paper step ran on another pod")
    ctx.validation_started(model=cfg.model_review, rubric_version="ai-scientist-v2")
    _run_child(ctx, cfg, "review", {"idea_dir": str(idea_dir), "paper": str(pdf), "model": cfg.model_review})
    for f in produced_files(idea_dir):
        if f.kind == "review":
            ctx.save_artifact(f.path, kind=f.kind, content_type=f.content_type)
    verdict, scores, notes = review_verdict(_read_json(idea_dir / "review_text.txt", default={}))
    ctx.report_verdict(verdict, scores=scores, notes=notes)
    ctx.progress(1.0)
    return {"verdict": verdict, "scores": scores}


def review_verdict(review: Any) -> tuple[str, dict[str, float], str]:
    """AI-Scientist's review form -> (verdict, numeric scores, notes). Anything but an explicit
    "Accept" decision fails: an unreadable review is no evidence for the paper."""
    review = review if isinstance(review, dict) else {}
    verdict = "pass" if str(review.get("Decision", "")).strip().lower() == "accept" else "fail"
    scores = {k.lower().replace(" ", "_"): float(v) for k, v in review.items()
              if isinstance(v, (int, float)) and not isinstance(v, bool)}
    parts = [f"{k}: {review[k]}" for k in ("Decision", "Summary", "Weaknesses") if review.get(k)]
    return verdict, scores, "\n".join(str(p) for p in parts)[:10_000] or "no readable review"


def _idea_dir(ctx: RunContext) -> Path:
    return Path(ctx.workdir) / _IDEA_DIR


def _log_dir(ctx: RunContext) -> Path:
    idea_dir = _idea_dir(ctx)
    return find_log_dir(idea_dir) or idea_dir / "logs" / "0-run"


def _tree_search(ctx: RunContext, cfg: AiScientistConfig) -> subprocess.Popen:
    """The run's tree-search child on this pod, started on first use (or again after a crash)."""
    idea_dir = _idea_dir(ctx)
    fresh_run = "Stage_1" not in ctx.results
    with _TREE_SEARCHES_LOCK:
        process = _TREE_SEARCHES.get(idea_dir)
        if process is not None and not (fresh_run and process.poll() is not None):
            return process  # running, or finished for this run: the steps read its logs
        if (idea_dir / "logs").exists():
            ctx.log("tree-search logs without a process of this run; starting the tree search over", "warning")
            _remove_tree(idea_dir / "logs")
        elif ctx.results.get("Stage_1") is not None:
            ctx.log("tree-search state is not on this pod; starting the tree search over", "warning")
        idea = _need_idea(ctx)
        process = _start_child(ctx, cfg, "experiments", {"idea_dir": str(idea_dir), "idea": idea,
                                                         "bfts_config": str(cfg.bfts_config)})
        _TREE_SEARCHES[idea_dir] = process
        return process


def _need_idea(ctx: RunContext) -> dict[str, Any]:
    idea = (ctx.results.get("ideation") or {}).get("idea")
    if not isinstance(idea, dict):
        raise PipelineError("the ideation step's outputs are missing from ctx.results")
    return idea


def _early_end(translator: ProgressTranslator, returncode: int) -> Exception:
    """Why the tree search stopped before finishing the translator's stage."""
    stage = translator.stage
    cause = translator.diagnose()
    if cause is None and translator.snapshot is None and translator.main_stage > 1:
        previous = f"Stage_{translator.main_stage - 1}"
        cause = diagnose(previous, read_stage(translator.log_dir, translator.main_stage - 1),
                         translator.max_iterations)
    if cause is not None:
        return cause
    return RuntimeError(f"AI-Scientist-v2's tree search exited with code {returncode} before "
                        f"finishing {stage}; see {translator.log_dir.parent.parent / 'tree_search.log'}")


def _run_child(ctx: RunContext, cfg: AiScientistConfig, entry: str, args: dict[str, Any]) -> None:
    """Run one entry point to completion, watching for cancel; a non-zero exit is a RuntimeError
    whose message points at the child's log."""
    process = _start_child(ctx, cfg, entry, args)
    try:
        while process.poll() is None:
            ctx.checkpoint()
            time.sleep(POLL_INTERVAL_S)
    except BaseException:
        _stop(process)
        raise
    if process.returncode != 0:
        raise RuntimeError(f"AI-Scientist-v2 {entry} exited with code {process.returncode}; "
                           f"see {_idea_dir(ctx) / f'{entry}.log'}")


def _start_child(
    ctx: RunContext, cfg: AiScientistConfig, entry: str, args: dict[str, Any]
) -> subprocess.Popen:
    idea_dir = _idea_dir(ctx)
    idea_dir.mkdir(parents=True, exist_ok=True)
    log_name = "tree_search.log" if entry == "experiments" else f"{entry}.log"
    with open(idea_dir / log_name, "ab") as log:
        # cwd is the workdir: AI-Scientist makes node paths relative to the cwd, so it must
        # contain the idea dir. A new session lets a cancel stop the child's whole process group.
        return subprocess.Popen(
            [sys.executable, str(_ENTRY), entry, json.dumps(args)],
            cwd=ctx.workdir, env={**os.environ, **cfg.env}, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM the child's process group, SIGKILL it if it is still there after the grace time."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=STOP_GRACE_S)
            return
        except subprocess.TimeoutExpired:
            continue


def _read_json(path: Path, default: Any) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default


def _copy_tree(source: Path, target: Path) -> None:
    shutil.copytree(source, target, dirs_exist_ok=True)


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
