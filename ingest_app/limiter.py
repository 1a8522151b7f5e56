"""Rate limits: Flask-Limiter over counters in our own database, shared by every process.

Flask-Limiter's own MongoDB storage needs TTL indexes and pipeline updates, which FerretDB v1
lacks, so it gets `CounterStorage`: the `limits` storage interface over `orchestrator.expiring`,
which needs only unique inserts and `$inc`. Two limits use it:

- `RATE_LIMIT` per credential, across all routes (a worker credential per credential and client
  address, so pods that share one token do not take each other's budget); 429 with Retry-After.
- `AUTH_FAILURE_LIMIT` per client address: wrong tokens and bad signatures. Past it, the address
  gets 429 with Retry-After until its window ends, whatever it sends, so a token cannot be
  guessed faster than the limit allows.

The probes are exempt: a scraper or a kubelet must never be throttled off.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import Blueprint, Flask, Response, g, request
from flask_limiter import Limiter
from flask_limiter.errors import RateLimitExceeded
from limits import parse_many
from limits.storage import Storage
from limits.strategies import FixedWindowRateLimiter
from pymongo.database import Database
from pymongo.errors import PyMongoError

from ingest_app.problem import problem
from orchestrator import credentials, expiring
from orchestrator.errors import SettingsError
from orchestrator.settings import Settings

SCHEME = "orchestrator-counters"
log = logging.getLogger(__name__)


class CounterStorage(Storage):
    """The `limits` storage interface over `orchestrator.expiring` (the database given as the
    `db` option). Windows are fixed and aligned, which is what the fixed-window strategy needs."""

    STORAGE_SCHEME = [SCHEME]

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **options: Any):
        super().__init__(uri, wrap_exceptions)
        self._db: Database = options["db"]

    @property
    def base_exceptions(self) -> type[Exception]:
        return PyMongoError

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        return expiring.count(self._db, key, expiry, amount)

    def get(self, key: str) -> int:
        return self._current(key)[0]

    def get_expiry(self, key: str) -> float:
        ends = self._current(key)[1]
        return ends.timestamp() if ends is not None else time.time()

    def _current(self, key: str) -> tuple[int, Any]:
        """The count and window end, or (0, None) while the database is unreachable: reads run in
        the check and again after the response (Flask-Limiter's headers), where an exception would
        turn the route's 503 into a 500. The route itself still answers the outage, and a hit
        (`incr`) still raises, so nothing is let past a limit that was counted."""
        try:
            return expiring.current(self._db, key)
        except PyMongoError as exc:
            log.warning("rate limit counters unreadable (%s); not limiting this request", type(exc).__name__)
            return 0, None

    def check(self) -> bool:
        try:
            self._db.command("ping")
        except PyMongoError:
            return False
        return True

    def reset(self) -> int | None:
        return expiring.clear_all(self._db)

    def clear(self, key: str) -> None:
        expiring.clear(self._db, key)


class FailedSignIns:
    """Failed authentications per client address, over the same counters."""

    def __init__(self, storage: CounterStorage, limit: str):
        self._limiter = FixedWindowRateLimiter(storage)
        self._items = _parse("AUTH_FAILURE_LIMIT", limit)

    def wait_s(self, address: str) -> float:
        """Seconds `address` must wait before it may try again (0: it may now)."""
        waits = [
            self._limiter.get_window_stats(item, "auth-failures", address).reset_time - time.time()
            for item in self._items if not self._limiter.test(item, "auth-failures", address)
        ]
        return max(waits, default=0.0)

    def record(self, address: str) -> None:
        for item in self._items:
            self._limiter.hit(item, "auth-failures", address)


def install(app: Flask, db: Database, settings: Settings, exempt: Blueprint) -> FailedSignIns | None:
    """Attach Flask-Limiter with RATE_LIMIT to `app` (after the authentication hook, whose
    credential keys the limit), `exempt` (the probes) left out, and return the failed sign-in
    counter for that hook (None when AUTH_FAILURE_LIMIT is off)."""
    rates = ";".join(str(item) for item in _parse("RATE_LIMIT", settings.rate_limit)) if settings.rate_limit else ""
    # Flask-Limiter's own headers are off: it would set Retry-After on every response, a 503's
    # included (truncating its 5 to 4), and read the counters again after each one.
    limiter = Limiter(
        key_func=_key, app=app, application_limits=[rates] if rates else [], strategy="fixed-window",
        storage_uri=f"{SCHEME}://", storage_options={"db": db},  # type: ignore[dict-item]
        headers_enabled=False, key_prefix="rate",
    )
    limiter.exempt(exempt)

    @app.errorhandler(RateLimitExceeded)
    def _limited(exc: RateLimitExceeded) -> Response:
        current = limiter.current_limit
        wait = current.reset_at - time.time() if current is not None else 1.0
        return problem(429, "Too Many Requests", f"More than {exc.description} for this credential (RATE_LIMIT); "
                       f"retry in {retry_after(wait)} s.", headers={"Retry-After": retry_after(wait)})

    storage = limiter.storage
    assert isinstance(storage, CounterStorage)
    return FailedSignIns(storage, settings.auth_failure_limit) if settings.auth_failure_limit else None


def _key() -> str:
    """A credential's own budget; a worker's per credential and address; no credential (open
    mode, or a request refused before one is known): the client address."""
    credential = g.get("credential")
    if credential is None:
        return f"addr:{request.remote_addr}"
    if credential.role == credentials.WORKER:
        return f"cred:{credential.key}:{request.remote_addr}"
    return f"cred:{credential.key}"


def _parse(variable: str, value: str) -> list[Any]:
    try:
        return list(parse_many(value))
    except ValueError:
        raise SettingsError(f"{variable}={value!r} is not a rate such as 100/second.") from None


def retry_after(seconds: float) -> str:
    """A Retry-After value: whole seconds, at least 1."""
    return str(max(1, int(seconds + 0.999)))
