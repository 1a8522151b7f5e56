"""Pipelines for the process tests, loaded by workers through PIPELINE_MODULES.

`sleepy`: four experiment stages that take `stage_s` seconds each (from the hypothesis's
ideaJson), with a checkpoint every 50 ms, a metric per stage, an artifact when Stage_2 ends,
then a passing auto-validation. Attempt 1's Stage_2 then blocks for `block_s` seconds in one
call when that is set; `activity` names a file that records every moment of step work;
`log_lines` are logged at the end of Stage_1; the auto-validation takes `validate_s`. `noop`: only an auto-validation, for dispatch throughput.
"""

from __future__ import annotations

import time
from typing import Any

from pipeline.base import Pipeline, Step
from pipeline.context import RunContext


def _options(ctx: RunContext) -> dict[str, Any]:
    return ctx.hypothesis.get("ideaJson") or {}


def _stage_seconds(ctx: RunContext) -> float:
    return float(_options(ctx).get("stage_s", 1.0))


def _trace(ctx: RunContext, stage: str, what: str) -> None:
    """With `activity` (a file path) in the ideaJson, one line per moment a step is at work:
    wall time, attempt, stage, what; the fencing tests read when each attempt ran."""
    path = _options(ctx).get("activity")
    if path:
        with open(path, "a") as f:
            f.write(f"{time.time():.3f} {ctx.attempt} {stage} {what}\n")


def _sleepy_stage(name: str):
    def run(ctx: RunContext) -> dict[str, Any]:
        total = _stage_seconds(ctx)
        began = time.monotonic()
        while (elapsed := time.monotonic() - began) < total:
            ctx.checkpoint()
            _trace(ctx, name, "tick")
            ctx.progress(min(elapsed / total, 1.0))
            time.sleep(0.05)
        if name == "Stage_2" and ctx.attempt == 1 and _options(ctx).get("block_s"):
            _trace(ctx, name, "blocking")
            time.sleep(float(_options(ctx)["block_s"]))  # one C call: no checkpoint, no interrupt
            _trace(ctx, name, "unblocked")
        if name == "Stage_1":
            for message in _options(ctx).get("log_lines", ()):  # for the poison-event test's proxy
                ctx.log(message)
        ctx.metric(f"{name}_score", float(ctx.attempt))
        if name == "Stage_2":
            path = ctx.workdir / "stage2.txt"
            path.write_text(f"{ctx.run_id} stage 2\n")
            ctx.save_artifact(path, kind="data", content_type="text/plain")
        return {"stage": name, "attempt": ctx.attempt}
    return run


def _validate(ctx: RunContext) -> dict[str, Any]:
    ctx.validation_started("test-reviewer", "1")
    began = time.monotonic()
    while time.monotonic() - began < float(_options(ctx).get("validate_s", 0)):
        ctx.checkpoint()
        time.sleep(0.05)
    ctx.report_verdict("pass", {"overall": 1.0}, "all stages ran")
    return {"verdict": "pass"}


PIPELINES = {
    "sleepy": lambda: Pipeline("sleepy", tuple(Step(n, _sleepy_stage(n)) for n in ("Stage_1", "Stage_2", "Stage_3", "Stage_4"))
                               + (Step("auto_validation", _validate),)),
    "noop": lambda: Pipeline("noop", (Step("auto_validation", _validate),)),
}
