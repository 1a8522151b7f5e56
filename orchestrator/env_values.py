"""Readers of one environment variable each, for `orchestrator.settings`: text, numbers, flags,
URLs, addresses, rates, choices. Each returns the checked value or its default, and raises
`SettingsError` naming the variable, the value and what would be accepted, so a bad setting is
one clear line at start-up wherever it is read.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping
from urllib.parse import SplitResult, urlsplit

from orchestrator.errors import SettingsError
from orchestrator.redaction import without_password


def read_text(env: Mapping[str, str], name: str, default: str | None) -> str | None:
    value = env.get(name)
    if value is None or value.strip() == "":
        return default
    return value.strip()


def read_number(env: Mapping[str, str], name: str, default: float, *, minimum: float = 0.0) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number; set it to a number such as {default}.") from None
    if not math.isfinite(value):  # nan passes every comparison below and inf never ends a wait
        raise SettingsError(f"{name}={raw!r} is not a finite number; set it to a number such as {default}.")
    if value < minimum:
        raise SettingsError(f"{name}={raw!r} is below the minimum {minimum}; set it to at least {minimum}.")
    return value


def read_integer(env: Mapping[str, str], name: str, default: int, *, minimum: int = 1, maximum: int | None = None) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a whole number; set it to e.g. {default}.") from None
    if value < minimum:
        raise SettingsError(f"{name}={raw!r} is below the minimum {minimum}; set it to at least {minimum}.")
    if maximum is not None and value > maximum:
        raise SettingsError(f"{name}={raw!r} is above the maximum {maximum}; set it to at most {maximum}.")
    return value


def read_boolean(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={raw!r} is not a boolean; use true or false.")


def read_http_url(env: Mapping[str, str], name: str, default: str) -> str:
    url = read_text(env, name, default)
    assert url is not None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SettingsError(f"{name}={url!r} must be an http:// or https:// URL, e.g. {default}.")
    check_port(name, url, parts)
    return url.rstrip("/")


def check_port(name: str, value: str, parts: SplitResult) -> None:
    """A port urllib can read (1-65535, digits): a bad one raised ValueError at its first use,
    as a traceback in the process that used it (the start-up service check) instead of here."""
    try:
        _ = parts.port
    except ValueError as exc:
        raise SettingsError(f"{name}={without_password(value)!r} has a bad port ({exc}).") from None


def local_address(bind_host: str) -> str:
    """Where a process on this machine reaches the web process listening on `bind_host`."""
    if bind_host in ("0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{bind_host}]" if ":" in bind_host else bind_host


def read_endpoint(env: Mapping[str, str], name: str) -> str | None:
    """An S3 API's host:port (MINIO_ENDPOINT), or http(s)://host:port, whose scheme then decides
    TLS (`storage.minio_client`); no path."""
    value = read_text(env, name, None)
    if value is not None:
        parts = urlsplit(value if "://" in value else f"//{value}")
        if parts.scheme not in ("", "http", "https") or not parts.hostname or parts.path not in ("", "/"):
            raise SettingsError(f"{name}={without_password(value)!r} must be host:port (or http(s)://host:port), "
                                "e.g. localhost:9000, with no path.")
        check_port(name, value, parts)
    return value


_RATE = re.compile(r"^[1-9]\d*\s*(/|per)\s*([1-9]\d*\s*)?(second|minute|hour|day)s?$")


def read_rate(env: Mapping[str, str], name: str, default: str) -> str:
    """A rate in the `limits` notation ("100/second", "5/minute;1000/day"), or "" for "off"."""
    value = read_text(env, name, default) or default
    if value.lower() == "off":
        return ""
    if not all(_RATE.match(part.strip()) for part in value.split(";")):
        raise SettingsError(f"{name}={value!r} is not a rate; write e.g. {default} or 100/second;5000/hour, or off.")
    return value


def read_networks(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """A comma-separated list of networks (10.0.0.0/8, 2001:db8::/32, or one address)."""
    found = []
    for entry in (read_text(env, name, "") or "").split(","):
        if entry.strip():
            try:
                found.append(str(ipaddress.ip_network(entry.strip(), strict=False)))
            except ValueError:
                raise SettingsError(f"{name}: {entry.strip()!r} is not an address or network such as 10.0.0.0/8.") from None
    return tuple(found)


def read_origins(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """Browser origins (scheme://host[:port]) allowed to call the API from another site."""
    found = []
    for entry in (read_text(env, name, "") or "").split(","):
        origin = entry.strip().rstrip("/")
        if not origin:
            continue
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query:
            raise SettingsError(
                f"{name}: {origin!r} is not an origin; give scheme://host[:port] such as https://lab.example.org "
                "(no '*': name each site that may call the API)."
            )
        found.append(origin)
    return tuple(found)


def read_optional_url(env: Mapping[str, str], name: str, example: str, *, secret: bool = False) -> str | None:
    """An optional http(s) URL. A `secret` one (a Slack incoming webhook's path is its
    credential) is never echoed in the message."""
    url = read_text(env, name, None)
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        shown = "" if secret else f"={url!r}"
        raise SettingsError(f"{name}{shown} must be an http:// or https:// URL, e.g. {example}.")
    return url.rstrip("/") if not secret else url


def read_choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    value = (read_text(env, name, choices[0]) or choices[0]).lower()
    if value not in choices:
        raise SettingsError(f"{name}={value!r} must be one of {', '.join(choices)}.")
    return value


def read_host(env: Mapping[str, str], name: str, default: str) -> str:
    """An address to listen on: an IP address (0.0.0.0 or :: for every interface) or a host name."""
    host = read_text(env, name, default) or default
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?", host):
            raise SettingsError(f"{name}={host!r} is not an address to listen on; use e.g. {default} "
                                "(this machine only) or 0.0.0.0 (every interface).") from None
    return host

