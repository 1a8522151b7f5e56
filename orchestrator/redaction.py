"""Secrets inside URLs, masked wherever a URL is shown: settings messages, start-up logs, warnings.

A MongoDB URL carries its user's password, and the messages that show one end up in terminals,
pod logs and CI output. Kept apart from `orchestrator.settings` so any module that names a URL
(the start-up checks of `orchestrator.preflight` too) masks it the same way.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

#: URL options whose values are credentials, masked like the password.
_SECRET_OPTIONS = re.compile(r"(?i)([?&](?:tlsCertificateKeyFilePassword|authMechanismProperties)=)[^&]*")


def without_password(url: str) -> str:
    """mongodb://user:secret@host/db -> mongodb://user:***@host/db, for any text, parseable or
    not: the messages about an unparseable URL need the mask most."""
    before, password, after = split_password(url)
    masked = url if password is None else f"{before}***{after}"
    return _SECRET_OPTIONS.sub(r"\1***", masked)


def split_password(url: str) -> tuple[str, str | None, str]:
    """(text before the password, the password or None, text after it). The user part ends at
    the last '@' before the options, as pymongo reads it; a password with an unescaped '?' is
    cut at the last '@' of all, which may mask more than the password but never less."""
    head, sep, rest = url.partition("://")
    if not sep:
        head, rest = "", url
    userinfo, at, hosts = rest.partition("?")[0].rpartition("@")
    if not at:
        userinfo, at, hosts = rest.rpartition("@")
    else:
        hosts = rest[len(userinfo) + 1:]
    user, colon, password = userinfo.partition(":")
    if not at or not colon:
        return url, None, ""
    return f"{head}{sep}{user}:", password, f"@{hosts}"


def url_host(url: str) -> str:
    """scheme://host/*** : enough to tell which receiver, nothing of a credential in its path."""
    return f"{url_origin(url)}/***"


def url_origin(url: str, *, path: bool = False) -> str:
    """scheme://host:port of a URL (and its path, with `path`), without the user and password it
    may carry; an IPv6 host keeps its brackets."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path if path else ''}"
