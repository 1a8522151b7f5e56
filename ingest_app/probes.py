"""Probes for the orchestrator of the pods (Kubernetes, a load balancer) and for Prometheus.

`/healthz` is liveness: it answers whenever the process can serve a request and never touches
the database, so a MongoDB outage does not get every ingest pod restarted (which would not help).
`/readyz` is readiness: it pings the database, so traffic goes elsewhere while this pod cannot
reach it. `/metrics` is the Prometheus text format. None of them needs a credential: they carry
no run data, and probes and scrapers seldom hold one.
"""

from __future__ import annotations

import logging

import pymongo
from flask import Blueprint, Response, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pymongo.errors import PyMongoError

from ingest_app.problem import database_down
from ingest_app.state import app_state

log = logging.getLogger(__name__)

bp = Blueprint("probes", __name__)

#: Seconds /readyz waits for the ping. Under the 1 s default probe timeout of Kubernetes, so the
#: probe gets our 503 with a reason rather than its own timeout; a healthy ping takes milliseconds.
READY_PING_TIMEOUT_S = 0.8


@bp.get("/healthz")
def healthz() -> Response:
    """The process is up and serving."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    """200 when the database answers a ping within READY_PING_TIMEOUT_S, else a 503 problem."""
    try:
        # pymongo.timeout bounds the whole call (server selection included); mongomock ignores it.
        with pymongo.timeout(READY_PING_TIMEOUT_S):
            app_state().db.command("ping")
    except PyMongoError as exc:
        log.warning("readyz: database ping failed: %s", exc)
        return database_down(exc)
    return jsonify({"status": "ready"})


@bp.get("/metrics")
def metrics() -> Response:
    """The app's counters and histograms: under gunicorn, summed over its workers (see ingest_app.metrics)."""
    return Response(generate_latest(app_state().metrics.scraped()), mimetype=None, content_type=CONTENT_TYPE_LATEST)
