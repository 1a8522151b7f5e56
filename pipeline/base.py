"""What a pipeline is: named steps, each a function of the run context that returns its outputs.

A step's returned dict is its checkpoint. The worker stores it; after a retry or a crash it skips
completed steps and hands their outputs to later steps in `ctx.results[name]`. So a step reads only
`ctx.results`, `ctx.hypothesis` and `ctx.seed`, never files an earlier step wrote: the pod that
resumes a run does not have them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from orchestrator.events import STAGE_INDEX, STAGE_NAMES
from orchestrator.limits import parse_limits
from pipeline.context import RunContext

StepFunction = Callable[[RunContext], dict[str, Any]]


@dataclass(frozen=True)
class Step:
    """One stage of a run: `name` is one of `STAGE_NAMES`, `run` returns small JSON-able outputs.
    `timeout_s`: its wall-clock limit (None: none), which a run's `limits.stepS` overrides."""

    name: str
    run: StepFunction
    timeout_s: float | None = None

    def __post_init__(self) -> None:
        if self.name not in STAGE_INDEX:
            raise ValueError(f"step name {self.name!r} is not a stage; use one of {', '.join(STAGE_NAMES)}")


@dataclass(frozen=True)
class Pipeline:
    """A named sequence of steps in stage order; the worker drives them one at a time."""

    name: str
    steps: tuple[Step, ...]
    #: Called once an attempt's steps are over, however they ended (done, failed, canceled, lease
    #: lost): stops what one step started for the next ones, such as a child process on the GPU.
    close: Callable[[RunContext], None] | None = None
    #: Wall-clock limit of one attempt's steps together (None: none); a run's `limits.runS`
    #: overrides it.
    timeout_s: float | None = None

    def __post_init__(self) -> None:
        names = [step.name for step in self.steps]
        if len(set(names)) != len(names):
            raise ValueError(f"pipeline {self.name!r} repeats a step: {names}")
        if names != sorted(names, key=STAGE_INDEX.__getitem__):
            raise ValueError(f"pipeline {self.name!r} steps are out of stage order: {names}")

    @property
    def step_names(self) -> tuple[str, ...]:
        return tuple(step.name for step in self.steps)

    def limits(self, overrides: object) -> tuple[float | None, dict[str, float | None]]:
        """(attempt limit, limit per step) in seconds: these defaults, overridden by a run's
        `limits` (`orchestrator.limits`). Raises ValueError naming a bad value."""
        given = parse_limits(overrides)
        for name in given.get("stepS", {}):
            if name not in self.step_names:
                raise ValueError(f"limits.stepS.{name}: pipeline {self.name!r} has no such step; steps: "
                                 f"{', '.join(self.step_names)}")
        steps: dict[str, float | None] = {step.name: step.timeout_s for step in self.steps}
        steps.update(given.get("stepS", {}))
        return given.get("runS", self.timeout_s), steps

    def step(self, name: str) -> Step:
        """The step called `name`; KeyError names the steps there are."""
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(f"pipeline {self.name!r} has no step {name!r}; steps: {', '.join(self.step_names)}")

