"""Who may call what: every request but the probes shows a credential whose role allows it.

- Roles (`orchestrator.credentials`): the ingest routes take a `worker` credential and nothing
  else; reads (GET) take a `reader` or an `operator`; every other API call an `operator`.
  `/healthz` and `/readyz` are open; `/metrics` takes METRICS_TOKEN when one is set. The web
  console's pages take its session cookie instead (`ingest_app.console.session`), never a bearer
  token, and the API never takes the cookie. An endpoint not named here needs an operator, so a
  new route is closed until someone opens it.
- `Authorization: Bearer <token>`, compared in constant time against every configured token.
  None: 401; unknown: 403; a known token of the wrong role: 403 naming the role needed. Both
  carry `WWW-Authenticate: Bearer`.
- A Standard Webhooks signature (INGEST_WEBHOOK_SECRET) is a worker credential on the ingest
  routes only. It covers the body alone, so it is refused in binary mode, where the event's
  type, id and seq travel in `ce-*` headers it does not sign; and each `webhook-id` is accepted
  once (remembered in the database for as long as its timestamp could verify), so a captured
  request cannot be sent again.
- Failed authentications are counted per client address (`ingest_app.limiter`); past
  AUTH_FAILURE_LIMIT the address gets 429 until its window ends. INGEST_ALLOW_CIDRS limits the
  ingest routes to the pods' networks.
- `INGEST_AUTH=disabled` (the open development mode) lets everything through; `create_app` warns.

Neither a token nor the secret nor a presented credential is ever logged; a credential is named
in logs by `Credential.label` (its name, or its role and last four characters).
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from flask import Response, g, request
from pymongo.errors import PyMongoError
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from ingest_app.limiter import retry_after
from ingest_app.parsing import read_body
from ingest_app.problem import problem
from ingest_app.state import AppState, app_state
from orchestrator import credentials, expiring
from orchestrator.credentials import METRICS, OPERATOR, READER, WORKER, Credential
from orchestrator.settings import Settings

log = logging.getLogger(__name__)

_WEBHOOK_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
#: How long a webhook-id is remembered: the library accepts timestamps 5 minutes either side of
#: now, so a signature verifies for up to 10 minutes after it is first seen.
WEBHOOK_ID_KEEP_S = 11 * 60
_OPEN = frozenset({"probes.healthz", "probes.readyz"})
_READ_METHODS = frozenset({"GET", "HEAD"})
_ROLE_NAMES = {WORKER: "a worker (INGEST_TOKEN)", READER: "a reader (READER_TOKEN)",
               OPERATOR: "an operator (OPERATOR_TOKEN)", METRICS: "METRICS_TOKEN"}
#: Who `by` is for a change made in the open development mode or by an unnamed credential.
DEFAULT_ACTOR = "api"
_SIGNED = Credential(WORKER, "webhook-signature", "")


def make_verifier(settings: Settings) -> Webhook | None:
    """The signature verifier for INGEST_WEBHOOK_SECRET, checked at start-up (not per request),
    so a malformed or short secret stops the app at boot with a message that does not echo it
    (the rule of every webhook secret: `credentials.webhook`)."""
    secret = settings.ingest_webhook_secret
    return credentials.webhook("INGEST_WEBHOOK_SECRET", secret) if secret else None


def roles_for(endpoint: str, method: str, state: AppState) -> frozenset[str] | None:
    """The roles that may call `endpoint` with `method`; None when it is open to all."""
    if endpoint in _OPEN or method == "OPTIONS":
        return None  # a CORS preflight carries no credential, and the answer holds no data
    if endpoint.startswith("console."):
        return None  # the console checks its own session (`ingest_app.console.session`)
    if endpoint == "probes.metrics":
        return frozenset({METRICS}) if METRICS in state.keyring.roles() else None
    if endpoint.startswith("ingest."):
        return frozenset({WORKER})
    if method in _READ_METHODS and endpoint.startswith("api."):
        return frozenset({READER, OPERATOR})
    return frozenset({OPERATOR})


def authenticate() -> Response | None:
    """The app's first `before_request` after timing: None lets the request through, with the
    credential in `g.credential` (None in the open mode)."""
    g.credential = None
    state = app_state()
    if request.endpoint is None or state.settings.ingest_auth == "disabled":
        return None  # no such route (404/405 follow), or the open development mode
    roles = roles_for(request.endpoint, request.method, state)
    if roles is None:
        return None
    address = request.remote_addr or "unknown"
    if WORKER in roles and not _address_allowed(address, state.settings):
        log.info("%s %s from %s refused: not in INGEST_ALLOW_CIDRS", request.method, request.path, address)
        return problem(403, "Forbidden", "This address may not post events (INGEST_ALLOW_CIDRS).")
    # The scraper is not locked out with its address: it sends one known token, and an outage
    # of the metrics would hide the very attack.
    locked = state.sign_ins is not None and request.endpoint != "probes.metrics"
    wait = state.sign_ins.wait_s(address) if locked else 0.0
    if wait > 0:
        return problem(429, "Too Many Requests", f"Too many failed sign-ins from this address; retry in {retry_after(wait)} s.",
                       headers={"Retry-After": retry_after(wait)})
    credential, refusal = _identify(state, roles)
    if refusal is not None:
        if refusal.status_code == 403 and state.sign_ins is not None:
            state.sign_ins.record(address)
        return refusal
    assert credential is not None
    if credential.role not in roles:
        log.info("%s %s refused: %s credential %s", request.method, request.path, credential.role, credential.label)
        needed = " or ".join(_ROLE_NAMES[role] for role in sorted(roles))
        return _refused(403, f"A {credential.role} credential may not do this; it needs {needed}.", 'error="insufficient_scope"')
    g.credential = credential
    return None


def credential_name() -> str | None:
    """The name the request's credential carries (`alice:TOKEN`), which the history records as
    `by` for the changes it makes; None for an unnamed one or the open mode."""
    credential: Credential | None = g.get("credential")
    return credential.name if credential is not None else None


def _identify(state: AppState, roles: frozenset[str]) -> tuple[Credential | None, Response | None]:
    if "webhook-signature" in request.headers and state.webhook is not None and WORKER in roles:
        return _check_signature(state)
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        return None, _refused(401, "Send Authorization: Bearer <token>.", None)
    credential = state.keyring.find(presented.strip())
    if credential is None:
        log.info("%s %s from %s refused: unknown bearer token", request.method, request.path, request.remote_addr)
        return None, _refused(403, "The bearer token is not one this server accepts.", 'error="invalid_token"')
    return credential, None


def _check_signature(state: AppState) -> tuple[Credential | None, Response | None]:
    """A signed request: structured or batch mode only, a valid signature, a new webhook-id."""
    if "ce-specversion" in request.headers:
        return None, _refused(
            401, "A webhook signature covers the body only, and binary mode carries the event's attributes in "
            "ce-* headers it does not sign; send the event in structured mode (application/cloudevents+json) "
            "or with the bearer token.", None)
    headers = {name: request.headers.get(name, "") for name in _WEBHOOK_HEADERS}
    assert state.webhook is not None
    try:
        state.webhook.verify(read_body(state.settings), headers, json_parse=False)
    except (WebhookVerificationError, ValueError) as exc:
        # The library's messages name only the failed check ("No matching signature found").
        log.info("ingest from %s refused: webhook signature: %s", request.remote_addr, exc)
        return None, _refused(403, f"The webhook signature does not verify: {exc}.", 'error="invalid_token"')
    record = f"webhook:{headers['webhook-id']}"
    if not expiring.first_time(state.db, record, WEBHOOK_ID_KEEP_S):
        log.info("ingest from %s refused: webhook-id replayed", request.remote_addr)
        return None, _refused(
            403, "This webhook-id was already accepted; a signed request is accepted once. Sign each send "
            "afresh, with a new webhook-id.", 'error="invalid_token"')
    g.webhook_record = record
    return _SIGNED, None


def forget_failed_signature(response: Response) -> Response:
    """`after_request`: a signed request that was not accepted (a 4xx, or 503 while the database is
    down) leaves its webhook-id unused, so the sender's resend with the same id, which Standard
    Webhooks prescribes, is judged afresh. If the database cannot be told either, the id stays
    taken until it expires; the log says so."""
    record = g.get("webhook_record")
    if record is not None and not 200 <= response.status_code < 300:
        try:
            expiring.forget(app_state().db, record)
        except PyMongoError as exc:
            log.warning("webhook-id of a failed request not released (%s); a resend with it is refused until it expires",
                        type(exc).__name__)
    return response


def _address_allowed(address: str, settings: Settings) -> bool:
    if not settings.ingest_allow_cidrs:
        return True
    try:
        given = ipaddress.ip_address(address)
    except ValueError:
        return False
    ip = getattr(given, "ipv4_mapped", None) or given  # ::ffff:10.1.2.3 is 10.1.2.3 (a dual-stack bind)
    return any(ip in ipaddress.ip_network(network) for network in settings.ingest_allow_cidrs)


def _refused(status: int, detail: str, error: str | None, **extra: Any) -> Response:
    challenge = "Bearer" + (f" {error}" if error else "")
    title = "Unauthorized" if status == 401 else "Forbidden"
    return problem(status, title, detail, headers={"WWW-Authenticate": challenge}, **extra)
