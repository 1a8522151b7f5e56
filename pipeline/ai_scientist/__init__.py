"""The `ai_scientist` pipeline: an adapter over SakanaAI's AI-Scientist-v2 ("upstream").

`config` says where upstream is and how it runs (its own interpreter, from a checkout),
`credentials` what each step's models need, `ideas` how a hypothesis becomes an upstream idea,
`child` lays out each run as upstream's launcher expects and runs upstream's phases in child
processes (`entry` is the child script), `logs` reads the tree search's progress, `outputs` the
files the run keeps, and `steps` drives it all as the orchestrator's eight steps.
"""

from __future__ import annotations

from orchestrator.events import EXPERIMENT_STAGES
from pipeline.ai_scientist.config import NAME, AiScientistConfig
from pipeline.ai_scientist.steps import auto_validation, close, experiment_step, ideation, paper, plots
from pipeline.base import Pipeline, Step

__all__ = ["NAME", "AiScientistConfig", "ai_scientist_pipeline", "check_available"]


def check_available() -> None:
    """Raise `PipelineUnavailable` naming the fix when this worker cannot run AI-Scientist-v2."""
    AiScientistConfig.from_env().check_code()


def ai_scientist_pipeline() -> Pipeline:
    """The registry's factory for `ai_scientist`; the config is read when a step runs."""
    return Pipeline(NAME, (
        Step("ideation", ideation),
        *(Step(stage, experiment_step(stage)) for stage in EXPERIMENT_STAGES),
        Step("plots", plots),
        Step("paper", paper),
        Step("auto_validation", auto_validation),
    ), close=close)
