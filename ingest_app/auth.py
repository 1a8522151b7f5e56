"""Who may post events: a bearer token, or a Standard Webhooks signature. Ingest routes only.

- `Authorization: Bearer <INGEST_TOKEN>`, compared in constant time. No credential: 401; a
  wrong one: 403. Both carry `WWW-Authenticate: Bearer`.
- When `INGEST_WEBHOOK_SECRET` is set, a request carrying a `webhook-signature` header is judged
  by its signature alone (HMAC-SHA256 over `{webhook-id}.{webhook-timestamp}.{raw body}`,
  verified by the `standardwebhooks` library, which refuses timestamps more than 5 minutes from
  now). A valid signature needs no bearer token; an invalid one is 403 even with a good token,
  so a tampered body is never let through on the strength of another header. A replay inside
  the 5 minutes carries the same events, which dedup answers as duplicates.
- `INGEST_AUTH=disabled` (the open development mode) skips all of it; `create_app` warns.

Neither the token nor the secret nor a presented credential is ever logged.
"""

from __future__ import annotations

import hmac
import logging

from flask import Response, request
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from ingest_app.parsing import read_body
from ingest_app.problem import problem
from ingest_app.state import app_state
from orchestrator.errors import SettingsError
from orchestrator.settings import Settings

log = logging.getLogger(__name__)

_SIGNATURE_HEADER = "webhook-signature"
_WEBHOOK_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


def make_verifier(settings: Settings) -> Webhook | None:
    """The signature verifier for INGEST_WEBHOOK_SECRET, checked at start-up (not per request),
    so a malformed secret stops the app at boot with a message that does not echo it."""
    if not settings.ingest_webhook_secret:
        return None
    try:
        return Webhook(settings.ingest_webhook_secret)
    except Exception:  # noqa: BLE001 - the library raises several types; none may print the secret
        raise SettingsError(
            "INGEST_WEBHOOK_SECRET is not a valid Standard Webhooks secret; use 'whsec_' followed by "
            "base64 of at least 24 random bytes."
        ) from None


def require_credential() -> Response | None:
    """`before_request` of the ingest blueprint: None lets the request through."""
    state = app_state()
    if state.settings.ingest_auth == "disabled":
        return None
    verifier: Webhook | None = state.webhook
    if verifier is not None and _SIGNATURE_HEADER in request.headers:
        return _check_signature(verifier, state.settings)
    return _check_bearer(state.settings.ingest_token)


def _check_signature(verifier: Webhook, settings: Settings) -> Response | None:
    headers = {name: request.headers.get(name, "") for name in _WEBHOOK_HEADERS}
    try:
        verifier.verify(read_body(settings), headers, json_parse=False)
    except (WebhookVerificationError, ValueError) as exc:
        # The library's messages name only the failed check ("No matching signature found").
        log.info("ingest from %s refused: webhook signature: %s", request.remote_addr, exc)
        return _refused(403, f"The webhook signature does not verify: {exc}.", 'error="invalid_token"')
    return None


def _check_bearer(token: str | None) -> Response | None:
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        return _refused(401, "Send Authorization: Bearer <INGEST_TOKEN>.", None)
    if token is None or not hmac.compare_digest(presented.strip().encode(), token.encode()):
        log.info("ingest from %s refused: wrong bearer token", request.remote_addr)
        return _refused(403, "The bearer token is not the ingest token.", 'error="invalid_token"')
    return None


def _refused(status: int, detail: str, error: str | None) -> Response:
    challenge = "Bearer" + (f" {error}" if error else "")
    title = "Unauthorized" if status == 401 else "Forbidden"
    return problem(status, title, detail, headers={"WWW-Authenticate": challenge})
