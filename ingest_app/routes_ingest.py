"""POST /api/ingest/event and POST /api/ingest/events: HTTP in, `ingest.ingest` in the middle.

Single event: 201 accepted, 200 duplicate, 422 invalid (problem+json with `errors`, field path
-> reasons). Batch: always 200 once the request itself is acceptable, with one result per event
and the counts; the valid events are applied even when others are invalid. Whole-request
failures (auth, media type, size, unparseable JSON) are problem+json and apply nothing.
MongoDB unreachable: 503 with Retry-After (the app's one handler); the client resends and dedup
sorts out the rest.

Each answered request adds its counts to `orchestrator.ingest_stats` (one write, after the
results are known, never failing the request): accepted, duplicates and invalid events, or one
rejection for a request refused as a whole (400, 413, 415, 422).
"""

from __future__ import annotations

import logging
from collections import Counter

from flask import Blueprint, Response, g, jsonify

from ingest_app import parsing
from ingest_app.parsing import RequestRejected
from ingest_app.problem import problem
from ingest_app.state import AppState, app_state
from orchestrator import ingest_stats
from orchestrator.ingest import ACCEPTED, DUPLICATE, INVALID, Item, Outcome, fast_path_pays, ingest, updates_per_command

log = logging.getLogger(__name__)

bp = Blueprint("ingest", __name__, url_prefix="/api/ingest")


@bp.post("/event")
def post_event() -> Response:
    state = app_state()
    item = parsing.parse_single(state.settings)
    [outcome] = _ingest(state, [item])
    if outcome.status == INVALID:
        return problem(422, "Invalid event", outcome.error, id=outcome.id, errors=outcome.errors)
    response = jsonify({"id": outcome.id, "status": outcome.status})
    response.status_code = 201 if outcome.status == ACCEPTED else 200
    return response


@bp.post("/events")
def post_events() -> Response:
    state = app_state()
    items = parsing.parse_batch(state.settings)
    outcomes = _ingest(state, items)
    counts = Counter(o.status for o in outcomes)
    return jsonify({
        "results": [o.as_result() for o in outcomes],
        ACCEPTED: counts[ACCEPTED], DUPLICATE: counts[DUPLICATE], INVALID: counts[INVALID],
    })


def _ingest(state: AppState, items: list[Item]) -> list[Outcome]:
    features = state.prepare()
    outcomes = ingest(
        state.db, items, bucket=state.settings.minio_bucket, default_max_attempts=state.settings.max_attempts,
        seen_lookup=fast_path_pays(features), per_command=updates_per_command(features),
    )
    state.metrics.batch_size.observe(len(items))
    counts = Counter(o.status for o in outcomes)
    g.ingest_counts = (counts[ACCEPTED], counts[DUPLICATE], counts[INVALID])
    for outcome in outcomes:
        state.metrics.events.labels(outcome.metric_type, outcome.status).inc()
        if outcome.status == INVALID:
            log.info("event %s (index %s) rejected: %s", outcome.id, outcome.index, outcome.error)
    return outcomes


#: Statuses of a request refused as a whole, counted as one rejection.
REJECTED_STATUSES = frozenset({400, 413, 415, 422})


@bp.after_request
def _count(response: Response) -> Response:
    """The request's counts into `ingest_stats`: its events' results once ingest answered, else
    one rejection for a request refused as a whole. Auth, throttling and outages are not counted."""
    counts = g.pop("ingest_counts", None)
    if counts is None and response.status_code in REJECTED_STATUSES:
        counts = (0, 0, 1)
    if counts is not None:
        try:
            ingest_stats.record(app_state().db, *counts)
        except Exception:  # noqa: BLE001 - counting must never fail the request it counts
            log.exception("recording the ingest counts failed")
    return response


@bp.errorhandler(RequestRejected)
def _rejected(exc: RequestRejected) -> Response:
    return problem(exc.status, exc.title, exc.detail, **exc.extra)
