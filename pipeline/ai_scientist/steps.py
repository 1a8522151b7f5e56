"""The `ai_scientist` steps: AI-Scientist-v2's phases driven as the orchestrator's eight steps.

How the steps map on upstream, which runs its four experiment stages in one call:
- ideation uses the hypothesis' `ideaJson` (gaps filled, see `ideas`), or runs upstream's
  ideation with the hypothesis text as the workshop description.
- Stage_1 starts the whole tree search in a child process; each of Stage_1..4 follows its own
  stage in the logs (`ProgressTranslator`), uploads plots as they appear, and ends when upstream
  saves the stage's checkpoint or the next stage starts (Stage_4: when the process ends).
- The tree search keeps its state on local disk (upstream cannot resume one). If a run resumes
  where that state is missing, the tree search starts over (from the stored ideation output), in
  `logs/0-run` again. plots/paper/auto_validation take the files they need from an earlier
  attempt of the run on this pod when this attempt has none, and raise `ExperimentStateLost` when
  no attempt here has them.
Before any step, the code and the credentials of this and every later step are checked, so a
run that cannot finish fails before it spends the GPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.ai_scientist import child, credentials
from pipeline.ai_scientist.config import AiScientistConfig
from pipeline.ai_scientist.entry import WRITEUP_INCOMPLETE
from pipeline.ai_scientist.ideas import complete, hypothesis_text, is_complete, slug
from pipeline.ai_scientist.logs import ProgressTranslator, diagnose, find_log_dir, max_iterations, read_stage
from pipeline.ai_scientist.outputs import PlotWatcher, find_paper, merge_token_usage, produced_files, review_verdict
from pipeline.context import RunContext
from pipeline.errors import ExperimentStateLost, InvalidIdea, PipelineError

_TREE_SEARCHES: dict[Path, tuple[subprocess.Popen, PlotWatcher]] = {}
_TREE_SEARCHES_LOCK = threading.Lock()


class LogDirMoved(PipelineError):
    """Upstream wrote its logs somewhere other than `logs/0-run`, which its plotting and writeup read."""


def ready(ctx: RunContext, step: str) -> tuple[AiScientistConfig, dict[str, Any]]:
    """The config and tree-search settings, once the code, the writeup's programs and every
    credential from `step` on are there."""
    cfg = AiScientistConfig.from_env()
    probe = cfg.check_code()
    if "paper" in credentials.remaining(step):
        cfg.check_tools()
    settings, _ = cfg.tree_search_settings()
    generate = step == "ideation" and not isinstance(ctx.hypothesis.get("ideaJson"), dict)
    credentials.check(step, cfg, settings, os.environ, generate_ideas=generate, probe=probe)
    if not os.environ.get(credentials.S2_KEY) and step in ("ideation", "paper"):
        ctx.log(f"{credentials.S2_KEY} is not set: Semantic Scholar searches are rate-limited", "warning")
    return cfg, settings


def ideation(ctx: RunContext) -> dict[str, Any]:
    """The hypothesis' idea, completed; or upstream's ideation from the hypothesis text."""
    cfg, _ = ready(ctx, "ideation")
    given = ctx.hypothesis.get("ideaJson")
    if isinstance(given, dict):
        idea, filled = complete(given, ctx.hypothesis)
        if filled:
            ctx.log(f"ideaJson lacked {', '.join(filled)}; filled with the documented defaults", "warning")
        ctx.report_ideas(count=1, top_k=1)
        return {"idea": idea, "generated": 0, "filled": filled}
    text = hypothesis_text(ctx.hypothesis)
    if not text:
        raise InvalidIdea("The hypothesis has neither an ideaJson nor any title or idea text.")
    out = child.run_root(ctx) / "ideation" / "generated_ideas.json"
    child.run(ctx, cfg, "ideas", {"out": str(out.relative_to(child.run_root(ctx))), "description": text,
                                   "model": cfg.model_ideation, "max_num_generations": cfg.ideation_generations,
                                   "num_reflections": cfg.ideation_reflections})
    ideas = [i for i in _read_json(out, default=[]) if is_complete(i)] if out.is_file() else []
    if not ideas:
        raise InvalidIdea("AI-Scientist-v2 ideation produced no complete idea from the hypothesis.")
    idea, filled = complete(ideas[0], ctx.hypothesis)
    ctx.report_ideas(count=len(ideas), top_k=1)
    _save_token_usage(ctx, "ideas")
    return {"idea": idea, "generated": len(ideas), "filled": filled}


def experiment_step(stage: str) -> Callable[[RunContext], dict[str, Any]]:
    def run(ctx: RunContext) -> dict[str, Any]:
        cfg, settings = ready(ctx, stage)
        budget = max_iterations(settings, int(stage[-1]))
        process, watcher = _tree_search(ctx, cfg)
        idea = _idea_dir(ctx)
        translator = ProgressTranslator(ctx, idea / "logs" / "0-run", stage, budget)
        try:
            _follow(ctx, cfg, process, translator, watcher)
        except BaseException:
            close(ctx)  # a cancel, a lost lease or a failed stage: nothing will read its logs
            raise
        if stage == "Stage_4":
            close(ctx)  # what upstream's workers left behind, as its launcher cleans up
            _save_token_usage(ctx, "experiments")
        ctx.progress(1.0)
        return translator.summary()

    run.__name__ = run.__qualname__ = f"experiment_{stage}"
    run.__doc__ = f"Follow AI-Scientist-v2's tree search through {stage}."
    return run


def _follow(ctx: RunContext, cfg: AiScientistConfig, process: subprocess.Popen, translator: ProgressTranslator,
            watcher: PlotWatcher) -> None:
    """Poll the tree search until `translator`'s stage is over; raise why if it ended early."""
    while True:
        _check_log_dir(translator.log_dir.parent.parent)
        translator.poll()
        _upload_plots(ctx, watcher, translator.log_dir, final=False)
        if translator.stage_over():
            return
        if process.poll() is not None:
            translator.poll()
            _upload_plots(ctx, watcher, translator.log_dir, final=True)
            if process.returncode == 0 and translator.main_stage == 4 and translator.snapshot:
                return
            raise _early_end(ctx, translator, process.returncode)
        ctx.checkpoint()
        time.sleep(cfg.poll_s)


def close(ctx: RunContext) -> None:
    """Stop this attempt's tree search, if one is left: the pipeline's `close`, which the worker
    calls however the attempt ended (between two stages a cancel would otherwise leave it on the GPU)."""
    root = child.run_root(ctx)
    with _TREE_SEARCHES_LOCK:
        mine = [idea for idea in _TREE_SEARCHES if idea.is_relative_to(root)]
        for idea in mine:
            child.stop(_TREE_SEARCHES.pop(idea)[0])


def _check_log_dir(idea: Path) -> None:
    found = find_log_dir(idea)
    if found is not None and found.name != "0-run":
        raise LogDirMoved(f"AI-Scientist-v2 wrote its logs to {found}, not logs/0-run, which its plotting and "
                          f"writeup read: something in {idea} made it bump the run index")


def _upload_plots(ctx: RunContext, watcher: PlotWatcher, log_dir: Path, *, final: bool) -> None:
    for path in watcher.ready(log_dir, final=final):
        ctx.save_artifact(path, kind="plot", content_type="image/png")


def plots(ctx: RunContext) -> dict[str, Any]:
    """Aggregate the experiment plots (upstream's LLM-written aggregator) and register the figures."""
    cfg, _ = ready(ctx, "plots")
    idea = _state(ctx)
    if not (idea / "logs" / "0-run" / "experiment_results").is_dir():
        raise ExperimentStateLost(f"no tree-search results under {idea}: this pod did not run the "
                                  "experiment stages; reset the run to start it over")
    child.run(ctx, cfg, "plots", {"idea_dir": _relative(ctx, idea), "model": cfg.model_agg_plots})
    keys = [ctx.save_artifact(f.path, kind=f.kind, content_type=f.content_type)
            for f in produced_files(idea) if f.kind == "figure"]
    _save_token_usage(ctx, "plots")
    ctx.progress(1.0)
    return {"figures": keys}


def paper(ctx: RunContext) -> dict[str, Any]:
    """Write the ICBINB-format paper with citations and register the PDF; like upstream's launcher,
    fall back to the best reflection PDF when the page-limited final one was not made."""
    cfg, _ = ready(ctx, "paper")
    idea = _state(ctx)
    if not (idea / "logs" / "0-run").is_dir():
        raise ExperimentStateLost(f"no tree-search logs under {idea}: the experiments ran on another pod")
    code = child.run(ctx, cfg, "writeup", {
        "idea_dir": _relative(ctx, idea), "model_writeup": cfg.model_writeup, "model_citation": cfg.model_citation,
        "model_writeup_small": cfg.model_writeup_small, "page_limit": cfg.page_limit,
        "num_cite_rounds": cfg.num_cite_rounds, "retries": cfg.writeup_retries,
    }, ok=(0, WRITEUP_INCOMPLETE))
    pdf = find_paper(idea)
    _save_token_usage(ctx, "writeup")
    if pdf is None:
        raise PipelineError(f"the writeup made no PDF after {cfg.writeup_retries} tries; see {child.log_path(ctx, 'writeup')}")
    if code == WRITEUP_INCOMPLETE:
        ctx.log(f"the writeup did not finish its page-limited version; using {pdf.name}, as upstream's launcher does",
                "warning")
    key = ctx.report_paper(pdf)
    ctx.progress(1.0)
    return {"key": key, "file": pdf.name, "final": code == 0}


def auto_validation(ctx: RunContext) -> dict[str, Any]:
    """Upstream's LLM review of the paper, an ensemble with reflections; Overall decides the verdict."""
    cfg, _ = ready(ctx, "auto_validation")
    idea = _state(ctx)
    pdf = find_paper(idea)
    if pdf is None:
        raise ExperimentStateLost(f"no paper PDF under {idea}: the paper step ran on another pod")
    ctx.validation_started(model=cfg.model_review, rubric_version="ai-scientist-v2")
    child.run(ctx, cfg, "review", {"idea_dir": _relative(ctx, idea), "paper": _relative(ctx, pdf),
                                    "model": cfg.model_review, "num_reviews_ensemble": cfg.review_ensemble,
                                    "num_reflections": cfg.review_reflections})
    for f in produced_files(idea):
        if f.kind == "review":
            ctx.save_artifact(f.path, kind=f.kind, content_type=f.content_type)
    _save_token_usage(ctx, "review")
    usage = _total_token_usage(ctx)
    verdict, scores, notes = review_verdict(_read_json(idea / "review_text.txt", default={}), cfg.pass_overall)
    ctx.report_verdict(verdict, scores=scores, notes=notes)
    ctx.progress(1.0)
    return {"verdict": verdict, "scores": scores, "token_usage": usage}


def _idea_dir(ctx: RunContext) -> Path:
    idea = (ctx.results.get("ideation") or {}).get("idea")
    if not isinstance(idea, dict):
        raise PipelineError("the ideation step's outputs are missing from ctx.results")
    return child.idea_dir(ctx, slug(str(idea.get("Name") or "idea")))


def _state(ctx: RunContext) -> Path:
    """The idea dir with the tree search's files, from an earlier attempt on this pod if need be."""
    idea = _idea_dir(ctx)
    attempt = child.recover_from_earlier_attempt(ctx, idea)
    if attempt is not None:
        ctx.log(f"took the tree search's files from attempt {attempt} on this pod", "info")
    return idea


def _relative(ctx: RunContext, path: Path) -> str:
    """A path as the child sees it: relative to the run root, its working directory (as the launcher's are)."""
    return str(path.relative_to(child.run_root(ctx)))


def _tree_search(ctx: RunContext, cfg: AiScientistConfig) -> tuple[subprocess.Popen, PlotWatcher]:
    """The run's tree-search child on this pod, started on first use (or again after a crash)."""
    idea = _idea_dir(ctx)
    fresh_run = "Stage_1" not in ctx.results
    with _TREE_SEARCHES_LOCK:
        running = _TREE_SEARCHES.get(idea)
        if running is not None and not (fresh_run and running[0].poll() is not None):
            return running  # running, or finished for this run: the steps read its logs
        for group in child.reap_earlier_attempts(ctx, "experiments"):
            ctx.log(f"killed the tree search (process group {group}) an earlier attempt left on this pod", "warning")
        removed = child.clear_tree_search(idea)
        if removed:
            ctx.log(f"an earlier tree search left {', '.join(removed)}; starting the tree search over in logs/0-run",
                    "warning")
        elif ctx.results.get("Stage_1") is not None:
            ctx.log("tree-search state is not on this pod; starting the tree search over", "warning")
        process = child.start(ctx, cfg, "experiments", {"idea_dir": _relative(ctx, idea),
                                                         "idea": ctx.results["ideation"]["idea"]})
        _TREE_SEARCHES[idea] = (process, PlotWatcher())
        return _TREE_SEARCHES[idea]


def _early_end(ctx: RunContext, translator: ProgressTranslator, returncode: int) -> Exception:
    """Why the tree search stopped before finishing the translator's stage."""
    cause = translator.diagnose()
    if cause is None and translator.snapshot is None and translator.main_stage > 1:
        previous = translator.main_stage - 1
        cause = diagnose(f"Stage_{previous}", read_stage(translator.log_dir, previous), translator.max_iterations)
    if cause is not None:
        return cause
    return RuntimeError(f"AI-Scientist-v2's tree search exited with code {returncode} before finishing "
                        f"{translator.stage}; see {child.log_path(ctx, 'experiments')}")


def _save_token_usage(ctx: RunContext, phase: str) -> None:
    """Keep a phase's token usage (upstream's `token_tracker.get_summary()`) as an artifact."""
    path = child.run_root(ctx) / "token_usage" / f"{phase}.json"
    if path.is_file():
        ctx.save_artifact(path, kind="token_usage", content_type="application/json")


def _total_token_usage(ctx: RunContext) -> dict[str, Any]:
    """The token usage of every phase of every attempt of this run on this pod, summed per model
    into `token_tracker.json` and kept as an artifact (earlier attempts' phases were paid for too)."""
    root = child.run_root(ctx)
    roots = [root, *(child.run_root_of(ctx, attempt) for attempt in child.earlier_attempts(ctx))]
    usage = merge_token_usage(sorted(path for r in roots for path in (r / "token_usage").glob("*.json")))
    if usage:
        out = root / "token_tracker.json"
        out.write_text(json.dumps(usage, indent=2, sort_keys=True), encoding="utf-8")
        ctx.save_artifact(out, kind="token_usage", content_type="application/json")
    return usage


def _read_json(path: Path, default: Any) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default
