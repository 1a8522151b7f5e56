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

from orchestrator.artifact_keys import check_key
from orchestrator.errors import OrchestratorError, StorageError
from orchestrator.safe_json import MAX_INT, storage_errors
from orchestrator.tracing import TRACEPARENT

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
    """`chosen`: the idea the run goes on with; `mapping`: one sentence saying how the pipeline
    turned the hypothesis into that idea (the demo maps it onto one of its fixed experiments),
    shown with the run so nobody reads the result as a test of the words they wrote."""

    count = _StrictInt(required=True, validate=validate.Range(min=0))
    top_k = _StrictInt(validate=validate.Range(min=0), allow_none=True)
    chosen = fields.String(validate=validate.Length(min=1, max=200), allow_none=True)
    mapping = fields.String(validate=validate.Length(min=1, max=2000), allow_none=True)


class PaperGeneratedData(_Data):
    artifact_key = _text(required=True, max=1024)
    word_count = _StrictInt(validate=validate.Range(min=0), allow_none=True)


class AutoStartedData(_Data):
    model = _text(required=True, max=200)
    rubric_version = fields.String(allow_none=True)


class _ArmResult(Schema):
    name = _text(required=True, max=200)
    mean = _Finite(required=True)
    stderr = _Finite(required=True, validate=validate.Range(min=0))
    n = _StrictInt(required=True, validate=validate.Range(min=1))
    accuracy = _Finite(allow_none=True)


class _TestResult(Schema):
    name = _text(required=True, max=200)
    statistic = _Finite(required=True)
    df = _Finite(validate=validate.Range(min=0), allow_none=True)
    p_value = _Finite(validate=validate.Range(0, 1), allow_none=True)


class _Results(Schema):
    """The measured outcome the verdict rests on: per arm the metric's mean ± standard error over
    n, the test statistic under its own name, and other effect sizes; kept apart from `scores`,
    which are a reviewer's marks."""

    metric = _text(required=True, max=200)
    arms = fields.List(fields.Nested(_ArmResult), required=True, validate=validate.Length(max=50))
    test = fields.Nested(_TestResult, allow_none=True)
    effects = fields.Dict(keys=fields.String(validate=validate.Length(min=1, max=100)), values=_Finite(),
                          allow_none=True)


class AutoCompletedData(_Data):
    verdict = fields.String(required=True, validate=validate.OneOf(VERDICTS))
    scores = fields.Dict(keys=fields.String(), values=_Finite(), allow_none=True)
    notes = fields.String(allow_none=True)
    results = fields.Nested(_Results, allow_none=True)


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
#: What a run reports all the time; a POST or a batch holding only these is not traced in the
#: run's trace (a day's run sends thousands), only the steps and outcomes are (emitter, ingest).
ROUTINE_TYPES = frozenset({"ai.run.heartbeat", "ai.run.stage_progress", "ai.run.stage_metric", "ai.run.log"})
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
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise ValidationError("Must lie within the years 1 to 9999 once converted to UTC.") from None


class Envelope(Schema):
    """CloudEvents 1.0 attributes. Unknown attributes are extensions and checked by name."""

    class Meta:
        unknown = INCLUDE

    specversion = fields.String(required=True, validate=validate.Equal(SPEC_VERSION, error="Must be '1.0'."))
    id = _text(required=True, max=200)
    source = _text(required=True, max=500)
    type = fields.String(required=True, validate=validate.OneOf(EVENT_TYPES, error="Unknown event type; known types: {choices}."))
    subject = fields.String(required=True, validate=validate.Regexp(r"^run/.+$", error="Must be 'run/{{run_id}}'."))
    time = fields.String(required=True, validate=_rfc3339)
    datacontenttype = fields.String(validate=validate.Equal(DATA_CONTENT_TYPE, error="Must be 'application/json'."))
    dataschema = fields.String()
    seq = _StrictInt(required=True, validate=validate.Range(1, MAX_INT))
    traceparent = fields.String(validate=validate.Regexp(TRACEPARENT, error="Must be a W3C traceparent."))
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


#: type -> the `data` field holding an artifact key, which must lie in the event's own run.
_ARTIFACT_KEY_FIELDS = {"ai.artifact.registered": "key", "ai.artifact.failed": "key", "ai.paper.generated": "artifact_key"}


def _artifact_key_errors(event_type: Any, data: dict[str, Any]) -> dict[str, list[str]]:
    """A key must be canonical (`artifact_keys.check_key`) and under `runs/{run_id}/`: a worker
    of one run registers nothing in another's folder, nor outside the bucket's runs."""
    name = _ARTIFACT_KEY_FIELDS.get(event_type) if isinstance(event_type, str) else None
    if name is None or not isinstance(data.get(name), str):
        return {}
    key, prefix = data[name], f"runs/{data['run_id']}/"
    try:
        check_key(key)
    except StorageError:
        return {f"data.{name}": ["Must be a relative path of plain segments (no leading '/', no '.', '..' or "
                                 "empty segments, no backslashes)."]}
    if not key.startswith(prefix) or key == prefix:
        return {f"data.{name}": [f"Must lie under {prefix!r}, the folder of the event's own run."]}
    return {}


def _attribute_errors(envelope: dict[str, Any]) -> dict[str, list[str]]:
    """Extension attributes: names as CloudEvents allows them, values of its scalar types; and
    nothing in any attribute the database cannot store (checked whole, as it is stored)."""
    errors: dict[str, list[str]] = {}
    for name, value in envelope.items():
        if name in _KNOWN_ATTRIBUTES:
            continue
        if not isinstance(name, str) or not _EXTENSION_NAME.match(name):
            errors[str(name)] = ["Extension attribute names are 1-20 lowercase letters or digits."]
        elif not isinstance(value, (str, int)):
            errors[name] = ["Extension attribute values are strings, booleans or 64-bit integers."]
    for name, value in envelope.items():
        if name not in errors and isinstance(name, str):
            errors.update(storage_errors(value, name))  # NUL, surrogates, integers past int64
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
    schema = CATALOGUE.get(envelope["type"]) if isinstance(envelope.get("type"), str) else None
    data: dict[str, Any] = {}
    if schema is not None and isinstance(envelope.get("data"), dict):
        try:
            data = schema.load(envelope["data"])
        except ValidationError as exc:
            errors.update(_flatten(exc.messages, "data"))
    errors.update({path: reasons for path, reasons in _attribute_errors({**envelope, "data": data}).items()
                   if path not in errors})
    run_id = data.get("run_id")
    if run_id and "subject" not in errors and envelope.get("subject") != f"run/{run_id}":
        errors["subject"] = [f"Must be 'run/{run_id}' to match data.run_id."]
    if not errors:
        errors.update(_artifact_key_errors(envelope["type"], data))
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
    if is_dead_letter_notice(event):
        record["deadLetter"] = True  # top level: an equality every server finds by index
    return record


def is_dead_letter_notice(event: dict[str, Any]) -> bool:
    """A pod's warning that it kept one of the run's events in its dead-letter file."""
    data = event.get("data")
    kv = data.get("kv") if isinstance(data, dict) else None
    return event.get("type") == "ai.run.log" and isinstance(kv, dict) and kv.get("deadLetter") is True


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
