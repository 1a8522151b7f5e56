"""The worker's artifact uploads (`WorkerContext.save_artifact`): a file outside the run's work
dir, or a link pointing out of it, is reported as `ai.artifact.failed` with a reason, not a raw
ValueError, and the run goes on as for any other artifact failure (the paper's fails its step)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator.events import make_event, validate_event
from orchestrator.storage import LocalStorage, StorageError
from tasks.pod.context import WorkerContext


class Recorder:
    """The context's `emit`: every event checked against the catalogue, as ingest would."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event_type: str, **data: Any) -> None:
        self.events.append(validate_event(make_event(event_type, "run-1", len(self.events) + 1, "worker://t", data)))

    def of(self, event_type: str) -> list[dict[str, Any]]:
        return [e["data"] for e in self.events if e["type"] == event_type]


@pytest.fixture
def setup(tmp_path: Path) -> tuple[WorkerContext, Recorder, Path]:
    work, secret = tmp_path / "work", tmp_path / "pod-secret.txt"
    work.mkdir()
    secret.write_text("MONGODB_URL=mongodb://u:pw@h/db")
    emit = Recorder()
    ctx = WorkerContext(run_id="run-1", attempt=1, hypothesis={}, seed=0, workdir=work, results={}, emit=emit,
                        storage=LocalStorage(tmp_path / "art"), checkpoint=lambda: None)
    return ctx, emit, secret


def test_a_link_out_of_the_work_dir_is_a_failed_artifact_and_the_run_goes_on(setup, tmp_path: Path) -> None:
    ctx, emit, secret = setup
    (ctx.workdir / "figures").mkdir()
    (ctx.workdir / "figures" / "loss.png").symlink_to(secret)
    assert ctx.save_artifact(ctx.workdir / "figures" / "loss.png", kind="figure") == "runs/run-1/1/figures/loss.png"
    [failed] = emit.of("ai.artifact.failed")
    assert failed["key"] == "runs/run-1/1/figures/loss.png" and failed["code"] == "BadArtifactPath"
    assert "is outside the run's work dir" in failed["message"] and str(secret) in failed["message"]
    assert emit.of("ai.artifact.registered") == [] and not (tmp_path / "art").exists(), "nothing uploaded"


def test_a_linked_folder_and_an_absolute_path_outside_are_refused_the_same_way(setup, tmp_path: Path) -> None:
    ctx, emit, secret = setup
    (ctx.workdir / "out").symlink_to(tmp_path, target_is_directory=True)
    ctx.save_artifact(ctx.workdir / "out" / secret.name, kind="data")
    ctx.save_artifact(secret, kind="data")
    ctx.save_artifact(ctx.workdir / ".." / secret.name, kind="data")
    assert [f["key"] for f in emit.of("ai.artifact.failed")] == [
        "runs/run-1/1/out/pod-secret.txt", "runs/run-1/1/pod-secret.txt", "runs/run-1/1/pod-secret.txt"]
    assert {f["code"] for f in emit.of("ai.artifact.failed")} == {"BadArtifactPath"}


def test_a_link_inside_the_work_dir_still_uploads(setup) -> None:
    ctx, emit, _ = setup
    (ctx.workdir / "real.txt").write_text("data")
    (ctx.workdir / "alias.txt").symlink_to(ctx.workdir / "real.txt")
    assert ctx.save_artifact(ctx.workdir / "alias.txt", kind="data") == "runs/run-1/1/real.txt"
    assert [r["key"] for r in emit.of("ai.artifact.registered")] == ["runs/run-1/1/real.txt"]


def test_a_paper_outside_the_work_dir_fails_its_step_after_the_report(setup) -> None:
    ctx, emit, secret = setup
    with pytest.raises(StorageError, match="outside the run's work dir"):
        ctx.report_paper(secret)
    assert [f["code"] for f in emit.of("ai.artifact.failed")] == ["BadArtifactPath"]
