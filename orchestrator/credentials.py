"""Who holds which credential, and what each role may do: the one place tokens are parsed.

Roles (the design's): a `worker` posts events and nothing else; a `reader` reads runs, events and
artifacts; an `operator` reads and also creates hypotheses, cancels, retries and reviews runs.
`metrics` may only scrape `/metrics`. A worker's token cannot read: a pod runs code an LLM wrote,
and what it can reach is what a leaked token gives away.

Each role's variable holds a comma-separated list, so a token is rotated without downtime: add
the new one, move the clients over, remove the old one. An entry may carry a name before a colon
(`alice:TOKEN`); the name becomes `by` on what that credential changes, so the history says who.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from orchestrator.errors import SettingsError

if TYPE_CHECKING:
    from standardwebhooks.webhooks import Webhook

WORKER = "worker"
READER = "reader"
OPERATOR = "operator"
METRICS = "metrics"

#: The variable that holds each role's tokens.
VARIABLES: dict[str, str] = {
    WORKER: "INGEST_TOKEN", READER: "READER_TOKEN", OPERATOR: "OPERATOR_TOKEN", METRICS: "METRICS_TOKEN",
}
#: Shortest token accepted: 32 characters of `manage-runs token` carry 190 bits; a shorter one
#: is a password someone typed, and the API is reachable from wherever the pods are.
MIN_TOKEN_CHARS = 32
#: Words of values copied from examples and tutorials (compared without case or punctuation);
#: refused however long the token is. Long enough never to occur in a random token by chance.
_PLACEHOLDERS = ("changeme", "replaceme", "yourtoken", "placeholder", "example", "password")
#: Fewest distinct characters in a token: "aaaa..." or "1212..." is not random.
_MIN_DISTINCT_CHARS = 10
_NAME = re.compile(r"^[A-Za-z0-9_.@+-]{1,64}$")
#: Shortest Standard Webhooks secret, in bytes after decoding (the Standard Webhooks recommendation).
MIN_WEBHOOK_SECRET_BYTES = 24


@dataclass(frozen=True)
class Credential:
    """One token of one role. `name` is who holds it, when the entry gave one."""

    role: str
    name: str | None
    token: str = field(repr=False)

    @property
    def label(self) -> str:
        """How logs and counters name this credential without showing it: the name, or the
        role with the token's last four characters (enough to tell two apart when rotating)."""
        return self.name or f"{self.role}-…{self.token[-4:]}"

    @property
    def key(self) -> str:
        """A stable id for counters: the role and a digest of the token, never the token."""
        return f"{self.role}-{hashlib.sha256(self.token.encode()).hexdigest()[:16]}"


def new_token() -> str:
    """A fresh random token (43 URL-safe characters, 256 bits), as `manage-runs token` prints."""
    return secrets.token_urlsafe(32)


def parse(variable: str, role: str, raw: str | None) -> tuple[Credential, ...]:
    """The credentials of one variable; SettingsError naming the variable and the entry's
    position (never the token) when one is unusable."""
    if raw is None or not raw.strip():
        return ()
    found = []
    for position, entry in enumerate(raw.split(","), start=1):
        entry = entry.strip()
        if not entry:
            continue
        name, _, token = entry.partition(":") if ":" in entry else ("", "", entry)
        if name and not _NAME.match(name):
            # Not echoed: an entry whose token holds a ':' would print part of the token.
            raise SettingsError(
                f"{variable}: entry {position} has a name that is not 1-64 letters, digits or _.@+- before a ':' "
                "(as in alice:TOKEN), or a token with a ':' in it. Tokens from `manage-runs token` have none."
            )
        _check_token(variable, position, token)
        found.append(Credential(role, name or None, token))
    return tuple(found)


def _check_token(variable: str, position: int, token: str) -> None:
    where = f"{variable}: entry {position}"
    fix = "Make one with `manage-runs token`."
    if len(token) < MIN_TOKEN_CHARS:
        raise SettingsError(f"{where} is {len(token)} characters; a token needs at least {MIN_TOKEN_CHARS}. {fix}")
    letters = "".join(ch for ch in token.lower() if ch.isalnum())
    if any(word in letters for word in _PLACEHOLDERS) or len(set(token)) < _MIN_DISTINCT_CHARS:
        raise SettingsError(f"{where} is a placeholder or not random. {fix}")
    if not token.isascii() or any(ch.isspace() or not ch.isprintable() or ch == ":" for ch in token):
        # A header carries ASCII: a WSGI server hands other bytes over as latin-1, so such a
        # token would pass this check and then never match a request.
        raise SettingsError(f"{where} contains spaces, ':', control or non-ASCII characters. {fix}")


def webhook(variable: str, secret: str) -> Webhook:
    """The Standard Webhooks signer and verifier for `secret` ('whsec_' + base64 of at least
    `MIN_WEBHOOK_SECRET_BYTES` bytes), the one rule for every webhook secret (INGEST_WEBHOOK_SECRET,
    NOTIFY_SECRET). A malformed or short one is a SettingsError naming `variable` that never
    echoes the secret."""
    from standardwebhooks.webhooks import Webhook  # here: the pipeline reads this module and needs no HTTP signing

    fix = f"use 'whsec_' followed by base64 of at least {MIN_WEBHOOK_SECRET_BYTES} random bytes"
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        signer = Webhook(secret)
    except Exception:  # noqa: BLE001 - the library raises several types; none may print the secret
        raise SettingsError(f"{variable} is not a valid Standard Webhooks secret; {fix}.") from None
    if len(key) < MIN_WEBHOOK_SECRET_BYTES:
        raise SettingsError(f"{variable} decodes to {len(key)} bytes; {fix}.")
    return signer


def from_env(env: Mapping[str, str]) -> tuple[Credential, ...]:
    """Every credential the environment defines; one token may serve one role only."""
    found = tuple(c for role, variable in VARIABLES.items() for c in parse(variable, role, env.get(variable)))
    roles: dict[str, str] = {}
    for credential in found:
        seen = roles.setdefault(credential.token, credential.role)
        if seen != credential.role:
            raise SettingsError(
                f"the same token is given to {VARIABLES[seen]} and {VARIABLES[credential.role]}; "
                "each role needs its own token, or a worker could act as an operator."
            )
    return found


class Keyring:
    """The credentials a server accepts, looked up in constant time per entry."""

    def __init__(self, credentials: Iterable[Credential]):
        self._credentials = tuple(credentials)

    def roles(self) -> set[str]:
        return {c.role for c in self._credentials}

    def by_key(self, key: str) -> Credential | None:
        """The credential whose `key` is `key`: a console session holds the key of the token it
        signed in with, so the session ends when that token is removed (rotated out)."""
        match = None
        for credential in self._credentials:
            if hmac.compare_digest(key.encode(), credential.key.encode()):
                match = credential
        return match

    def find(self, presented: str) -> Credential | None:
        """The credential whose token is `presented`. Every entry is compared, so the time taken
        does not tell how many characters matched or which entry it was."""
        match = None
        given = presented.encode()
        for credential in self._credentials:
            if hmac.compare_digest(given, credential.token.encode()):
                match = credential
        return match
