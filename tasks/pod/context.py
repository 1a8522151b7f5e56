"""The worker's `RunContext`: each call a pipeline step makes becomes a CloudEvent or an upload."""

from __future__ import annotations

import logging
import mimetypes
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.artifact_keys import artifact_key
from orchestrator.storage import Storage, StorageError
from pipeline.context import RunContext

log = logging.getLogger(__name__)

#: A step may report progress thousands of times; at most one event per this many seconds
#: per stage is sent (plus the first and 1.0), which keeps the live view within a second.
PROGRESS_EVERY_S = 0.5


class WorkerContext(RunContext):
    def __init__(
        self,
        *,
        run_id: str,
        attempt: int,
        hypothesis: dict[str, Any],
        seed: int,
        workdir: Path,
        results: dict[str, dict[str, Any]],
        emit: Callable[..., None],
        storage: Storage,
        checkpoint: Callable[[], None],
    ):
        self.run_id = run_id
        self.attempt = attempt
        self.hypothesis = hypothesis
        self.seed = seed
        self.workdir = workdir
        self.results = results
        self.stage: str | None = None
        self._emit = emit
        self._storage = storage
        self._checkpoint = checkpoint
        self._last_progress = 0.0

    def enter_stage(self, name: str) -> None:
        self.stage = name
        self._last_progress = 0.0

    def progress(self, fraction: float, eta_s: float | None = None) -> None:
        fraction = min(max(float(fraction), 0.0), 1.0)
        now = time.monotonic()
        if fraction < 1.0 and now - self._last_progress < PROGRESS_EVERY_S:
            return
        self._last_progress = now
        data: dict[str, Any] = {"stage": self.stage, "progress": fraction}
        if eta_s is not None:
            data["eta_s"] = max(float(eta_s), 0.0)
        self._emit("ai.run.stage_progress", **data)

    def metric(self, name: str, value: float, step: int | None = None) -> None:
        data: dict[str, Any] = {"stage": self.stage, "name": name, "value": float(value)}
        if step is not None:
            data["step"] = int(step)
        self._emit("ai.run.stage_metric", **data)

    def log(self, message: str, level: str = "info", **kv: Any) -> None:
        log.log(logging.getLevelNamesMapping().get(level.upper(), logging.INFO), "[%s] %s", self.run_id, message)
        self._emit("ai.run.log", level=level, message=message, kv=kv or None)

    def key_for(self, path: Path) -> str:
        """The storage key of a file under the workdir: runs/{run_id}/{attempt}/{relative path}.
        Raises StorageError for a path outside the workdir once links are followed: a pipeline
        (LLM-written code in AI-Scientist-v2) must not upload the pod's other files."""
        resolved = Path(path).resolve()
        try:
            relative = resolved.relative_to(self.workdir.resolve())
        except ValueError:
            raise StorageError(f"{str(path)!r} is outside the run's work dir {str(self.workdir)!r} (it is, or links "
                               f"to, {str(resolved)!r}); save only files under the work dir") from None
        return artifact_key(self.run_id, self.attempt, relative)

    def save_artifact(self, path: Path, kind: str, content_type: str | None = None) -> str:
        """Upload now and register the exact key uploaded. A refused or failed upload is
        reported as `ai.artifact.failed` and the run goes on, except for the paper (see
        `report_paper`)."""
        try:
            key = self.key_for(path)
        except StorageError as exc:
            return self._artifact_failed(self._reported_key(path), "BadArtifactPath", exc, kind)
        content_type = content_type or mimetypes.guess_type(str(path))[0] or "application/octet-stream"
        try:
            stored = self._storage.upload(Path(path), key, content_type)
        except StorageError as exc:
            return self._artifact_failed(key, "UploadFailed", exc, kind)
        self._emit(
            "ai.artifact.registered", key=stored.key, bytes=stored.bytes, sha256=stored.sha256,
            content_type=stored.content_type, kind=kind,
        )
        return stored.key

    def _artifact_failed(self, key: str, code: str, exc: StorageError, kind: str) -> str:
        """Report the artifact as failed; the paper's failure also fails the step (raised)."""
        self._emit("ai.artifact.failed", key=key, code=code, message=str(exc))
        if kind == "paper":
            raise exc
        return key

    def _reported_key(self, path: Path) -> str:
        """The key a refused file is reported under: where it sits in the work dir as written
        (a link's own name, links not followed), else its file name."""
        written = Path(os.path.normpath(Path(path).absolute()))
        work = Path(os.path.normpath(self.workdir.absolute()))
        relative = written.relative_to(work) if written.is_relative_to(work) and written != work else written.name
        try:
            return artifact_key(self.run_id, self.attempt, relative or "unnamed")
        except StorageError:
            return artifact_key(self.run_id, self.attempt, "unnamed")

    def checkpoint(self) -> None:
        self._checkpoint()

    def report_ideas(self, count: int, top_k: int | None = None, chosen: str | None = None,
                     mapping: str | None = None) -> None:
        extra = {k: v for k, v in (("chosen", chosen), ("mapping", mapping)) if v is not None}
        self._emit("ai.ideation.generated", count=int(count), top_k=top_k, **extra)

    def report_paper(self, path: Path, word_count: int | None = None) -> str:
        key = self.save_artifact(path, "paper", "application/pdf")
        self._emit("ai.paper.generated", artifact_key=key, word_count=word_count)
        return key

    def validation_started(self, model: str, rubric_version: str | None = None) -> None:
        self._emit("ai.validation.auto_started", model=model, rubric_version=rubric_version)

    def report_verdict(self, verdict: str, scores: dict[str, float] | None = None, notes: str | None = None,
                       results: dict[str, Any] | None = None) -> None:
        extra = {"results": results} if results is not None else {}
        self._emit("ai.validation.auto_completed", verdict=verdict, scores=scores, notes=notes, **extra)
