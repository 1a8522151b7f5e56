"""What a pipeline step may do: the run context. The worker implements it; tests record it.

The pipeline knows nothing of HTTP, MongoDB or Celery: it reports through this interface and
the worker turns each call into a CloudEvent.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.artifact_keys import artifact_key
from orchestrator.errors import OrchestratorError


class Canceled(OrchestratorError):
    """Raised by `RunContext.checkpoint()` once a cancel was requested; a step lets it propagate."""


class Preempted(OrchestratorError):
    """Raised by `RunContext.checkpoint()` once the pod was told to stop (SIGTERM, a spot
    preemption): the run goes back to the queue. A step lets it propagate."""


class StepTimeout(OrchestratorError, TimeoutError):
    """Raised by `RunContext.checkpoint()` once the step or the attempt ran past its wall-clock
    limit; a step lets it propagate. A `TimeoutError`, so the retry policy retries it."""


class RunContext(ABC):
    """One run as a step sees it.

    Attributes the worker fills before the first step:
    - `run_id`, `attempt`: identity (read-only for steps).
    - `hypothesis`: {"title": str, "idea": str, "ideaJson": dict | None}.
    - `seed`: int, fixed per run so every attempt computes the same numbers.
    - `workdir`: a per-run local directory the steps write their files into.
    - `results`: outputs of earlier steps by step name (JSON-able dicts); steps completed in an
      earlier attempt are not run again and their stored outputs appear here.
    """

    run_id: str
    attempt: int
    hypothesis: dict[str, Any]
    seed: int
    workdir: Path
    results: dict[str, dict[str, Any]]

    @abstractmethod
    def progress(self, fraction: float, eta_s: float | None = None) -> None:
        """Progress of the current step, 0..1."""

    @abstractmethod
    def metric(self, name: str, value: float, step: int | None = None) -> None:
        """A numeric result of the current step; the latest value per name is the run's metric."""

    @abstractmethod
    def log(self, message: str, level: str = "info", **kv: Any) -> None:
        """A line for the run's history (level: debug, info, warning, error, critical)."""

    @abstractmethod
    def save_artifact(self, path: Path, kind: str, content_type: str | None = None) -> str:
        """Register a file under `workdir` for upload; returns the storage key it will have."""

    @abstractmethod
    def checkpoint(self) -> None:
        """A safe stopping point: raises `Canceled` if the run was canceled."""

    @abstractmethod
    def report_ideas(self, count: int, top_k: int | None = None, chosen: str | None = None,
                     mapping: str | None = None) -> None:
        """Ideation produced `count` ideas (of which `top_k` were kept); `chosen` names the one the
        run goes on with and `mapping` says in a sentence how the hypothesis became that idea."""

    @abstractmethod
    def report_paper(self, path: Path, word_count: int | None = None) -> str:
        """The paper PDF: saved as an artifact of kind "paper"; returns its storage key."""

    @abstractmethod
    def validation_started(self, model: str, rubric_version: str | None = None) -> None:
        """Auto-validation began with this reviewer model (or rule set)."""

    @abstractmethod
    def report_verdict(self, verdict: str, scores: dict[str, float] | None = None, notes: str | None = None,
                       results: dict[str, Any] | None = None) -> None:
        """Auto-validation's verdict ("pass" or "fail") with its scores and notes, and the measured
        `results` it rests on ({metric, arms: [{name, mean, stderr, n, accuracy}], test: {name,
        statistic, df, p_value}, effects}; `orchestrator.events` checks the shape)."""


@dataclass
class RecordingContext(RunContext):
    """An in-memory context that records every call: for unit tests of steps and pipelines."""

    run_id: str = "run-test"
    attempt: int = 1
    hypothesis: dict[str, Any] = field(default_factory=lambda: {"title": "t", "idea": "i", "ideaJson": None})
    seed: int = 0
    workdir: Path = field(default_factory=lambda: Path("."))
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    cancel_requested: bool = False
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def _record(self, kind: str, /, **payload: Any) -> None:
        self.calls.append((kind, payload))

    def of(self, kind: str) -> list[dict[str, Any]]:
        """Every recorded call of one kind, in order."""
        return [payload for k, payload in self.calls if k == kind]

    def progress(self, fraction: float, eta_s: float | None = None) -> None:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"progress must be within 0..1, got {fraction}")
        self._record("progress", fraction=fraction, eta_s=eta_s)

    def metric(self, name: str, value: float, step: int | None = None) -> None:
        self._record("metric", name=name, value=float(value), step=step)

    def log(self, message: str, level: str = "info", **kv: Any) -> None:
        self._record("log", message=message, level=level, kv=kv)

    def save_artifact(self, path: Path, kind: str, content_type: str | None = None) -> str:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"artifact {path} does not exist")
        key = artifact_key(self.run_id, self.attempt, path.relative_to(self.workdir))
        self._record("artifact", path=path, kind=kind, content_type=content_type, key=key)
        return key

    def checkpoint(self) -> None:
        self._record("checkpoint")
        if self.cancel_requested:
            raise Canceled("cancel requested")

    def report_ideas(self, count: int, top_k: int | None = None, chosen: str | None = None,
                     mapping: str | None = None) -> None:
        extra = {k: v for k, v in (("chosen", chosen), ("mapping", mapping)) if v is not None}
        self._record("ideas", count=count, top_k=top_k, **extra)

    def report_paper(self, path: Path, word_count: int | None = None) -> str:
        key = self.save_artifact(path, "paper", "application/pdf")
        self._record("paper", path=Path(path), word_count=word_count, key=key)
        return key

    def validation_started(self, model: str, rubric_version: str | None = None) -> None:
        self._record("validation_started", model=model, rubric_version=rubric_version)

    def report_verdict(self, verdict: str, scores: dict[str, float] | None = None, notes: str | None = None,
                       results: dict[str, Any] | None = None) -> None:
        if verdict not in ("pass", "fail"):
            raise ValueError(f"verdict must be 'pass' or 'fail', got {verdict!r}")
        self._record("verdict", verdict=verdict, scores=scores, notes=notes, **({"results": results} if results else {}))
