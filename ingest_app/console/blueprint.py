"""The console's blueprint: who may use it, the headers and error pages of every page, and what
every template may use. The routes register on `bp` from `pages` and `actions`."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, g, redirect, render_template, request, url_for
from pymongo.errors import PyMongoError
from werkzeug.wrappers import Response as WerkzeugResponse

from ingest_app.console import session, views
from ingest_app.problem import RETRY_AFTER_S
from orchestrator import db as dbmod
from orchestrator import errors

log = logging.getLogger(__name__)

bp = Blueprint("console", __name__, template_folder="templates", static_folder="static",
               static_url_path="/console-static")

#: Endpoints open without a session: the sign-in page and the console's own assets.
_OPEN = frozenset({"console.signin", "console.static"})
#: Endpoints a signed-in reader may POST to (everything else that POSTs needs an operator).
_ANY_VIEWER_POSTS = frozenset({"console.signout"})
#: Pages answer with these headers: the console loads nothing from elsewhere, and no other site
#: may frame it (clickjacking of the cancel button). Images may come from the object store's
#: presigned URLs, which are on another host.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: https: http:; style-src 'self'; "
                               "script-src 'self'; object-src 'none'; frame-src 'self'; frame-ancestors 'none'; "
                               "base-uri 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def wants_page() -> bool:
    """Whether an error should be an HTML page: a browser asking for anything but the API."""
    return not request.path.startswith("/api/") and "text/html" in request.headers.get("Accept", "")


def error_page(status: int, title: str, message: str, headers: dict[str, str] | None = None) -> Response:
    """An error as a page people can read, with the status code it means."""
    body = render_template("console/error.html", status=status, title=title, message=message,
                           retry_s=RETRY_AFTER_S if status == 503 else None)
    response = Response(body, status=status, mimetype="text/html")
    for name, value in {**SECURITY_HEADERS, **(headers or {})}.items():
        response.headers[name] = value
    return response


@bp.before_request
def _require_viewer() -> WerkzeugResponse | None:
    """A signed-in viewer for every console route but sign-in; an operator and the form's CSRF
    token for every POST but sign-out."""
    if request.endpoint in _OPEN:
        return None
    viewer = session.current_viewer()
    if viewer is None:
        if request.method == "GET" and not request.path.endswith(".json"):
            return redirect(url_for("console.signin", next=request.full_path.rstrip("?")))
        return error_page(401, "Sign in first", "Your session has ended; sign in again.")
    g.viewer = viewer
    if request.method == "POST":
        if not session.csrf_ok():
            return error_page(400, "Form expired", "This form is out of date (or came from another site); "
                                                   "go back, reload the page and send it again.")
        if request.endpoint not in _ANY_VIEWER_POSTS and not viewer.can_act:
            return error_page(403, "Operators only", "A reader can look but not change runs; sign in with an operator token.")
    return None


@bp.after_request
def _headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.endpoint != "console.static":
        response.headers.setdefault("Cache-Control", "no-store")
    return response


@bp.app_context_processor
def _context() -> dict[str, Any]:
    """What every template may use: the viewer, the CSRF token for forms."""
    viewer = g.get("viewer")
    return {"viewer": viewer, "csrf_token": session.csrf_token if viewer is not None else (lambda: "")}


@bp.app_template_global()
def stamp() -> str:
    """The version of the console's assets, so a browser never runs an old script on a new page."""
    return views.ASSET_VERSION


@bp.errorhandler(errors.NotFound)
def _not_found(exc: errors.NotFound) -> Response:
    return error_page(404, "Not found", str(exc))


@bp.errorhandler(PyMongoError)
def _database(exc: PyMongoError) -> Response:
    if dbmod.is_unavailable(exc):
        log.warning("MongoDB unreachable for console %s %s: %s", request.method, request.path, exc)
        return error_page(503, "Database unreachable", f"The database is unreachable ({type(exc).__name__}); this page "
                          f"tries again in {RETRY_AFTER_S} seconds.", {"Retry-After": str(RETRY_AFTER_S)})
    log.error("database error on console %s %s", request.method, request.path, exc_info=exc)
    return error_page(500, "Database error", "The database refused the request; the server log has the details.")


for name, function in views.FILTERS.items():
    bp.add_app_template_filter(function, name)
for name, test in views.TESTS.items():
    bp.add_app_template_test(test, name)
