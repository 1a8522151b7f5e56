"""The console's pages that show: runs, one run, a hypothesis, operations; and the JSON beside
the runs list and the run page that `console.js` polls to keep them live.

A live endpoint answers 204 while the run has not changed (one read of the run), so a page left
open costs the database one small query per second.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from flask import Response, abort, jsonify, render_template, request
from werkzeug.wrappers import Response as WerkzeugResponse

from ingest_app import downloads
from ingest_app.console import views
from ingest_app.console.blueprint import bp
from ingest_app.state import app_state
from orchestrator import errors, event_history, operations, queries, run_counts, run_list, safe_json
from orchestrator.events import EVENT_TYPES
from orchestrator.statuses import RunStatus

#: Runs per page of the list.
PAGE_SIZE = 25
#: Events the run page's log shows at first; live updates append to it.
LOG_SIZE = 200
#: Events a level filter looks through (a level is worked out per event, `views.event_level`).
LOG_SCAN = 2000
#: New events one live update carries at most; the next poll brings the rest.
LIVE_EVENTS = 500
LEVELS = ("debug", "info", "warning", "error")
#: The parts of the run page a live update replaces, each rendered by its own template.
RUN_PARTS = ("header", "steps", "charts", "failure", "review", "artifacts", "attempts", "history")


def _db() -> Any:
    return app_state().db


def _choice(name: str, allowed: Any) -> str | None:
    """A query parameter that must be one of `allowed` (else 400), or None when absent."""
    value = request.args.get(name) or None
    if value is not None and value not in allowed:
        abort(400, f"{name} must be one of: {', '.join(sorted(allowed))}")
    return value


# --- runs -------------------------------------------------------------------------------------


def _run_filter() -> tuple[run_list.RunFilter, dict[str, str]]:
    status = request.args.get("status") or None
    pipeline = (request.args.get("pipeline") or "").strip() or None
    title = (request.args.get("q") or "").strip() or None
    try:
        wanted = run_list.RunFilter((status,) if status else (), pipeline, title)
    except run_list.BadFilter as exc:
        abort(400, f"{exc.field}: {exc.reason}")
    params = {k: v for k, v in {"status": status, "pipeline": pipeline, "q": title}.items() if v}
    return wanted, params


def _runs_context() -> dict[str, Any]:
    wanted, params = _run_filter()
    cursor = request.args.get("cursor") or None
    try:
        found, next_cursor = run_list.page(_db(), wanted, cursor, PAGE_SIZE)
    except run_list.BadFilter:
        abort(400, "That page link is not valid any more; start again from the newest runs.")
    return {"runs": found, "counts": run_counts.by_status(_db())[0], "params": params, "cursor": cursor,
            "next_cursor": next_cursor, "statuses": [s.value for s in RunStatus], "now": datetime.now(UTC)}


@bp.get("/")
def runs() -> str:
    """Every run, newest first: counts per status, filters, one page."""
    return render_template("console/runs.html", **_runs_context())


@bp.get("/runs.json")
def runs_live() -> Response:
    """The counts and the rows of the runs page, for its live refresh."""
    context = _runs_context()
    return jsonify({"parts": {
        "counts": render_template("console/_counts.html", **context),
        "rows": render_template("console/_rows.html", **context),
    }})


# --- one run ----------------------------------------------------------------------------------


def _version(run: dict[str, Any]) -> str:
    """Changes whenever anything the run page shows may have changed."""
    key = [str(run.get(k)) for k in ("updatedAt", "lastEventSeq", "statusChanges", "status", "cancelRequested")]
    return hashlib.sha256("|".join(key).encode()).hexdigest()[:16]


def _log_filter() -> tuple[str | None, str | None]:
    return _choice("type", EVENT_TYPES), _choice("level", LEVELS)


def _run_context(run_id: str) -> dict[str, Any]:
    detail = queries.run_detail(_db(), run_id, events=0, trace_url_template=app_state().settings.trace_url_template)
    return {
        "run": detail, "auto_validation": detail["autoValidation"], "steps": views.timeline(detail["stages"]),
        "charts": views.charts(queries.metric_series(_db(), run_id)), "version": _version(detail),
        "live": views.is_live(detail.get("status")), "reviewable": detail.get("status") == RunStatus.AWAITING_HUMAN.value,
        "now": datetime.now(UTC),
    }


@bp.get("/runs/<run_id>")
def run_page(run_id: str) -> str:
    """One run: header, steps, charts, plots and paper, failure, review, attempts, history, log."""
    context = _run_context(run_id)
    event_type, level = _log_filter()
    # The log shows events up to a seq read first, and the live updates continue after it: an
    # event stored meanwhile is in one or the other, never lost and never twice.
    after_seq = _max_seq(_db(), run_id)
    scanned = queries.event_log(_db(), run_id, type_=event_type, limit=LOG_SCAN if level else LOG_SIZE, up_to_seq=after_seq)
    events = [e for e in scanned if _matches(e, None, level)][-LOG_SIZE:]
    return render_template("console/run.html", **context, events=events, after_seq=after_seq,
                           event_types=sorted(EVENT_TYPES), levels=LEVELS, log_type=event_type, log_level=level,
                           parts=RUN_PARTS)


def _max_seq(db: Any, run_id: str) -> int:
    """The highest seq stored for the run: the live log continues after it, whatever the filter."""
    top = next(iter(event_history.find(db, {"runId": run_id}, [("seq", -1)], 1, {"seq": 1})), None)
    return int(top["seq"]) if top and isinstance(top.get("seq"), int) else -1


@bp.get("/runs/<run_id>/live.json")
def run_live(run_id: str) -> Response:
    """What changed on the run page since version `v`: 204 when nothing; else the re-rendered
    parts and the log's new rows after `after_seq` (matching the page's log filter)."""
    run = _db().runs.find_one({"_id": run_id}, {k: 1 for k in ("updatedAt", "lastEventSeq", "statusChanges", "status",
                                                                  "cancelRequested")})
    if run is None:
        raise errors.NotFound(f"no run with id {run_id!r}")
    after_seq = _after_seq()
    if request.args.get("v") == _version(run):
        return Response(status=204)
    context = _run_context(run_id)
    event_type, level = _log_filter()
    arrived = queries.events_after(_db(), run_id, after_seq, LIVE_EVENTS)
    fresh = [e for e in arrived if _matches(e, event_type, level)]
    new_seq = max([after_seq, *(e["seq"] for e in arrived if isinstance(e.get("seq"), int))])
    parts = {name: render_template(f"console/_run_{name}.html", **context) for name in RUN_PARTS}
    rows = render_template("console/_events.html", events=fresh) if fresh else ""
    return jsonify({"v": context["version"], "live": context["live"], "status": context["run"].get("status"),
                    "parts": parts, "events": rows, "afterSeq": new_seq})


def _after_seq() -> int:
    raw = request.args.get("after_seq", "-1")
    try:
        value = int(raw)
    except ValueError:
        abort(400, "after_seq must be a whole number")
    if not -1 <= value <= safe_json.MAX_INT:
        abort(400, "after_seq is out of range")
    return value


def _matches(event: dict[str, Any], event_type: str | None, level: str | None) -> bool:
    return (event_type is None or event.get("type") == event_type) and (level is None or views.event_level(event) == level)


@bp.get("/runs/<run_id>/artifacts/<path:artifact_id>")
def artifact(run_id: str, artifact_id: str) -> WerkzeugResponse:
    """An artifact for the browser: images and the paper inline, anything else as a download."""
    inline = request.args.get("download") is None
    return downloads.send_artifact(_db(), run_id, artifact_id, inline=inline)


# --- hypotheses -------------------------------------------------------------------------------


@bp.get("/hypotheses/<hypothesis_id>")
def hypothesis(hypothesis_id: str) -> str:
    """A hypothesis: its idea, the ideation results (`ideaJson`) and its runs."""
    found = _db().hypotheses.find_one({"_id": hypothesis_id})
    if found is None:
        raise errors.NotFound(f"no hypothesis with id {hypothesis_id!r}")
    its_runs = list(_db().runs.find({"hypothesisId": hypothesis_id}).sort(run_list.SORT).limit(100))
    for run in its_runs:
        run["title"] = found.get("title")
    idea_json = found.get("ideaJson")
    pretty = json.dumps(idea_json, indent=2, sort_keys=True, default=str) if idea_json is not None else None
    ideation = _ideation_results(its_runs)
    return render_template("console/hypothesis.html", hypothesis=found, runs=its_runs, idea_json=pretty,
                           ideation=ideation, now=datetime.now(UTC))


def _ideation_results(its_runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """What the latest run's ideation step generated (its `ai.ideation.generated` event)."""
    for run in its_runs:
        query = {"runId": run["_id"], "type": "ai.ideation.generated"}
        event = next(iter(event_history.find(_db(), query, [("seq", -1)], 1)), None)
        if event is not None:
            return {"runId": run["_id"], "data": json.dumps(event.get("data"), indent=2, sort_keys=True, default=str)}
    return None


# --- operations -------------------------------------------------------------------------------


def _ops_context() -> dict[str, Any]:
    data = operations.overview(_db())
    return {"o": data, "bars": views.minute_bars(data["ingest"]["perMinute"]), "now": datetime.now(UTC)}


@bp.get("/ops")
def ops() -> str:
    """Queue depth, pods busy and idle, ingest rates, dead letters: the operator's dashboard."""
    return render_template("console/ops.html", **_ops_context())


@bp.get("/ops.json")
def ops_live() -> Response:
    """The dashboard's body, for its live refresh."""
    return jsonify({"parts": {"ops": render_template("console/_ops.html", **_ops_context())}})
