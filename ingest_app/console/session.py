"""Who is using the web console: sign-in with a reader or operator token, a session cookie, and
the CSRF token every console form carries.

- Sign-in exchanges a token for Flask's signed session cookie (SECRET_KEY; HttpOnly, SameSite=Lax
  so a link from a notification still arrives signed in, Secure with CONSOLE_COOKIE_SECURE). The
  cookie holds the credential's `key` (role and a digest of the token, never the token) and is
  checked against the configured tokens on every request: removing a token from its variable
  (rotation) ends the sessions it opened. A worker's token is refused: it only posts events.
- Wrong tokens count as failed sign-ins of the client address (`ingest_app.limiter`), as on the API.
- Every POST carries the session's CSRF token in `csrf_token`.
- In the open development mode (INGEST_AUTH=disabled) everyone is an operator named "api".
"""

from __future__ import annotations

import hmac
import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

from flask import Flask, request, session

from ingest_app.state import AppState, app_state
from orchestrator.credentials import OPERATOR, READER
from orchestrator.errors import OrchestratorError

log = logging.getLogger(__name__)

#: How long a console session lasts without signing in again.
SESSION_LIFETIME = timedelta(hours=12)
CONSOLE_ROLES = frozenset({READER, OPERATOR})


@dataclass(frozen=True)
class Viewer:
    """The person using the console."""

    role: str
    #: Recorded as `by` on what they change: the token's name, else "console".
    name: str

    @property
    def can_act(self) -> bool:
        return self.role == OPERATOR


class SignInRefused(OrchestratorError):
    """A sign-in that did not succeed; the message is shown on the sign-in page, with `status`
    (403 for a token refused, 429 for an address throttled)."""

    def __init__(self, message: str, status: int = 403):
        super().__init__(message)
        self.status = status


def configure(app: Flask) -> None:
    """The session cookie's key and flags. Without SECRET_KEY the open development mode gets a
    key of its own process (sessions end when it restarts); otherwise nobody can sign in."""
    state: AppState = app.extensions["orchestrator"]
    settings = state.settings
    key = settings.secret_key
    if key is None and settings.ingest_auth == "disabled":
        key = secrets.token_urlsafe(32)
    app.secret_key = key
    app.config.update(
        SESSION_COOKIE_NAME="console_session", SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.console_cookie_secure, PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME,
    )
    if key is None:
        log.warning("SECRET_KEY is not set: nobody can sign in to the web console (`manage-runs token` makes a key)")


def sign_in_possible() -> bool:
    return bool(app_state().settings.secret_key) or open_mode()


def open_mode() -> bool:
    return app_state().settings.ingest_auth == "disabled"


def current_viewer() -> Viewer | None:
    """The signed-in person, or None. A session whose token is no longer configured is cleared."""
    if open_mode():
        return Viewer(OPERATOR, "api")
    key = session.get("key")
    if not isinstance(key, str):
        return None
    credential = app_state().keyring.by_key(key)
    if credential is None or credential.role not in CONSOLE_ROLES:
        session.clear()
        return None
    return Viewer(credential.role, credential.name or "console")


def sign_in(token: str) -> Viewer:
    """Open a session for `token`, or raise `SignInRefused` with what to do instead."""
    state = app_state()
    address = request.remote_addr or "unknown"
    if state.sign_ins is not None and state.sign_ins.wait_s(address) > 0:
        raise SignInRefused("Too many failed sign-ins from this address; wait a minute and try again.", 429)
    credential = state.keyring.find(token.strip()) if token.strip() else None
    if credential is None:
        if state.sign_ins is not None and token.strip():
            state.sign_ins.record(address)
        log.info("console sign-in from %s refused: unknown token", address)
        raise SignInRefused("That token is not one this server accepts.")
    if credential.role not in CONSOLE_ROLES:
        log.info("console sign-in from %s refused: %s credential %s", address, credential.role, credential.label)
        raise SignInRefused(f"A {credential.role} token cannot sign in to the console; use a reader or operator token.")
    session.clear()
    session.permanent = True
    session["key"] = credential.key
    session["csrf"] = secrets.token_urlsafe(32)
    log.info("console sign-in: %s credential %s", credential.role, credential.label)
    return Viewer(credential.role, credential.name or "console")


def sign_out() -> None:
    session.clear()


def csrf_token() -> str:
    """The token this session's forms carry (made on first use in the open mode)."""
    token = session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


def csrf_ok() -> bool:
    expected, given = session.get("csrf"), request.form.get("csrf_token", "")
    return isinstance(expected, str) and hmac.compare_digest(expected.encode(), given.encode())


def safe_next(target: str | None) -> str:
    """Where to go after sign-in: only a path of this site (never `//evil.example` or a URL),
    so the sign-in page cannot be used to send someone elsewhere."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else "/"
