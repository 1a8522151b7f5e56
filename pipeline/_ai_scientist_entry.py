"""AI-Scientist-v2 calls, run in a child process: `python _ai_scientist_entry.py <name> <json args>`.

NOT TESTABLE HERE: AI-Scientist-v2 is not installed in this repository's environment, and its
entry points need GPUs, LLM API keys and a LaTeX toolchain. Keep this file a thin transcription of
what SakanaAI/AI-Scientist-v2's `launch_scientist_bfts.py` does, one function per phase.

Why a child process: these functions draw rich live screens, register atexit cleanups, resolve
paths against the working directory and can take hours; a child can be stopped on cancel without
touching the worker, and its working directory is its own.
This file is run by path and imports nothing from `pipeline`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def experiments(args: dict[str, Any]) -> None:
    """Write idea.json/idea.md and the run's BFTS config, then run the four-stage tree search."""
    from ai_scientist.treesearch.bfts_utils import edit_bfts_config_file, idea_to_markdown
    from ai_scientist.treesearch.perform_experiments_bfts_with_agentmanager import perform_experiments_bfts

    idea_dir = Path(args["idea_dir"])
    idea_dir.mkdir(parents=True, exist_ok=True)
    idea_json = idea_dir / "idea.json"
    idea_json.write_text(json.dumps(args["idea"], indent=4), encoding="utf-8")
    idea_to_markdown(args["idea"], str(idea_dir / "idea.md"), None)
    config_path = edit_bfts_config_file(args["bfts_config"], str(idea_dir), str(idea_json))
    perform_experiments_bfts(config_path)


def ideas(args: dict[str, Any]) -> None:
    """Generate research ideas from the hypothesis text used as the workshop description."""
    from ai_scientist.llm import create_client
    from ai_scientist.perform_ideation_temp_free import generate_temp_free_idea

    client, model = create_client(args["model"])
    generate_temp_free_idea(
        idea_fname=args["out"],
        client=client,
        model=model,
        workshop_description=args["description"],
        max_num_generations=args["max_num_generations"],
        num_reflections=args["num_reflections"],
    )


def plots(args: dict[str, Any]) -> None:
    """Aggregate the experiments' plots into `<idea_dir>/figures`."""
    from ai_scientist.perform_plotting import aggregate_plots

    aggregate_plots(base_folder=args["idea_dir"], model=args["model"])


def writeup(args: dict[str, Any]) -> None:
    """Gather citations, then write the ICBINB-format paper, retrying like the launcher does."""
    from ai_scientist.perform_icbinb_writeup import gather_citations, perform_writeup

    citations = gather_citations(args["idea_dir"], num_cite_rounds=args["num_cite_rounds"],
                                 small_model=args["model_citation"])
    for _ in range(args["retries"]):
        if perform_writeup(base_folder=args["idea_dir"], big_model=args["model_writeup"],
                           page_limit=args["page_limit"], citations_text=citations):
            return
    sys.exit("writeup did not complete after all retries")


def review(args: dict[str, Any]) -> None:
    """Review the paper (text, then figures/captions) and write the launcher's two review files."""
    from ai_scientist.llm import create_client
    from ai_scientist.perform_llm_review import load_paper, perform_review
    from ai_scientist.perform_vlm_review import perform_imgs_cap_ref_review

    idea_dir = Path(args["idea_dir"])
    client, model = create_client(args["model"])
    review_text = perform_review(load_paper(args["paper"]), model, client)
    figures_review = perform_imgs_cap_ref_review(client, model, args["paper"])
    (idea_dir / "review_text.txt").write_text(json.dumps(review_text, indent=4), encoding="utf-8")
    (idea_dir / "review_img_cap_ref.json").write_text(json.dumps(figures_review, indent=4), encoding="utf-8")


if __name__ == "__main__":
    {"experiments": experiments, "ideas": ideas, "plots": plots, "writeup": writeup, "review": review}[
        sys.argv[1]
    ](json.loads(sys.argv[2]))
