"""What a new hypothesis and its run may be, checked in one place for every way one is queued:
`POST /api/hypotheses`, the web console's form and `manage-runs enqueue`.

`HypothesisRequest` is the API's body; the console and the CLI build the same body from their
fields and load it through the same schema, so a blank title or an unstorable `ideaJson` is
refused alike everywhere, with every bad field reported at once. Which pipelines exist is not
decided here: the registry lives in `pipeline`, above this layer, and the web processes do not
load it (`settings.BUILTIN_PIPELINES`); the CLI, which may, checks the name against it too.
"""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate

from orchestrator import safe_json
from orchestrator.limits import parse_limits
from orchestrator.settings import DEFAULT_PIPELINE, DEFAULT_PRIORITY, DEFAULT_QUEUE


def _not_blank(value: str) -> None:
    if not value.strip():
        raise ValidationError("Must not be blank.")


#: Queue and pipeline names end up in Celery routing keys and log lines: keep them plain.
NAME = validate.Regexp(r"^[A-Za-z0-9_.:-]{1,100}$", error="Must be 1-100 letters, digits, '_', '.', ':' or '-'.")


def _limits(value: dict[str, Any]) -> None:
    try:
        parse_limits(value)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


def _free_form(value: dict[str, Any]) -> None:
    errors = safe_json.free_form_errors(value, "")
    if errors:
        raise ValidationError([f"{path}: {' '.join(reasons)}" if path else " ".join(reasons)
                               for path, reasons in sorted(errors.items())])


class HypothesisRequest(Schema):
    """Body of POST /api/hypotheses. Unknown fields are refused so a typo ("maxAttempt") is an
    error, not a silently ignored option."""

    class Meta:
        unknown = RAISE

    title = fields.String(required=True, validate=[validate.Length(max=500), _not_blank])
    idea = fields.String(required=True, validate=[validate.Length(max=200_000), _not_blank])
    #: Free-form: anything the database stores as given, within `safe_json.MAX_FREE_FORM_BYTES`.
    ideaJson = fields.Dict(load_default=None, allow_none=True, validate=_free_form)
    priority = fields.Integer(strict=True, load_default=DEFAULT_PRIORITY, validate=validate.Range(0, 9))
    pipeline = fields.String(load_default=DEFAULT_PIPELINE, validate=NAME)
    queue = fields.String(load_default=DEFAULT_QUEUE, validate=NAME)
    maxAttempts = fields.Integer(strict=True, load_default=None, validate=validate.Range(min=1, max=100))
    #: Wall-clock limits ({"runS": s, "stepS": {step: s}}), checked by `orchestrator.limits`.
    limits = fields.Dict(load_default=None, allow_none=True, validate=_limits)


def idea_json_from_text(raw: str | bytes) -> dict[str, Any]:
    """The JSON object a person pasted or a file holds, for `ideaJson`; ValueError saying why not
    (not JSON, where; or not an object). Parsed as the API parses its bodies (`safe_json`)."""
    try:
        parsed = safe_json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"Not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise ValueError("Must be a JSON object ({...}).")
    return parsed
