"""The console's forms: sign-in and sign-out, queueing a hypothesis, and an operator's cancel,
retry and review of a run.

A form that cannot be undone (cancel, retry, review) is confirmed: the script asks in the page;
without the script, the first POST answers with a confirmation page holding the same form, and
only its second POST (`confirmed=1`) acts. Each change is recorded `by` the token's name.
"""

from __future__ import annotations

from typing import Any

from flask import flash, g, redirect, render_template, request, url_for
from marshmallow import ValidationError
from werkzeug.wrappers import Response

from ingest_app.api import ReviewRequest
from ingest_app.console import session
from ingest_app.console.blueprint import bp
from ingest_app.state import app_state
from orchestrator import errors, runs
from orchestrator.hypotheses import HypothesisRequest, idea_json_from_text
from orchestrator.settings import BUILTIN_PIPELINES, DEFAULT_PIPELINE, DEFAULT_PRIORITY

_HYPOTHESIS = HypothesisRequest()
_REVIEW = ReviewRequest()
#: The longest token a sign-in form may carry (tokens are far shorter; this bounds the work).
_MAX_TOKEN_CHARS = 4096


# --- sign-in ----------------------------------------------------------------------------------


@bp.route("/signin", methods=["GET", "POST"])
def signin() -> Any:
    """Exchange a reader or operator token for a session."""
    target = session.safe_next(request.values.get("next"))
    if not session.sign_in_possible():
        return render_template("console/signin.html", next=target, error=None, disabled=True), 503
    if session.open_mode() or (request.method == "GET" and session.current_viewer() is not None):
        return redirect(target)
    if request.method == "GET":
        return render_template("console/signin.html", next=target, error=None, disabled=False)
    token = request.form.get("token", "")[:_MAX_TOKEN_CHARS]
    try:
        session.sign_in(token)
    except session.SignInRefused as exc:
        return render_template("console/signin.html", next=target, error=str(exc), disabled=False), exc.status
    return redirect(target)


@bp.post("/signout")
def signout() -> Response:
    session.sign_out()
    flash("Signed out.")
    return redirect(url_for("console.signin"))


# --- a new hypothesis -------------------------------------------------------------------------


def _form_defaults() -> dict[str, Any]:
    return {"title": "", "idea": "", "pipeline": DEFAULT_PIPELINE, "priority": str(DEFAULT_PRIORITY), "ideaJson": ""}


def _new_form(values: dict[str, Any], problems: dict[str, list[str]], status: int = 200) -> tuple[str, int]:
    return render_template("console/new_hypothesis.html", values=values, errors=problems,
                           pipelines=BUILTIN_PIPELINES, priorities=range(10)), status


@bp.get("/hypotheses/new")
def new_hypothesis() -> tuple[str, int]:
    return _new_form(_form_defaults(), {})


@bp.post("/hypotheses")
def create_hypothesis() -> Any:
    """Queue a hypothesis from the form; the same checks as `POST /api/hypotheses`, shown beside
    the fields they concern."""
    values = {name: request.form.get(name, "") for name in _form_defaults()}
    body, problems = _hypothesis_body(values)
    if not problems:
        try:
            body = _HYPOTHESIS.load(body)
        except ValidationError as exc:
            problems = _field_errors(exc)
    if problems:
        return _new_form(values, problems, 400)
    settings = app_state().settings
    hypothesis_id, run_id = runs.create_hypothesis_and_run(
        app_state().db, body["title"], body["idea"], idea_json=body["ideaJson"], priority=body["priority"],
        queue=body["queue"], pipeline=body["pipeline"], max_attempts=body["maxAttempts"] or settings.max_attempts,
        limits=body["limits"],
    )
    flash(f"Queued: {body['title']}")
    return redirect(url_for("console.run_page", run_id=run_id))


def _hypothesis_body(values: dict[str, str]) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The API body the form's text fields mean, or the fields that cannot be read as one."""
    problems: dict[str, list[str]] = {}
    body: dict[str, Any] = {"title": values["title"], "idea": values["idea"], "pipeline": values["pipeline"]}
    try:
        body["priority"] = int(values["priority"])
    except ValueError:
        problems["priority"] = ["Choose a priority from 0 (lowest) to 9 (highest)."]
    raw = values["ideaJson"].strip()
    if raw:
        try:
            body["ideaJson"] = idea_json_from_text(raw)
        except ValueError as exc:
            problems["ideaJson"] = [str(exc)]
    return body, problems


def _field_errors(exc: ValidationError) -> dict[str, list[str]]:
    messages = exc.messages if isinstance(exc.messages, dict) else {"form": exc.messages}
    return {str(name): [str(m) for m in (reasons if isinstance(reasons, list) else [reasons])]
            for name, reasons in messages.items()}


# --- cancel, retry, review --------------------------------------------------------------------


def _confirmed(action: str, run_id: str, question: str) -> str | None:
    """None once the person confirmed; else the confirmation page to show first."""
    if request.form.get("confirmed") == "1":
        return None
    fields = {k: v for k, v in request.form.items() if k not in ("csrf_token", "confirmed")}
    return render_template("console/confirm.html", action=url_for(f"console.{action}", run_id=run_id), question=question,
                           fields=fields, run_id=run_id)


def _done(run_id: str, message: str) -> Response:
    flash(message)
    return redirect(url_for("console.run_page", run_id=run_id))


@bp.post("/runs/<run_id>/cancel")
def cancel(run_id: str) -> Any:
    page = _confirmed("cancel", run_id, "Cancel this run? A running attempt stops at its next checkpoint.")
    if page is not None:
        return page
    reason = (request.form.get("reason") or "").strip()[:2000] or None
    try:
        run = runs.cancel_run(app_state().db, run_id, by=g.viewer.name, reason=reason)
    except errors.TransitionError as exc:
        return _done(run_id, f"Not canceled: {exc}")
    message = "Canceled." if run["status"] == "CANCELED" else "Cancel requested: the worker stops at its next checkpoint."
    return _done(run_id, message)


@bp.post("/runs/<run_id>/retry")
def retry(run_id: str) -> Any:
    page = _confirmed("retry", run_id, "Queue this run again? The next attempt resumes after the steps already completed.")
    if page is not None:
        return page
    try:
        runs.retry_run(app_state().db, run_id, by=g.viewer.name)
    except errors.TransitionError as exc:
        return _done(run_id, f"Not retried: {exc}")
    return _done(run_id, "Queued again.")


@bp.post("/runs/<run_id>/review")
def review(run_id: str) -> Any:
    """Accept or reject the result of a run in AWAITING_HUMAN, with notes (needed to reject)."""
    body = {"decision": request.form.get("decision", ""), "notes": request.form.get("notes") or None}
    try:
        checked = _REVIEW.load(body)
    except ValidationError as exc:
        problems = _field_errors(exc)
        return _done(run_id, "Review not recorded: " + "; ".join(f"{k}: {' '.join(v)}" for k, v in problems.items()))
    verb = "Accept" if checked["decision"] == runs.ACCEPT else "Reject"
    page = _confirmed("review", run_id, f"{verb} this run's result? A review is final.")
    if page is not None:
        return page
    notes = (checked["notes"] or "").strip() or None
    try:
        run = runs.review_run(app_state().db, run_id, checked["decision"], by=g.viewer.name, notes=notes)
    except errors.TransitionError as exc:
        return _done(run_id, f"Review not recorded: {exc}")
    return _done(run_id, f"Review recorded: {run['status']}.")

