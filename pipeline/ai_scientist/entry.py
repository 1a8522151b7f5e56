"""AI-Scientist-v2's phases, one per child process: `python orchestrator_entry.py <phase> <args file>`.

A transcription of SakanaAI/AI-Scientist-v2's `launch_scientist_bfts.py` @ defddb8, one function
per phase. The adapter copies this file into the run root and runs it there with upstream's own
interpreter, so it imports only the standard library and upstream (`ai_scientist` is the copy of
the checkout's package beside it), never this project.

Why a child process: upstream draws rich live screens, registers atexit cleanups, resolves paths
against the working directory and runs for hours; a child can be stopped on cancel without
touching the worker. Each phase writes its token tracker summary to `token_usage/<phase>.json`.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

#: Exit code of a writeup that did not complete: the adapter may still use a reflection PDF.
WRITEUP_INCOMPLETE = 3


def experiments(args: dict[str, Any]) -> None:
    """Write idea.json/idea.md and the idea's BFTS config, then run the four-stage tree search."""
    from ai_scientist.treesearch.bfts_utils import edit_bfts_config_file, idea_to_markdown
    from ai_scientist.treesearch.perform_experiments_bfts_with_agentmanager import perform_experiments_bfts

    idea_dir = Path(args["idea_dir"])
    idea_dir.mkdir(parents=True, exist_ok=True)
    idea_json = idea_dir / "idea.json"
    idea_json.write_text(json.dumps(args["idea"], indent=4), encoding="utf-8")
    idea_to_markdown(args["idea"], str(idea_dir / "idea.md"), None)
    config_path = edit_bfts_config_file("bfts_config.yaml", str(idea_dir), str(idea_json))
    perform_experiments_bfts(config_path)


def ideas(args: dict[str, Any]) -> None:
    """Generate research ideas from the hypothesis text used as the workshop description."""
    from ai_scientist.llm import create_client
    from ai_scientist.perform_ideation_temp_free import generate_temp_free_idea

    Path(args["out"]).parent.mkdir(parents=True, exist_ok=True)
    client, model = create_client(args["model"])
    generate_temp_free_idea(
        idea_fname=args["out"], client=client, model=model, workshop_description=args["description"],
        max_num_generations=args["max_num_generations"], num_reflections=args["num_reflections"],
    )


def plots(args: dict[str, Any]) -> None:
    """Aggregate the experiments' plots into `<idea_dir>/figures`, staging the results as the launcher does."""
    from ai_scientist.perform_plotting import aggregate_plots

    idea_dir = Path(args["idea_dir"])
    results, staged = idea_dir / "logs" / "0-run" / "experiment_results", idea_dir / "experiment_results"
    if results.exists():
        shutil.copytree(results, staged, dirs_exist_ok=True)
    try:
        aggregate_plots(base_folder=str(idea_dir), model=args["model"])
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def writeup(args: dict[str, Any]) -> None:
    """Gather citations, then write the ICBINB-format paper, retrying like the launcher does."""
    from ai_scientist.perform_icbinb_writeup import gather_citations, perform_writeup

    citations = gather_citations(args["idea_dir"], num_cite_rounds=args["num_cite_rounds"],
                                 small_model=args["model_citation"])
    for _ in range(args["retries"]):
        if perform_writeup(base_folder=args["idea_dir"], small_model=args["model_writeup_small"],
                           big_model=args["model_writeup"], page_limit=args["page_limit"],
                           citations_text=citations):
            return
    sys.exit(WRITEUP_INCOMPLETE)


def review(args: dict[str, Any]) -> None:
    """Review the paper as an ensemble with reflections, then its figures and captions, into the
    launcher's two files."""
    from ai_scientist.llm import create_client
    from ai_scientist.perform_llm_review import load_paper, perform_review
    from ai_scientist.perform_vlm_review import perform_imgs_cap_ref_review

    repair_review_ensemble()
    idea_dir = Path(args["idea_dir"])
    client, model = create_client(args["model"])
    review_text = perform_review(load_paper(args["paper"]), model, client, num_reflections=args["num_reflections"],
                                 num_reviews_ensemble=args["num_reviews_ensemble"])
    figures_review = perform_imgs_cap_ref_review(client, model, args["paper"])
    (idea_dir / "review_text.txt").write_text(json.dumps(review_text, indent=4), encoding="utf-8")
    (idea_dir / "review_img_cap_ref.json").write_text(json.dumps(figures_review, indent=4), encoding="utf-8")


def repair_review_ensemble() -> None:
    """Let `perform_review(num_reviews_ensemble > 1)` run. At defddb8 its batch call,
    `llm.get_batch_responses_from_llm`, is wrapped in `track_token_usage`, which reads `.model`
    from the tuple the call returns and raises AttributeError. The review module gets the call
    without its wrappers: the batch is not token-counted (it never was), and is not retried on a
    rate limit (its backoff wrapper goes with it); every other call keeps both."""
    import inspect

    from ai_scientist import perform_llm_review

    perform_llm_review.get_batch_responses_from_llm = inspect.unwrap(perform_llm_review.get_batch_responses_from_llm)


def save_token_usage(phase: str) -> None:
    """The launcher's `save_token_tracker`, one file per phase (each phase is its own process)."""
    try:
        from ai_scientist.utils.token_tracker import token_tracker
    except ImportError:
        return
    out = Path("token_usage")
    out.mkdir(exist_ok=True)
    (out / f"{phase}.json").write_text(json.dumps(token_tracker.get_summary()), encoding="utf-8")


PHASES = {"experiments": experiments, "ideas": ideas, "plots": plots, "writeup": writeup, "review": review}

if __name__ == "__main__":
    phase = sys.argv[1]
    try:
        PHASES[phase](json.loads(Path(sys.argv[2]).read_text(encoding="utf-8")))
    finally:
        save_token_usage(phase)
