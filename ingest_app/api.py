"""The read API for the frontend and operators: runs, one run in full, its event history, new
hypotheses, cancel, retry, review and artifact downloads. Every error body is problem+json.

Auth (`ingest_app.auth`): reads take a reader or operator token, the routes that change state
(POST hypotheses, cancel, retry, review) an operator token; a worker's token is refused here. A change
is recorded as made `by` the credential's name ("api" for an unnamed one).

Pagination: `GET /api/runs` is newest first; `nextCursor` is opaque to clients and pages by
"strictly after this run" (`orchestrator.run_list`), so a run created while a client pages
never shifts later pages into duplicates or gaps.

MongoDB unreachable: 503 with Retry-After (the app's one handler), so clients back off instead
of showing an error page.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, jsonify, request, url_for
from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema
from pymongo.database import Database
from werkzeug.wrappers import Response as WerkzeugResponse

from ingest_app import auth, downloads, parsing
from ingest_app.problem import problem
from ingest_app.state import app_state
from orchestrator import errors, queries, run_list, runs, safe_json
from orchestrator.errors import OrchestratorError
from orchestrator.hypotheses import HypothesisRequest
from orchestrator.serialize import jsonable
from orchestrator.storage import StorageError

log = logging.getLogger(__name__)

bp = Blueprint("api", __name__, url_prefix="/api")

#: Runs per page of GET /api/runs: the default suits one screen; the maximum bounds one query.
DEFAULT_RUNS_LIMIT = 50
MAX_RUNS_LIMIT = 200
#: Events per poll of the history: a live tail's poll rarely needs more than the default;
#: the maximum lets a client catch up a long run in a few requests.
DEFAULT_EVENTS_LIMIT = 200
MAX_EVENTS_LIMIT = 1000
_RUN_SORT = [("createdAt", -1), ("_id", -1)]


class _BadParameter(OrchestratorError):
    """A query parameter or body that cannot be used; becomes a 400 (or `status`) naming `field`."""

    def __init__(self, field: str, reason: str, status: int = 400):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
        self.status = status


# --- plumbing ---------------------------------------------------------------------------------


def _db() -> Database:
    return app_state().db


@bp.errorhandler(errors.NotFound)
def _not_found(exc: errors.NotFound) -> Response:
    return problem(404, "Not Found", str(exc))


@bp.errorhandler(errors.TransitionError)
def _conflict(exc: errors.TransitionError) -> Response:
    return problem(409, "Conflict", str(exc))


@bp.errorhandler(_BadParameter)
def _bad_parameter(exc: _BadParameter) -> Response:
    title = "Unsupported Media Type" if exc.status == 415 else "Bad Request"
    return problem(exc.status, title, str(exc), errors={exc.field: [exc.reason]})


@bp.errorhandler(ValidationError)
def _invalid_body(exc: ValidationError) -> Response:
    messages = exc.messages if isinstance(exc.messages, dict) else {"body": exc.messages}
    detail = "; ".join(f"{name}: {' '.join(map(str, reasons))}" for name, reasons in sorted(messages.items()))
    return problem(422, "Unprocessable Content", detail, errors=messages)


@bp.errorhandler(parsing.RequestRejected)
def _rejected(exc: parsing.RequestRejected) -> Response:
    return problem(exc.status, exc.title, exc.detail, **exc.extra)


@bp.errorhandler(StorageError)
def _storage_failed(exc: StorageError) -> Response:
    log.warning("artifact storage failed for %s: %s", request.path, exc)
    return problem(502, "Bad Gateway", f"artifact storage failed: {exc}")


# --- parameters -------------------------------------------------------------------------------


def _int_arg(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """A whole-number query parameter within bounds; a 400 naming it otherwise."""
    raw = request.args.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _BadParameter(name, f"{raw!r} is not a whole number") from None
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        bounds = f"{minimum if minimum is not None else '-inf'}..{maximum if maximum is not None else 'inf'}"
        raise _BadParameter(name, f"{value} is outside {bounds}")
    return value


def _json_body(*, required: bool) -> dict[str, Any]:
    """The request's JSON object. An empty body is `{}` when the body is optional. Read through
    `parsing.read_body`: the size limit applies, and a signed request's body, already read to
    check its signature, is read from the same cache."""
    raw = parsing.read_body(app_state().settings)
    if not raw.strip():
        if required:
            raise _BadParameter("body", "send a JSON object with Content-Type: application/json")
        return {}
    if not request.is_json:
        raise _BadParameter("body", f"Content-Type {request.mimetype or '(none)'!r} is not application/json", 415)
    try:
        body = safe_json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _BadParameter("body", f"not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise _BadParameter("body", "must be a JSON object")
    unstorable = safe_json.storage_errors(body, "")
    if unstorable:
        raise ValidationError(unstorable)
    return body


# --- routes: reads ----------------------------------------------------------------------------


@bp.get("/runs")
def list_runs() -> Response:
    """Newest runs first, one page (`orchestrator.run_list`); `nextCursor` is null on the last.
    Filters: `status` (one or a comma list), `pipeline`, `title` (words of the hypothesis title)."""
    statuses = tuple(part.strip() for part in (request.args.get("status") or "").split(",") if part.strip())
    limit = _int_arg("limit", DEFAULT_RUNS_LIMIT, minimum=1, maximum=MAX_RUNS_LIMIT)
    try:
        wanted = run_list.RunFilter(statuses, request.args.get("pipeline") or None, request.args.get("title") or None)
        found, next_cursor = run_list.page(_db(), wanted, request.args.get("cursor") or None, limit)
    except run_list.BadFilter as exc:
        raise _BadParameter(exc.field, exc.reason) from None
    return jsonify({"runs": jsonable(found), "nextCursor": next_cursor})


def _artifact_json(artifact: dict[str, Any], run_id: str) -> dict[str, Any]:
    body = jsonable(artifact)
    body["downloadUrl"] = url_for("api.download_artifact", run_id=run_id, artifact_id=str(artifact["_id"]))
    return body


@bp.get("/runs/<run_id>")
def get_run(run_id: str) -> Response:
    """The run with everything a run page shows (`queries.run_detail`, which the CLI shows too:
    hypothesis, stages, artifacts, latest validation, recentEvents), in one response instead of
    five requests; each artifact gets its `downloadUrl`."""
    detail = queries.run_detail(_db(), run_id, trace_url_template=app_state().settings.trace_url_template)
    body = jsonable(detail)
    body.setdefault("metrics", {})
    body["artifacts"] = [_artifact_json(a, run_id) for a in detail["artifacts"]]
    return jsonify(body)


def _whole_seq_groups(found: list[dict[str, Any]], limit: int) -> tuple[list[dict[str, Any]], bool]:
    """The first `limit` events, and whether more follow. When the page would end inside a group
    of events sharing one seq (control-plane records of one attempt do), the group is left for the
    next poll, since `after_seq` resumes strictly after a seq and would skip its rest."""
    if len(found) <= limit:
        return found, False
    page = found[:limit]
    last_seq = page[-1].get("seq")
    if found[limit].get("seq") == last_seq:
        whole = [event for event in page if event.get("seq") != last_seq]
        page = whole or page
    return page, True


@bp.get("/runs/<run_id>/events")
def run_events(run_id: str) -> Response:
    """History after `after_seq` (default: from the start), for a live tail. The run's status is
    read before the events, so a tail that sees a final status and no `hasMore` has every event
    stored by then."""
    after_seq = _int_arg("after_seq", -1, minimum=-1, maximum=safe_json.MAX_INT)
    limit = _int_arg("limit", DEFAULT_EVENTS_LIMIT, minimum=1, maximum=MAX_EVENTS_LIMIT)
    db = _db()
    run = db.runs.find_one({"_id": run_id}, {"status": 1})
    if run is None:
        raise errors.NotFound(f"no run with id {run_id!r}")
    found = queries.events_after(db, run_id, after_seq, limit + 1)
    page, more = _whole_seq_groups(found, limit)
    last_seq = page[-1].get("seq", after_seq) if page else after_seq
    return jsonify({
        "runId": run_id, "status": run.get("status"), "events": jsonable(page),
        "lastSeq": last_seq, "hasMore": more,
    })


# --- routes: writes ---------------------------------------------------------------------------


class ActionRequest(Schema):
    """Optional body of POST /api/runs/<id>/cancel and retry: who asked and why, kept on the run.
    `by` counts only for an unnamed credential (a frontend relaying its user); a named one is
    recorded by its name, so a credential cannot speak for another."""

    class Meta:
        unknown = RAISE

    by = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=200))
    reason = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=2000))


class ReviewRequest(Schema):
    """Body of POST /api/runs/<id>/review. A rejection needs notes: whoever reads the run later
    (and the researcher who queued it) must learn why."""

    class Meta:
        unknown = RAISE

    decision = fields.String(required=True, validate=validate.OneOf([runs.ACCEPT, runs.REJECT]))
    notes = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=10_000))
    by = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=200))

    @validates_schema
    def _reject_has_notes(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("decision") == runs.REJECT and not (data.get("notes") or "").strip():
            raise ValidationError("Say why the result is rejected.", "notes")


_HYPOTHESIS = HypothesisRequest()
_ACTION = ActionRequest()
_REVIEW = ReviewRequest()


def _by(body: dict[str, Any]) -> str:
    return auth.credential_name() or body["by"] or auth.DEFAULT_ACTOR


@bp.post("/hypotheses")
def create_hypothesis() -> tuple[Response, int, dict[str, str]]:
    """A hypothesis and its QUEUED run; the dispatcher picks the run up from there."""
    body = _HYPOTHESIS.load(_json_body(required=True))
    max_attempts = body["maxAttempts"] or app_state().settings.max_attempts
    hypothesis_id, run_id = runs.create_hypothesis_and_run(
        _db(), body["title"], body["idea"], idea_json=body["ideaJson"], priority=body["priority"],
        queue=body["queue"], pipeline=body["pipeline"], max_attempts=max_attempts, limits=body["limits"],
    )
    location = url_for("api.get_run", run_id=run_id)
    return jsonify({"hypothesisId": hypothesis_id, "runId": run_id}), 201, {"Location": location}


@bp.post("/runs/<run_id>/cancel")
def cancel_run(run_id: str) -> Response:
    """Cancel now (QUEUED, SCHEDULED) or ask the worker to stop (active); 409 once ended."""
    body = _ACTION.load(_json_body(required=False))
    return jsonify(jsonable(runs.cancel_run(_db(), run_id, by=_by(body), reason=body["reason"])))


@bp.post("/runs/<run_id>/retry")
def retry_run(run_id: str) -> Response:
    """FAILED or CANCELED back to QUEUED; 409 for any other status. Optional `{by, reason}`."""
    body = _ACTION.load(_json_body(required=False))
    return jsonify(jsonable(runs.retry_run(_db(), run_id, by=_by(body), reason=body["reason"])))


@bp.post("/runs/<run_id>/review")
def review_run(run_id: str) -> Response:
    """A person's decision on a run in AWAITING_HUMAN: `{"decision": "accept" | "reject",
    "notes": ...}` -> HUMAN_VALIDATED or HUMAN_REJECTED; 409 for any other status."""
    body = _REVIEW.load(_json_body(required=True))
    notes = (body["notes"] or "").strip() or None
    return jsonify(jsonable(runs.review_run(_db(), run_id, body["decision"], by=_by(body), notes=notes)))


# --- routes: downloads ------------------------------------------------------------------------


@bp.get("/runs/<run_id>/artifacts/<path:artifact_id>/download")
def download_artifact(run_id: str, artifact_id: str) -> WerkzeugResponse:
    """302 to a presigned URL, so the bytes never pass through this app; the local store of the
    embedded demo has no URL a browser can follow, so its files are served here."""
    return downloads.send_artifact(_db(), run_id, artifact_id, inline=False)
