"""RFC 9457 problem details: every error body the ingest app sends is application/problem+json."""

from __future__ import annotations

from typing import Any

from flask import Response, json

PROBLEM_JSON = "application/problem+json"


def problem(status: int, title: str, detail: str | None = None, headers: dict[str, str] | None = None, **extra: Any) -> Response:
    """A problem+json response. `extra` members (e.g. `errors` with field paths) are added as is."""
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    response = Response(json.dumps(body), status=status, mimetype=PROBLEM_JSON)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


#: Seconds a client should wait after a 503 for MongoDB: about one server selection timeout.
RETRY_AFTER_S = 5


def database_down(exc: BaseException) -> Response:
    """The answer to any request the database could not serve: 503 with Retry-After. A resend
    is always safe: events are deduplicated, and the other writes check the run's status."""
    return problem(
        503, "Service Unavailable",
        f"The database (MongoDB) is unreachable ({type(exc).__name__}); retry in {RETRY_AFTER_S} s. A resend is safe: "
        "events already applied are answered as duplicates.",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )
