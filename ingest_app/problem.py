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
