"""Event -> document writes: pure functions of a validated event and a snapshot of its run.

No I/O here; `orchestrator.ingest` executes the writes. Two kinds of write keep every mapper
idempotent and the result independent of arrival order (docs/architecture.md, "Ingest rules"):

- `Create`: insert a document unless its `_id` exists. Additive facts (the event history,
  artifacts, validations) are keyed on the event id, so a late or repeated one is inserted once
  and never dropped. Base documents that later updates need (a stage) are created the same way.
- `Update`: a guarded update, one per *facet* (a group of fields one kind of event sets). Each
  facet keeps `<facet>Seq`, the seq of the event that last set it, and the filter only matches
  when that is lower than this event's seq, so a facet ends up with the value of the
  highest-seq event that touched it whatever the order, and a repeat changes nothing.
  Commutative operators (`$max`, `$min`, `$addToSet`) need no guard.

The executor runs every `Create` before any `Update`, so an update always finds the document
another event of the same batch creates. No upserts: FerretDB answers a bulk upsert that loses
an insert race with a reply pymongo cannot parse, while a plain insert's duplicate key is a
clean, per-document error.

Run status (rule 4) is the one facet that is not "highest seq wins": an event may only move the
status along the transition table, so the status of an attempt climbs the main path
(RUNNING -> AUTO_VALIDATING -> AWAITING_HUMAN) to the furthest point any of its events
reached, or ends in the attempt's outcome (FAILED, CANCELED, or QUEUED for a retry). Taking
the highest seq instead would let the `stage_completed` that follows `auto_completed` drag an
AWAITING_HUMAN run back to RUNNING when the two arrive in the other order. `statusSeq` records
the highest seq among the events that asserted the current status. The guarded update is built
by `orchestrator.runs.event_status_update`, the owner of every status write, which also keeps
a dead worker's late events off a newer attempt and never moves a run out of QUEUED or an end.
Whether a failure requeues the run is the retry policy's call (`orchestrator.retry`).

Known limit: an attempt reports one outcome (the worker's contract). If one attempt reported
two (say `auto_completed` and then a retryable `failed`), the table forbids moving between
them, so the first to arrive would stay; both stay in the history.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from orchestrator import retry
from orchestrator.events import EVENT_TYPES, STAGE_INDEX, STAGES, attempt_of, event_time, history_record, record_id
from orchestrator.pods import gpu_facet
from orchestrator.runs import event_status_update
from orchestrator.statuses import RunStatus, StageStatus

_DESCRIPTIONS: dict[str, str] = dict(STAGES)


@dataclass(frozen=True)
class Create:
    """Insert `document` unless a document with its `_id` exists."""

    collection: str
    document: dict[str, Any]


@dataclass(frozen=True)
class Update:
    """A guarded update (update_one, or update_many when `many`); never an upsert.

    `supersedes` names what a seq-guarded update sets (collection, document, facet, ...): of
    two updates with the same key, the one with the higher `seq` makes the other a no-op
    whatever the order they run in, so a batch needs to send only that one."""

    collection: str
    filter: dict[str, Any]
    update: dict[str, Any]
    many: bool = False
    supersedes: tuple[Any, ...] | None = None
    seq: int = 0


Write = Create | Update


@dataclass(frozen=True)
class _Event:
    """A validated event with what its mapper needs, computed once."""

    event: dict[str, Any]
    run: dict[str, Any]
    received_at: datetime
    bucket: str
    default_max_attempts: int
    #: Ingest may apply this outcome to a run the sweeper requeued (`runs.take_late_outcome`, which
    #: says so only of an outcome event).
    late_outcome: bool = False

    @property
    def id(self) -> str:
        return self.event["id"]

    @property
    def record_id(self) -> str:
        """The `_id` of a record this event makes (`events.record_id`)."""
        return record_id(self.event["source"], self.id)

    def record_key(self) -> dict[str, str]:
        """The keying fields of such a record: `_id`, `source` and `eventId`."""
        return {"_id": self.record_id, "source": self.event["source"], "eventId": self.id}

    @property
    def data(self) -> dict[str, Any]:
        return self.event["data"]

    @property
    def run_id(self) -> str:
        return self.data["run_id"]

    @property
    def seq(self) -> int:
        return self.event["seq"]

    @property
    def attempt(self) -> int:
        return attempt_of(self.seq)

    @property
    def time(self) -> datetime:
        return event_time(self.event)


def writes_for(
    event: dict[str, Any],
    run: dict[str, Any],
    *,
    received_at: datetime,
    bucket: str,
    default_max_attempts: int,
    late_outcome: bool = False,
) -> list[Write]:
    """Every write one accepted event makes: its history record, then its type's effects.

    `run` is the run document as loaded for the batch; it is read only for facts events do not
    change (maxAttempts, hypothesisId) and for the auto-validation model (see `_validation_model`).
    `late_outcome`: ingest took the decision to apply this outcome to a requeued run.
    """
    ev = _Event(event, run, received_at, bucket, default_max_attempts, late_outcome)
    return [_history(ev), *_BY_TYPE[event["type"]](ev)]


def touch_run(run_id: str, max_seq: int, now: datetime) -> Update:
    """Once per run per batch: the highest seq seen and the write time."""
    return Update("runs", {"_id": run_id}, {"$max": {"lastEventSeq": max_seq}, "$set": {"updatedAt": now}})


# --- building blocks --------------------------------------------------------------------------


def _newer(seq_field: str, seq: int) -> dict[str, Any]:
    """Filter: the facet was last set by a lower seq, or never."""
    return {"$or": [{seq_field: {"$lt": seq}}, {seq_field: {"$exists": False}}]}


def _facet(collection: str, doc_id: str, seq_field: str, seq: int, values: dict[str, Any]) -> Update:
    return Update(collection, {"_id": doc_id, **_newer(seq_field, seq)}, {"$set": {**values, seq_field: seq}},
                  supersedes=(collection, doc_id, seq_field), seq=seq)


def _run_facet(ev: _Event, facet: str, values: dict[str, Any]) -> Update:
    return _facet("runs", ev.run_id, f"{facet}Seq", ev.seq, values)


def _status(ev: _Event, target: RunStatus, also: dict[str, Any] | None = None) -> Update:
    """The run status this event asserts, as `orchestrator.runs` builds it (rule 4)."""
    query, update = event_status_update(ev.run_id, ev.attempt, ev.seq, target, also, late_outcome=ev.late_outcome)
    # Same target and attempt, higher seq: its filter matches wherever this one would, and once
    # applied it leaves this one nothing to do, so the higher one supersedes.
    return Update("runs", query, update, supersedes=("runs", ev.run_id, "status", target.value, ev.attempt), seq=ev.seq)


def _stage_id(run_id: str, stage: str) -> str:
    return f"{run_id}:{stage}"


def _stage_base(ev: _Event, stage: str) -> Create:
    return Create("stages", {
        "_id": _stage_id(ev.run_id, stage), "runId": ev.run_id, "index": STAGE_INDEX[stage], "name": stage,
        "description": _DESCRIPTIONS[stage], "status": StageStatus.PENDING.value, "progress": 0.0,
    })


def _stage_facet(ev: _Event, stage: str, seq_field: str, values: dict[str, Any]) -> Update:
    return _facet("stages", _stage_id(ev.run_id, stage), seq_field, ev.seq, values)


# --- one mapper per type ----------------------------------------------------------------------


def _history(ev: _Event) -> Create:
    """The event itself, in the run's history: additive, keyed on the event id."""
    return Create("events", history_record(ev.event, received_at=ev.received_at))


def _history_only(ev: _Event) -> list[Write]:
    return []


def _started(ev: _Event) -> list[Write]:
    d = ev.data
    pod = {"id": d["pod_id"], "gpu": d.get("gpu"), "region": d.get("region"), "image": d.get("image")}
    # STARTING: a pod holds the attempt and prepares it; its first step's events make it RUNNING.
    return [
        _status(ev, RunStatus.STARTING),
        # claimedBy: the pod holding the attempt, for lists and stats (the worker writes no run).
        _run_facet(ev, "pod", {"pod": pod, "claimedBy": d["pod_id"]}),
        Update("runs", {"_id": ev.run_id}, {"$min": {"startedAt": ev.time}}),
    ]


def _heartbeat(ev: _Event) -> list[Write]:
    d = ev.data
    writes: list[Write] = [Update("runs", {"_id": ev.run_id}, {"$max": {"lastHeartbeat": ev.time}})]
    if any(d.get(k) is not None for k in ("gpu_util", "mem_gb", "temp_c")):
        writes.append(_run_facet(ev, "gpu", {"gpu": gpu_facet(d)}))
    return writes


def _stage_state(ev: _Event, status: StageStatus, progress: float) -> list[Write]:
    """What every stage_started/progress/completed sets: the stage's status and progress, the
    run's current stage, and the run at least RUNNING."""
    stage = ev.data["stage"]
    return [
        _stage_base(ev, stage),
        _stage_facet(ev, stage, "statusSeq", {"status": status.value}),
        _stage_facet(ev, stage, "progressSeq", {"progress": progress}),
        _run_facet(ev, "currentStage", {"currentStage": {"name": stage, "progress": progress}}),
        _status(ev, RunStatus.RUNNING),
    ]


def _stage_started(ev: _Event) -> list[Write]:
    started = _stage_facet(ev, ev.data["stage"], "startedSeq", {"startedAt": ev.time})
    return [*_stage_state(ev, StageStatus.RUNNING, 0.0), started]


def _stage_progress(ev: _Event) -> list[Write]:
    return _stage_state(ev, StageStatus.RUNNING, float(ev.data["progress"]))


def _stage_completed(ev: _Event) -> list[Write]:
    d = ev.data
    # `summary` is the step's checkpoint: a later attempt resumes from it, so it is stored as sent.
    done = {"completedAt": ev.time, "durationS": d.get("duration_s"), "summary": d.get("summary")}
    return [*_stage_state(ev, StageStatus.COMPLETED, 1.0), _stage_facet(ev, d["stage"], "completedSeq", done)]


def _stage_metric(ev: _Event) -> list[Write]:
    d = ev.data
    name, value = d["name"], d["value"]
    # Per-name guards: the latest value of each metric by seq; every value stays in the history.
    return [
        _stage_base(ev, d["stage"]),
        _stage_facet(ev, d["stage"], f"metricSeqs.{name}", {f"metrics.{name}": value}),
        _facet("runs", ev.run_id, f"metricSeqs.{name}", ev.seq, {f"metrics.{name}": value}),
    ]


def _failed(ev: _Event) -> list[Write]:
    d = ev.data
    stage = d.get("stage")
    error = {
        "code": d["code"], "message": d["message"], "traceback": d.get("traceback"), "retryable": d["retryable"],
        "stage": stage, "attempt": ev.attempt, "eventId": ev.id,
    }
    # Built from event fields only, so a re-applied event adds the same element ($addToSet).
    record = {
        "code": d["code"], "message": d["message"], "retryable": d["retryable"], "stage": stage,
        "attempt": ev.attempt, "at": ev.time, "eventId": ev.id,
    }
    max_attempts = int(ev.run.get("maxAttempts") or ev.default_max_attempts)
    decision = retry.after_failure(ev.attempt, max_attempts, retryable=d["retryable"], at=ev.time)
    if decision.requeue:
        status = _status(ev, RunStatus.QUEUED, {"notBefore": decision.not_before})
    else:
        status = _status(ev, RunStatus.FAILED, {"finishedAt": ev.time})
    writes: list[Write] = [
        _run_facet(ev, "error", {"error": error}),
        Update("runs", {"_id": ev.run_id}, {"$addToSet": {"attempts": record}}),
        status,
    ]
    if stage:
        writes += [_stage_base(ev, stage), _stage_facet(ev, stage, "statusSeq", {"status": StageStatus.FAILED.value})]
    return writes


def _canceled(ev: _Event) -> list[Write]:
    d = ev.data
    requested: dict[str, Any] = ev.run["cancel"] if isinstance(ev.run.get("cancel"), dict) else {}
    cancel = {
        "by": d.get("by") or requested.get("by"), "reason": d.get("reason") or requested.get("reason"),
        "at": ev.time, "eventId": ev.id,
    }
    return [_status(ev, RunStatus.CANCELED, {"finishedAt": ev.time}), _run_facet(ev, "cancel", {"cancel": cancel})]


def _ideation(ev: _Event) -> list[Write]:
    d = ev.data
    # The chosen idea and how the hypothesis was mapped onto it, when the pipeline says.
    chosen = {field: d[key] for key, field in (("chosen", "chosenIdea"), ("mapping", "ideaMapping")) if d.get(key)}
    writes: list[Write] = [_run_facet(ev, "ideation", {"ideasCount": d["count"], **chosen})]
    hypothesis_id = ev.run.get("hypothesisId")
    if hypothesis_id:
        # The hypothesis exists before its run; a missing one is not recreated as a stub.
        writes.append(_facet("hypotheses", hypothesis_id, "ideationSeq", ev.seq,
                             {"ideasCount": d["count"], "topK": d.get("top_k"), **chosen}))
    return writes


def _paper(ev: _Event) -> list[Write]:
    d = ev.data
    return [_run_facet(ev, "paper", {"paper": {"artifactKey": d["artifact_key"], "wordCount": d.get("word_count")}})]


def _auto_started(ev: _Event) -> list[Write]:
    d = ev.data
    model = d["model"]
    validation = {"model": model, "rubricVersion": d.get("rubric_version"), "startedAt": ev.time}
    # Give the model to this attempt's later verdicts that were recorded before this arrived.
    patch = Update(
        "validations",
        {"runId": ev.run_id, "kind": "auto", "attempt": ev.attempt, "seq": {"$gt": ev.seq}, **_newer("modelSeq", ev.seq)},
        {"$set": {"model": model, "modelSeq": ev.seq}},
        many=True,
    )
    return [_status(ev, RunStatus.AUTO_VALIDATING), _run_facet(ev, "validation", {"validation": validation}), patch]


def _validation_model(ev: _Event) -> Update | None:
    """The verdict's model: its own `model` field if the producer sent one, else the model of this
    attempt's `auto_started` as recorded on the run. If that has not arrived yet, its own mapper
    patches the verdict later (`_auto_started`); `modelSeq` makes both paths agree."""
    own = ev.data.get("model")
    if isinstance(own, str) and own:
        return _facet("validations", ev.record_id, "modelSeq", ev.seq, {"model": own})
    started, started_seq = ev.run.get("validation"), ev.run.get("validationSeq")
    if (
        isinstance(started, dict) and isinstance(started.get("model"), str) and isinstance(started_seq, int)
        and attempt_of(started_seq) == ev.attempt and started_seq < ev.seq
    ):
        return _facet("validations", ev.record_id, "modelSeq", started_seq, {"model": started["model"]})
    return None


def _auto_completed(ev: _Event) -> list[Write]:
    d = ev.data
    record = {
        **ev.record_key(), "runId": ev.run_id, "kind": "auto", "verdict": d["verdict"], "scores": d.get("scores"),
        "results": d.get("results"), "notes": d.get("notes"), "model": None, "attempt": ev.attempt, "seq": ev.seq,
        "createdAt": ev.time,
    }
    writes: list[Write] = [
        Create("validations", record),
        _status(ev, RunStatus.AWAITING_HUMAN),
        _run_facet(ev, "verdict", {"verdict": d["verdict"]}),
    ]
    model = _validation_model(ev)
    return writes + ([model] if model else [])


def _completed(ev: _Event) -> list[Write]:
    """An attempt that reused an earlier attempt's verdict: the run's status and verdict as that
    verdict set them; no second validation record."""
    return [_status(ev, RunStatus.AWAITING_HUMAN), _run_facet(ev, "verdict", {"verdict": ev.data["verdict"]})]


def _artifact_registered(ev: _Event) -> list[Write]:
    d = ev.data
    return [Create("artifacts", {
        **ev.record_key(), "runId": ev.run_id, "key": d["key"], "bucket": ev.bucket, "status": "registered",
        "bytes": d["bytes"], "sha256": d["sha256"], "contentType": d["content_type"], "kind": d["kind"],
        "createdAt": ev.time,
    })]


def _artifact_failed(ev: _Event) -> list[Write]:
    d = ev.data
    return [Create("artifacts", {
        **ev.record_key(), "runId": ev.run_id, "key": d["key"], "bucket": ev.bucket, "status": "failed",
        "code": d["code"], "message": d["message"], "createdAt": ev.time,
    })]


_BY_TYPE: dict[str, Callable[[_Event], list[Write]]] = {
    "ai.run.enqueued": _history_only,
    "ai.run.started": _started,
    "ai.run.heartbeat": _heartbeat,
    "ai.run.failed": _failed,
    "ai.run.canceled": _canceled,
    "ai.run.completed": _completed,
    "ai.run.stage_started": _stage_started,
    "ai.run.stage_progress": _stage_progress,
    "ai.run.stage_metric": _stage_metric,
    "ai.run.stage_completed": _stage_completed,
    "ai.ideation.generated": _ideation,
    "ai.paper.generated": _paper,
    "ai.validation.auto_started": _auto_started,
    "ai.validation.auto_completed": _auto_completed,
    "ai.artifact.registered": _artifact_registered,
    "ai.artifact.failed": _artifact_failed,
    "ai.run.log": _history_only,
}
if set(_BY_TYPE) != set(EVENT_TYPES):  # pragma: no cover - a catalogue change must come with its mapper
    raise RuntimeError(f"event types without a mapper: {sorted(set(EVENT_TYPES) - set(_BY_TYPE))}")
