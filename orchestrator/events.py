"""The event catalogue: every CloudEvent type, the schema of its `data`, the envelope, a builder.

The worker builds events with `make_event`; the ingest app validates with `validate_event`.
One module, so producer and consumer cannot drift apart.

Envelope: CloudEvents 1.0 with `subject` = `run/{run_id}`, `datacontenttype` application/json
and an integer extension attribute of our own, `seq`: per run, increasing across attempts (see
`SEQ_BLOCK`). The CloudEvents `sequence` extension is a string compared lexicographically, so it
is not used.
"""

from __future__ import annotations

import hashlib
import math
import re
from datetime import UTC, datetime
from typing import Any

from marshmallow import INCLUDE, Schema, ValidationError, fields, validate, validates_schema
from ulid import ULID

from orchestrator.errors import OrchestratorError

SPEC_VERSION = "1.0"
DATA_CONTENT_TYPE = "application/json"

#: The pipeline steps in run order: (name, description). Stage_1..Stage_4 are the experiment
#: stages of AI-Scientist-v2; the others are reported the same way so progress is visible.
STAGES: tuple[tuple[str, str], ...] = (
    ("ideation", "Ideation"),
    ("Stage_1", "Preliminary Investigation"),
    ("Stage_2", "Baseline Tuning"),
    ("Stage_3", "Research Agenda Execution"),
    ("Stage_4", "Ablation Studies"),
    ("plots", "Plot Aggregation"),
    ("paper", "Paper Writeup"),
    ("auto_validation", "Auto-validation"),
)
STAGE_NAMES: tuple[str, ...] = tuple(name for name, _ in STAGES)
STAGE_INDEX: dict[str, int] = {name: i for i, name in enumerate(STAGE_NAMES)}
EXPERIMENT_STAGES: tuple[str, ...] = ("Stage_1", "Stage_2", "Stage_3", "Stage_4")

#: Each attempt numbers its events from attempt * SEQ_BLOCK + 1, so seq increases across
#: attempts with no coordination between pods, and a late event names its attempt.
#: 10**9 events per attempt; seqs stay below 2**53 (exact in JavaScript) for 9 million attempts.
SEQ_BLOCK = 1_000_000_000


def seq_for(attempt: int, n: int) -> int:
    """The seq of the n-th event (n >= 1) of an attempt; n == 0 is kept for control-plane records."""
    return attempt * SEQ_BLOCK + n


def attempt_of(seq: int) -> int:
    """The attempt an event belongs to."""
    return seq // SEQ_BLOCK


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
VERDICTS = ("pass", "fail")

_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
)
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
_EXTENSION_NAME = re.compile(r"^[a-z0-9]{1,20}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class EventError(OrchestratorError, ValueError):
    """An event failed validation. `errors` maps field paths to reasons."""

    def __init__(self, errors: dict[str, list[str]]):
        self.errors = errors
        super().__init__("; ".join(f"{path}: {' '.join(msgs)}" for path, msgs in sorted(errors.items())))


class _Finite(fields.Float):
    """A JSON number that is finite (NaN and infinity are not JSON)."""

    def _validated(self, value: Any) -> float:
        if isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        number = super()._validated(value)
        if number is not None and not math.isfinite(number):
            raise ValidationError("Must be a finite number.")
        return number


class _StrictInt(fields.Integer):
    """An integer that refuses booleans and floats such as 1.5."""

    def __init__(self, **kwargs: Any):
        super().__init__(strict=True, **kwargs)

    def _validated(self, value: Any) -> int:
        if isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return super()._validated(value)


class _StrictBool(fields.Boolean):
    """true or false only: marshmallow's Boolean would also take "yes", 1 or "off"."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


def _rfc3339(value: str) -> None:
    parse_time(value)


def _text(**kwargs: Any) -> fields.String:
    return fields.String(validate=validate.Length(min=1, max=kwargs.pop("max", 10_000)), **kwargs)


def _stage(**kwargs: Any) -> fields.String:
    return fields.String(validate=validate.OneOf(STAGE_NAMES), **kwargs)


class _Data(Schema):
    """Fields every `data` has. Extra fields are kept (in history) and ignored by the mappers."""

    class Meta:
        unknown = INCLUDE

    run_id = _text(required=True, max=200)


class EnqueuedData(_Data):
    hypothesis_id = _text(required=True, max=200)
    priority = _StrictInt(validate=validate.Range(0, 9))


class StartedData(_Data):
    pod_id = _text(required=True, max=200)
    attempt = _StrictInt(required=True, validate=validate.Range(min=1))
    gpu = fields.String(allow_none=True)
    region = fields.String(allow_none=True)
    image = fields.String(allow_none=True)


class HeartbeatData(_Data):
    gpu_util = _Finite(validate=validate.Range(0, 100), allow_none=True)
    mem_gb = _Finite(validate=validate.Range(min=0), allow_none=True)
    temp_c = _Finite(allow_none=True)


class FailedData(_Data):
    stage = _stage(allow_none=True)
    code = _text(required=True, max=200)
    message = fields.String(required=True)
    traceback = fields.String(allow_none=True)
    retryable = _StrictBool(required=True)


class CompletedData(_Data):
    """The outcome of an attempt that ran no validation of its own: every step, auto-validation
    included, was completed by an earlier attempt, whose verdict this refers to."""

    verdict = fields.String(required=True, validate=validate.OneOf(VERDICTS))
    validation_id = _text(required=True, max=200)
    from_attempt = _StrictInt(required=True, validate=validate.Range(min=1))


class CanceledData(_Data):
    by = fields.String(allow_none=True)
    reason = fields.String(allow_none=True)


class StageStartedData(_Data):
    stage = _stage(required=True)
    desc = fields.String(allow_none=True)


class StageProgressData(_Data):
    stage = _stage(required=True)
    progress = _Finite(required=True, validate=validate.Range(0, 1))
    eta_s = _Finite(validate=validate.Range(min=0), allow_none=True)


class StageMetricData(_Data):
    stage = _stage(required=True)
    name = _text(required=True, max=200)
    value = _Finite(required=True)
    step = _StrictInt(validate=validate.Range(min=0), allow_none=True)

    @validates_schema
    def _name_is_a_field_name(self, data: dict[str, Any], **_: Any) -> None:
        if "." in data.get("name", "") or data.get("name", "").startswith("$"):
            raise ValidationError("Must not contain '.' or start with '$'.", "name")


class StageCompletedData(_Data):
    stage = _stage(required=True)
    duration_s = _Finite(validate=validate.Range(min=0), allow_none=True)
    summary = fields.Dict(allow_none=True)


class IdeationGeneratedData(_Data):
    count = _StrictInt(required=True, validate=validate.Range(min=0))
    top_k = _StrictInt(validate=validate.Range(min=0), allow_none=True)


class PaperGeneratedData(_Data):
    artifact_key = _text(required=True, max=1024)
    word_count = _StrictInt(validate=validate.Range(min=0), allow_none=True)


class AutoStartedData(_Data):
    model = _text(required=True, max=200)
    rubric_version = fields.String(allow_none=True)


class AutoCompletedData(_Data):
    verdict = fields.String(required=True, validate=validate.OneOf(VERDICTS))
    scores = fields.Dict(keys=fields.String(), values=_Finite(), allow_none=True)
    notes = fields.String(allow_none=True)


class ArtifactRegisteredData(_Data):
    key = _text(required=True, max=1024)
    bytes = _StrictInt(required=True, validate=validate.Range(min=0))
    sha256 = fields.String(required=True, validate=validate.Regexp(_SHA256, error="Must be 64 lowercase hex digits."))
    content_type = _text(required=True, max=200)
    kind = _text(required=True, max=100)


class ArtifactFailedData(_Data):
    key = _text(required=True, max=1024)
    code = _text(required=True, max=200)
    message = fields.String(required=True)


class LogData(_Data):
    level = fields.String(required=True, validate=validate.OneOf(LOG_LEVELS))
    message = fields.String(required=True)
    kv = fields.Dict(allow_none=True)


#: type -> schema of its `data`. The catalogue: the design's table, one line each.
CATALOGUE: dict[str, Schema] = {
    "ai.run.enqueued": EnqueuedData(),
    "ai.run.started": StartedData(),
    "ai.run.heartbeat": HeartbeatData(),
    "ai.run.failed": FailedData(),
    "ai.run.canceled": CanceledData(),
    "ai.run.completed": CompletedData(),
    "ai.run.stage_started": StageStartedData(),
    "ai.run.stage_progress": StageProgressData(),
    "ai.run.stage_metric": StageMetricData(),
    "ai.run.stage_completed": StageCompletedData(),
    "ai.ideation.generated": IdeationGeneratedData(),
    "ai.paper.generated": PaperGeneratedData(),
    "ai.validation.auto_started": AutoStartedData(),
    "ai.validation.auto_completed": AutoCompletedData(),
    "ai.artifact.registered": ArtifactRegisteredData(),
    "ai.artifact.failed": ArtifactFailedData(),
    "ai.run.log": LogData(),
}
EVENT_TYPES: tuple[str, ...] = tuple(CATALOGUE)
#: The events that report an attempt's successful outcome (its verdict, or an earlier one reused).
OUTCOME_TYPES: frozenset[str] = frozenset({"ai.validation.auto_completed", "ai.run.completed"})


def parse_time(value: str) -> datetime:
    """Parse an RFC 3339 timestamp with any offset into an aware UTC datetime."""
    if not isinstance(value, str) or not _RFC3339.match(value):
        raise ValidationError("Must be an RFC 3339 timestamp such as 2026-01-02T03:04:05.678Z.")
    try:
        parsed = datetime.fromisoformat(value.replace("z", "Z").replace("t", "T"))
    except ValueError as exc:
        raise ValidationError(f"Not a valid date or time: {exc}.") from None
    return parsed.astimezone(UTC)


class Envelope(Schema):
    """CloudEvents 1.0 attributes. Unknown attributes are extensions and checked by name."""

    class Meta:
        unknown = INCLUDE

    specversion = fields.String(required=True, validate=validate.Equal(SPEC_VERSION, error="Must be '1.0'."))
    id = _text(required=True, max=200)
    source = _text(required=True, max=500)
    type = fields.String(required=True, validate=validate.OneOf(EVENT_TYPES, error="Unknown event type; known types: {choices}."))
    subject = fields.String(required=True, validate=validate.Regexp(r"^run/.+$", error="Must be 'run/{run_id}'."))
    time = fields.String(required=True, validate=_rfc3339)
    datacontenttype = fields.String(validate=validate.Equal(DATA_CONTENT_TYPE, error="Must be 'application/json'."))
    dataschema = fields.String()
    seq = _StrictInt(required=True, validate=validate.Range(min=1))
    traceparent = fields.String(validate=validate.Regexp(_TRACEPARENT, error="Must be a W3C traceparent."))
    tracestate = fields.String()
    data = fields.Dict(required=True)


_ENVELOPE = Envelope()
_KNOWN_ATTRIBUTES = set(Envelope._declared_fields)


def _flatten(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    """marshmallow's nested error dict -> {"data.progress": ["Must be ..."]}."""
    if isinstance(messages, dict):
        out: dict[str, list[str]] = {}
        for key, value in messages.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            out.update(_flatten(value, path))
        return out
    if isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        return {prefix or "event": list(messages)}
    return {prefix or "event": [str(messages)]}


def storage_errors(value: Any, path: str) -> dict[str, list[str]]:
    """Reasons `value` cannot be stored as is, by path: what FerretDB v1 refuses (seen), so an
    event every supported server can store is valid and one that would fail half-way through a
    bulk write is rejected up front instead (MongoDB 5+ would take dotted keys; FerretDB answers
    "invalid key", refuses arrays directly inside arrays, and drops the connection on NaN)."""
    errors: dict[str, list[str]] = {}
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or "." in key or key.startswith("$"):
                errors.setdefault(path, []).append(f"Key {key!r} must be a string with no '.' and no leading '$'.")
                continue
            errors.update(storage_errors(item, f"{path}.{key}"))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            if isinstance(item, (list, tuple)):
                errors.setdefault(f"{path}.{index}", []).append(
                    "Arrays directly inside arrays cannot be stored; wrap the inner one in an object.")
            else:
                errors.update(storage_errors(item, f"{path}.{index}"))
    elif isinstance(value, float) and not math.isfinite(value):
        errors[path] = ["Must be a finite number."]
    elif isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
        errors[path] = ["Integers must fit in 64 bits (BSON's int64)."]
    return errors


def validate_event(event: Any) -> dict[str, Any]:
    """Check an event's envelope and its type's `data`; return it normalised.

    Raises `EventError` with every field path and reason. The returned dict keeps every
    attribute the producer sent (extensions included) and adds nothing.
    """
    if not isinstance(event, dict):
        raise EventError({"event": ["Must be a JSON object."]})
    errors: dict[str, list[str]] = {}
    try:
        envelope = _ENVELOPE.load(event)
    except ValidationError as exc:
        errors.update(_flatten(exc.messages))
        envelope = dict(event)
    for name in envelope:
        if name not in _KNOWN_ATTRIBUTES and not _EXTENSION_NAME.match(str(name)):
            errors[name] = ["Extension attribute names are 1-20 lowercase letters or digits."]
    schema = CATALOGUE.get(str(envelope.get("type")))
    data: dict[str, Any] = {}
    if schema is not None and isinstance(envelope.get("data"), dict):
        try:
            data = schema.load(envelope["data"])
        except ValidationError as exc:
            errors.update(_flatten(exc.messages, "data"))
    if not errors:
        errors.update(storage_errors(data, "data"))
    run_id = data.get("run_id")
    if run_id and "subject" not in errors and envelope.get("subject") != f"run/{run_id}":
        errors["subject"] = [f"Must be 'run/{run_id}' to match data.run_id."]
    if errors:
        raise EventError(errors)
    envelope["data"] = data
    return envelope


def event_time(event: dict[str, Any]) -> datetime:
    """A validated event's `time` as aware UTC, cut to the millisecond BSON keeps, so a document
    read back compares equal to the one computed."""
    parsed = parse_time(event["time"])
    return parsed.replace(microsecond=parsed.microsecond // 1000 * 1000)


def record_id(source: str, event_id: str) -> str:
    """The `_id` of a record an event makes (history, artifact, validation): its id and a digest
    of its source, so the same id from two sources is two records, as dedup's key (source, id)
    says, and the id stays readable and fit for a URL path segment."""
    return f"{event_id}~{hashlib.sha256(source.encode()).hexdigest()[:16]}"


def history_record(event: dict[str, Any], *, received_at: datetime) -> dict[str, Any]:
    """The `events` document of an event: the run's history. Keyed on (source, id)
    (`record_id`), so a repeat is inserted once and the same id from another source is
    its own record. Ingest stores the workers' events with it, and `orchestrator.runs` the
    control plane's decisions."""
    record: dict[str, Any] = {
        "_id": record_id(event["source"], event["id"]), "eventId": event["id"], "source": event["source"],
        "runId": event["data"]["run_id"], "type": event["type"],
        "seq": event["seq"], "time": event_time(event), "data": event["data"], "receivedAt": received_at,
    }
    for name in ("traceparent", "tracestate"):
        if name in event:
            record[name] = event[name]
    return record


def now_rfc3339() -> str:
    """The current time as RFC 3339 UTC with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def make_event(
    event_type: str,
    run_id: str,
    seq: int,
    source: str,
    data: dict[str, Any] | None = None,
    *,
    time: str | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    """Build a structured-mode CloudEvent. Cheap on purpose: the worker calls it on its hot path
    and the ingest side validates; tests validate what this builds."""
    event: dict[str, Any] = {
        "specversion": SPEC_VERSION,
        "id": event_id or str(ULID()),
        "source": source,
        "type": event_type,
        "subject": f"run/{run_id}",
        "time": time or now_rfc3339(),
        "datacontenttype": DATA_CONTENT_TYPE,
        "seq": seq,
        "data": {"run_id": run_id, **(data or {})},
    }
    return event
