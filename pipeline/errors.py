"""Why a pipeline cannot go on. One root, one subclass per cause.

The worker's classifier maps these class names to non-retryable failures: a retry on another pod
would hit the same cause (a missing package, an unusable idea, a tree search that found nothing).
Keep the names stable. Each class that takes its own arguments pickles with them (`__reduce__`),
so the exception survives a trip through Celery's result serialisation.
"""

from __future__ import annotations

from collections.abc import Iterable

from orchestrator.errors import OrchestratorError


class PipelineError(OrchestratorError):
    """Root of every error the pipeline package raises on purpose."""


class UnknownPipeline(PipelineError):
    """A run names a pipeline that is not in the registry."""

    def __init__(self, name: str, known: Iterable[str]):
        self.name = name
        self.known = tuple(sorted(known))
        super().__init__(f"Unknown pipeline {name!r}. Known pipelines: {', '.join(self.known)}.")

    def __reduce__(self):
        return (type(self), (self.name, self.known))


class PipelineUnavailable(PipelineError):
    """The pipeline exists but cannot run on this machine; the message says what to install or set."""

    def __init__(self, name: str, fix: str):
        self.name = name
        self.fix = fix
        super().__init__(f"Pipeline {name!r} is not available on this worker: {fix}")

    def __reduce__(self):
        return (type(self), (self.name, self.fix))


class InvalidIdea(PipelineError):
    """The hypothesis is empty or cannot be turned into an experiment."""


class MaxIterationsReached(PipelineError):
    """A tree-search stage used all its iterations without reaching its goal (AI-Scientist-v2)."""

    def __init__(self, stage: str, iterations: int):
        self.stage = stage
        self.iterations = iterations
        super().__init__(
            f"{stage} reached its limit of {iterations} iterations without a result to build on; "
            "raise the stage's max_iters in the BFTS config or simplify the idea."
        )

    def __reduce__(self):
        return (type(self), (self.stage, self.iterations))


class AllNodesBuggy(PipelineError):
    """Every node of a tree-search stage failed to run (AI-Scientist-v2)."""

    def __init__(self, stage: str, nodes: int):
        self.stage = stage
        self.nodes = nodes
        super().__init__(
            f"All {nodes} nodes of {stage} are buggy: the tree search found no working implementation."
        )

    def __reduce__(self):
        return (type(self), (self.stage, self.nodes))


class ExperimentStateLost(PipelineError):
    """A step needs files an earlier step left on another pod, and cannot rebuild them from outputs.

    Only the AI-Scientist-v2 adapter can raise it: the tree search keeps its state on local disk.
    """
