"""Research pipelines as plain steps: no Celery, Flask, MongoDB or HTTP in here.

A pipeline is a named tuple of `Step`s, one per stage of `orchestrator.events.STAGES`. The worker
drives the steps one at a time, wraps each in stage events and stores each step's returned dict as
its checkpoint (see `pipeline.base`). Steps report through a `RunContext` (see `pipeline.context`).
"""

from pipeline.base import Pipeline, Step, StepFunction
from pipeline.context import Canceled, RecordingContext, RunContext
from pipeline.errors import (
    AllNodesBuggy,
    ExperimentStateLost,
    InvalidIdea,
    MaxIterationsReached,
    PipelineError,
    PipelineUnavailable,
    UnknownPipeline,
)
from pipeline.registry import PIPELINES, check_available, get_pipeline, load_modules

__all__ = [
    "PIPELINES",
    "AllNodesBuggy",
    "Canceled",
    "ExperimentStateLost",
    "InvalidIdea",
    "MaxIterationsReached",
    "Pipeline",
    "PipelineError",
    "PipelineUnavailable",
    "RecordingContext",
    "RunContext",
    "Step",
    "StepFunction",
    "UnknownPipeline",
    "check_available",
    "get_pipeline",
    "load_modules",
]
