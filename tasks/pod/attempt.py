"""One attempt of one run on this pod: claim it, run the pipeline, report through events.

Every outcome is reported once: stage events from the stage scope, one `ai.run.failed` for a
failure (marked on the exception so outer handlers do not report it again), one
`ai.run.canceled` for a cancel, nothing at all after the lease was lost.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from opentelemetry.trace import Status, StatusCode
from pymongo import DESCENDING
from pymongo.database import Database
from pymongo.errors import PyMongoError

import pipeline
from orchestrator import claims, tracing
from orchestrator.db import is_unavailable
from orchestrator.events import STAGE_NAMES, STAGES
from orchestrator.retry import Backoff, classify
from orchestrator.settings import DEFAULT_PIPELINE
from orchestrator.statuses import RunStatus, StageStatus
from pipeline.context import Canceled, Preempted, StepTimeout
from tasks.pod.context import WorkerContext
from tasks.pod.gpu import gpu_name
from tasks.pod.heartbeat import Heartbeat, LeaseLost
from tasks.pod.metrics import observe_step
from tasks.pod.processes import end_this_process
from tasks.pod.runtime import Runtime, stop_reason

log = logging.getLogger(__name__)

_DESCRIPTIONS = dict(STAGES)
#: The step whose verdict is the run's outcome.
VERDICT_STEP = STAGE_NAMES[-1]
#: How long (in leases) a finished attempt keeps its claim while ingest catches up on its events.
DELIVERY_WAIT_LEASES = 3
_REPORTED = "_orchestrator_reported"


def run_seed(run: dict[str, Any]) -> int:
    """The run's seed: its `seed` field, else derived from its id, so every attempt agrees."""
    if isinstance(run.get("seed"), int):
        return run["seed"]
    return int(hashlib.sha256(run["_id"].encode()).hexdigest()[:8], 16)


def completed_outputs(db: Database, run_id: str) -> dict[str, dict[str, Any]]:
    """Outputs of the steps an earlier attempt completed: they are reused, not run again. A
    completed validation step counts only with its verdict on record (else it runs again)."""
    done = db.stages.find({"runId": run_id, "status": StageStatus.COMPLETED.value})
    outputs = {stage["name"]: stage.get("summary") or {} for stage in done}
    if VERDICT_STEP in outputs and earlier_verdict(db, run_id) is None:
        del outputs[VERDICT_STEP]
    return outputs


def earlier_verdict(db: Database, run_id: str) -> dict[str, Any] | None:
    """The run's latest auto-validation record (an earlier attempt's verdict), if any."""
    return db.validations.find_one({"runId": run_id, "kind": "auto"}, sort=[("seq", DESCENDING)])


class Attempt:
    """One attempt of one run on this pod."""

    def __init__(self, rt: Runtime, run_id: str, attempt: int):
        self.rt = rt
        self.db = rt.db
        self.run_id = run_id
        self.attempt = attempt
        self.pod_id = rt.settings.pod_id
        self.events = rt.emitter.stream(run_id, attempt)
        self.heartbeat: Heartbeat | None = None
        self.failure_reported = False
        self.leased_at: float | None = None
        #: The step running now, for a failure reported from the heartbeat thread.
        self.stage: str | None = None
        #: The pipeline running, for the step-duration metric.
        self.pipeline_name = ""

    # -- reporting -----------------------------------------------------------------------
    def emit(self, event_type: str, **data: Any) -> None:
        """Send an event, unless the lease is gone: then another pod owns the run."""
        if self.heartbeat is not None and self.heartbeat.lease_lost.is_set():
            return
        self.events.emit(event_type, **{k: v for k, v in data.items() if v is not None})

    def report_failure(self, exc: BaseException, stage: str | None) -> None:
        """Emit the one `ai.run.failed` of this attempt."""
        if self.failure_reported or getattr(exc, _REPORTED, False):
            return
        self.failure_reported = True
        try:
            setattr(exc, _REPORTED, True)
        except AttributeError:
            pass
        failure = classify(exc)
        log.error("run %s attempt %s failed in %s: %s (%s, retryable=%s)",
                  self.run_id, self.attempt, stage or "setup", failure.message, failure.code, failure.retryable)
        self.emit("ai.run.failed", stage=stage, code=failure.code, message=failure.message,
                  traceback=failure.traceback, retryable=failure.retryable)

    # -- the run -------------------------------------------------------------------------
    def execute(self) -> str:
        """The attempt, as a span of the run's trace (under the Celery task's span when the
        message carried it) whose children are the steps; each event carries the span it was
        emitted in."""
        run = self.db.runs.find_one({"_id": self.run_id})
        if run is None:
            log.warning("run %s does not exist; dropping its task", self.run_id)
            return "missing"
        with tracing.run_span("attempt", self.run_id, run.get(tracing.FIELD), attempt=self.attempt,
                              attributes={"pod.id": self.pod_id}) as span:
            outcome = self._execute(run)
            span.set_attribute("run.outcome", outcome)
            if outcome.startswith(("failed", "timeout", "lease-lost")):
                span.set_status(Status(StatusCode.ERROR, outcome))
            return outcome

    def _execute(self, run: dict[str, Any]) -> str:
        if run.get("status") != RunStatus.SCHEDULED.value or run.get("attempt") != self.attempt:
            log.info("run %s is %s at attempt %s, not SCHEDULED at %s: stale delivery, nothing to do",
                     self.run_id, run.get("status"), run.get("attempt"), self.attempt)
            return "stale"
        self.leased_at = time.monotonic()
        if claims.claim_attempt(self.db, self.run_id, self.attempt, self.pod_id, self.rt.settings.lease_s) is None:
            log.info("run %s attempt %s is already claimed: duplicate delivery, nothing to do", self.run_id, self.attempt)
            return "duplicate"
        # The claim is the worker's only write about the run: ingest moves it on from the events,
        # and the sweeper if the pod goes (docs/security.md: a pod's database role cannot write
        # runs). Read again after claiming: a run canceled or requeued meanwhile is not started.
        # A cancel filed before this claim was visible (`runs.cancel_run`) is seen here too.
        started = self.db.runs.find_one({"_id": self.run_id})
        if (started is None or started.get("status") != RunStatus.SCHEDULED.value or started.get("attempt") != self.attempt
                or claims.cancel_requested(self.db, self.run_id, self.attempt) is not None):
            claims.release(self.db, self.run_id, self.attempt, self.pod_id, claims.NOT_STARTABLE)
            log.info("run %s was canceled or moved before it could start", self.run_id)
            return "stale"
        return self._run_claimed(started)

    def _run_claimed(self, run: dict[str, Any]) -> str:
        # The attempt's span, for events emitted outside any span (the heartbeat's); set only
        # now: a duplicate delivery shares this stream and must not overwrite it.
        self.events.traceparent = tracing.current_traceparent()
        outcome = "failed"
        settings = self.rt.settings
        self.heartbeat = Heartbeat(
            self.db, self.run_id, self.attempt, self.pod_id,
            interval_s=settings.heartbeat_interval_s, lease_s=settings.lease_s, grace_s=settings.cancel_grace_s,
            emit=self.emit, target_thread=threading.get_ident(), leased_at=self.leased_at,
            on_fence_deadline=self._end_process, on_stuck=self._stuck,
        )
        self.heartbeat.start()
        self.rt.set_current(self)
        if stop_reason() is not None:
            self.heartbeat.preempt(str(stop_reason()))
        try:
            self.emit("ai.run.started", pod_id=self.pod_id, attempt=self.attempt, gpu=gpu_name(),
                      region=self.rt.region, image=self.rt.image)
            outcome = self._run_steps(run, self._pipeline(run), self.heartbeat)
        except Canceled as exc:
            self.emit("ai.run.canceled", by=(self.heartbeat.cancel_info or {}).get("by"), reason=str(exc))
            outcome = "canceled"
        except LeaseLost:
            log.error("run %s attempt %s: lease lost, stopped without reporting", self.run_id, self.attempt)
            outcome = "lease-lost"
        except Preempted as exc:
            self._note_stopping(str(exc))
            outcome = claims.PREEMPTED
        except BaseException as exc:  # noqa: BLE001 - every failure is reported, then re-raised if fatal
            self.report_failure(exc, None)
            if not isinstance(exc, Exception):
                raise
        finally:
            self.rt.set_current(None)
            delivered = self._deliver_events()
            self.heartbeat.stop()
            self._clean_up(outcome if delivered else f"{outcome}; events undelivered")
        return outcome

    def _deliver_events(self) -> bool:
        """Close the stream and wait, still holding the lease, until ingest has the attempt's
        events (its outcome among them), for up to `DELIVERY_WAIT_LEASES` leases: released
        earlier, the claim would say "done" while the outcome sits in the spool (ingest down),
        and the sweeper would presume the outcome lost. Fenced or swept meanwhile: stop waiting."""
        assert self.heartbeat is not None
        try:
            self.events.close()
        except Exception:  # noqa: BLE001 - the spool keeps the events; a restart replays them
            log.exception("run %s attempt %s: closing the event stream failed; its spool is replayed at the next start",
                          self.run_id, self.attempt)
        if self.heartbeat.lease_lost.is_set():
            return False
        # A stopping pod has a bounded time to exit: it waits a grace period, the spool keeps the rest.
        wait = (self.rt.settings.cancel_grace_s if self.heartbeat.preempted.is_set()
                else DELIVERY_WAIT_LEASES * self.rt.settings.lease_s)
        try:
            delivered = self.rt.emitter.flush(timeout=wait)
        except LeaseLost:
            return False
        except Exception:  # noqa: BLE001 - undelivered events stay in the spool and are sent later
            log.exception("run %s attempt %s: flushing events failed; they stay in the spool", self.run_id, self.attempt)
            return False
        if not delivered:
            log.error("run %s attempt %s: events still undelivered after %.0f s; releasing the claim, the spool "
                      "keeps sending them", self.run_id, self.attempt, wait)
        return bool(delivered)

    def _clean_up(self, outcome: str) -> None:
        """Release the claim, retried through a database outage until the lease would end (after
        that the sweeper decides); a failure is logged once, saying what was kept."""
        assert self.heartbeat is not None
        if not self.heartbeat.lease_lost.is_set():
            self._release(outcome, self.heartbeat.fence.deadline)

    def _release(self, outcome: str, deadline: float) -> None:
        backoff, failures = Backoff(base_s=0.2, cap_s=2.0), 0
        while True:
            try:
                claims.release(self.db, self.run_id, self.attempt, self.pod_id, outcome)
                return
            except PyMongoError as exc:
                failures += 1
                wait = backoff.delay(failures)
                if not is_unavailable(exc) or time.monotonic() + wait >= deadline:
                    log.error("run %s attempt %s: claim not released (%s after %d tries); the sweeper ends it when "
                              "its lease expires, and the attempt's events are kept", self.run_id, self.attempt, exc,
                              failures)
                    return
                time.sleep(wait)

    def preempt(self, reason: str) -> None:
        """The pod must stop (`runtime.request_stop`): hand the run back at the next checkpoint."""
        if self.heartbeat is not None:
            self.heartbeat.preempt(reason)

    def _note_stopping(self, reason: str) -> None:
        """Say why the attempt stops early. The claim, released as `claims.PREEMPTED` once the
        events had their grace period, tells the sweeper to requeue the run without counting it."""
        log.warning("run %s attempt %s stops: %s; its claim is released as preempted", self.run_id, self.attempt, reason)
        self.emit("ai.run.log", level="warning",
                  message=f"pod {self.pod_id} is stopping ({reason})" + (f" during {self.stage}" if self.stage else "")
                          + "; the claim is released as preempted and the sweeper requeues the run")

    def _end_process(self) -> None:
        (self.rt.on_fence_deadline or end_this_process)()

    def _stuck(self, info: str) -> None:
        """In the heartbeat thread: the step must stop (past its limit, or the pod is stopping)
        and no interrupt reaches it (a call into C, a request that never returns). Report the
        timeout or hand the run back, release the claim, and end the process with the step:
        nothing else stops it."""
        assert self.heartbeat is not None
        if self.heartbeat.preempted.is_set():
            self._note_stopping(info)
        else:
            self.report_failure(StepTimeout(f"{info}; the step did not stop when interrupted, so its process was "
                                            "ended"), self.stage)
        try:
            self.events.close()
            self.rt.emitter.flush(timeout=min(10.0, self.rt.settings.lease_s / 2))
        except Exception:  # noqa: BLE001 - the spool keeps the events for the next process
            log.exception("run %s attempt %s: flushing before the process ends failed", self.run_id, self.attempt)
        try:
            claims.release(self.db, self.run_id, self.attempt, self.pod_id,
                           claims.PREEMPTED if self.heartbeat.preempted.is_set() else "timeout")
        except PyMongoError as exc:
            log.error("run %s attempt %s: claim not released (%s); the sweeper ends it", self.run_id, self.attempt, exc)
        self._end_process()

    def _pipeline(self, run: dict[str, Any]) -> pipeline.Pipeline:
        return pipeline.get_pipeline(run.get("pipeline") or DEFAULT_PIPELINE)

    def _run_steps(self, run: dict[str, Any], chosen: pipeline.Pipeline, heartbeat: Heartbeat) -> str:
        self.pipeline_name = chosen.name
        hypothesis = self.db.hypotheses.find_one({"_id": run.get("hypothesisId")}) or {}
        workdir = (Path(self.rt.settings.work_dir) / self.run_id / str(self.attempt)).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        ctx = WorkerContext(
            run_id=self.run_id, attempt=self.attempt,
            hypothesis={"title": hypothesis.get("title", ""), "idea": hypothesis.get("idea", ""),
                        "ideaJson": hypothesis.get("ideaJson")},
            seed=run_seed(run), workdir=workdir, results=completed_outputs(self.db, self.run_id),
            emit=self.emit, storage=self.rt.storage, checkpoint=heartbeat.check,
        )
        run_limit, step_limits = self._limits(chosen, run)
        began = time.monotonic()
        try:
            for step in chosen.steps:
                if step.name in ctx.results:
                    self.emit("ai.run.log", level="info",
                              message=f"{step.name} completed in an earlier attempt; reusing its outputs")
                    if step.name == VERDICT_STEP:
                        self._report_earlier_verdict()
                    continue
                heartbeat.check()
                heartbeat.limit(*_deadline(began, run_limit, time.monotonic(), step_limits.get(step.name), step.name))
                with self.stage_scope(ctx, step.name) as scope:
                    scope["outputs"] = step.run(ctx) or {}
                ctx.results[step.name] = scope["outputs"]
        finally:
            heartbeat.steps_over()
            self._close(chosen, ctx)
        return "completed"

    def _limits(self, chosen: pipeline.Pipeline, run: dict[str, Any]) -> tuple[float | None, dict[str, float | None]]:
        """The pipeline's wall-clock limits with the run's overrides; bad overrides are reported
        in the run's history and the pipeline's defaults apply."""
        try:
            return chosen.limits(run.get("limits"))
        except ValueError as exc:
            self.emit("ai.run.log", level="warning", message=f"the run's limits were ignored: {exc}")
            return chosen.limits(None)

    def _report_earlier_verdict(self) -> None:
        """Every step, validation included, was done before: this attempt's outcome is the
        earlier verdict, reported as such (no second validation)."""
        verdict = earlier_verdict(self.db, self.run_id)
        assert verdict is not None  # `completed_outputs` keeps the step only with its verdict
        self.emit("ai.run.completed", verdict=verdict["verdict"], validation_id=str(verdict["_id"]),
                  from_attempt=int(verdict.get("attempt") or 1))

    def _close(self, chosen: pipeline.Pipeline, ctx: WorkerContext) -> None:
        """The pipeline's own clean-up; a failure in it is logged, never the attempt's outcome."""
        if chosen.close is None:
            return
        try:
            chosen.close(ctx)
        except Exception:  # noqa: BLE001 - the outcome is already decided; the log says what was left behind
            log.exception("run %s attempt %s: pipeline %s did not close cleanly", self.run_id, self.attempt, chosen.name)

    @contextmanager
    def stage_scope(self, ctx: WorkerContext, name: str) -> Iterator[dict[str, Any]]:
        """stage_started on entry, stage_completed (with the outputs as the checkpoint summary)
        on success, exactly one ai.run.failed naming the stage on an error."""
        ctx.enter_stage(name)
        self.stage = name
        began = time.monotonic()
        with tracing.span(f"step {name}", attributes={"run.step": name}):
            self.emit("ai.run.stage_started", stage=name, desc=_DESCRIPTIONS.get(name))
            scope: dict[str, Any] = {}
            try:
                yield scope
            except (Canceled, LeaseLost, Preempted):
                observe_step(name, "stopped", time.monotonic() - began, pipeline=self.pipeline_name)
                raise
            except BaseException as exc:
                observe_step(name, "failed", time.monotonic() - began, pipeline=self.pipeline_name)
                self.report_failure(exc, name)
                raise
            observe_step(name, "completed", time.monotonic() - began, pipeline=self.pipeline_name)
            self.emit("ai.run.stage_completed", stage=name, duration_s=round(time.monotonic() - began, 3),
                      summary=scope.get("outputs") or {})


def _deadline(began: float, run_s: float | None, now: float, step_s: float | None, step: str) -> tuple[float | None, str]:
    """The earlier of the attempt's and the step's limit, and what it limits."""
    run_at = began + run_s if run_s is not None else None
    step_at = now + step_s if step_s is not None else None
    if run_at is None and step_at is None:
        return None, ""
    if step_at is None or (run_at is not None and run_at <= step_at):
        return run_at, f"the attempt (limit {run_s:g} s, in step {step})"
    return step_at, f"step {step} (limit {step_s:g} s)"
