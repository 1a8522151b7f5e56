"""Do the services a worker talks to answer? Checked when a worker starts (`tasks.hooks`), and
meant for the demo and any other entry point that starts one.

A worker whose INGEST_URL points where nothing listens runs its pipeline anyway: its events wait
in the spool and the run shows STARTING for as long as the run takes; an object store that is
down fails the run at its first upload, after four tries. Both looked like the control plane
hanging. Said in the first lines of the worker's log, each is one sentence naming the variable.

A warning, never a refusal: the spool exists to ride out an ingest outage, and a store that is
down now may be up by the first upload. Each probe waits at most `PROBE_TIMEOUT_S`, so a start
never hangs on an address that drops packets.
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path

import requests
import urllib3
from minio.error import MinioException, S3Error

from orchestrator.redaction import url_origin, without_password
from orchestrator.settings import Settings
from orchestrator.storage import minio_client

log = logging.getLogger(__name__)

#: Seconds each probe (connect, then read) may take.
PROBE_TIMEOUT_S = 2.0


def check_services(settings: Settings, *, timeout_s: float = PROBE_TIMEOUT_S) -> list[str]:
    """One warning per service that does not answer as it should (none: an empty list): the
    ingest app (its readiness probe, `/readyz`) and the artifact store (MinIO's bucket, or that
    ARTIFACT_DIR can be written)."""
    found = [_ingest(settings, timeout_s), _store(settings, timeout_s)]
    return [warning for warning in found if warning]


def warn_unreachable(settings: Settings, *, logger: logging.Logger | None = None, patience_s: float = 0.0,
                     interval_s: float = 1.0, timeout_s: float = PROBE_TIMEOUT_S) -> list[str]:
    """`check_services`, again every `interval_s` for up to `patience_s` while something does not
    answer (honcho starts the web process and the worker together; the worker should not cry wolf
    while gunicorn boots), then each warning logged; one info line when everything answers.
    Returns the warnings logged."""
    logger = logger or log
    deadline = time.monotonic() + patience_s
    warnings = check_services(settings, timeout_s=timeout_s)
    while warnings and time.monotonic() + interval_s < deadline:
        time.sleep(interval_s)
        warnings = check_services(settings, timeout_s=timeout_s)
    for warning in warnings:
        logger.warning("%s", warning)
    if not warnings:
        logger.info("ingest at %s is ready; artifacts go to %s", url_origin(settings.ingest_url, path=True),
                    _store_name(settings))
    return warnings


def _ingest(settings: Settings, timeout_s: float) -> str | None:
    url = f"{settings.ingest_url}/readyz"
    where = url_origin(settings.ingest_url, path=True)
    try:
        response = requests.get(url, timeout=(timeout_s, timeout_s), allow_redirects=False)
    except requests.RequestException as exc:
        return (f"ingest does not answer at INGEST_URL={where} ({_reason(exc, timeout_s)}): events wait in the "
                f"spool ({settings.spool_dir}) and runs stay at STARTING until it does. Start the web process, or "
                "point INGEST_URL where it listens (BIND_HOST:WEB_PORT on its machine).")
    if response.status_code == 503:
        return (f"ingest at INGEST_URL={where} answers, but not its database (503 from /readyz): events wait in "
                "the spool until it is back.")
    if not response.ok:
        return (f"INGEST_URL={where} answered /readyz with HTTP {response.status_code}: is that the ingest app "
                "(`web` in the Procfile)? Events wait in the spool until ingest takes them.")
    return None


def _store(settings: Settings, timeout_s: float) -> str | None:
    if settings.minio_endpoint:
        return _minio(settings, timeout_s)
    return _writable(Path(settings.artifact_dir))


def _minio(settings: Settings, timeout_s: float) -> str | None:
    assert settings.minio_endpoint is not None
    where = f"MINIO_ENDPOINT={without_password(settings.minio_endpoint)}"
    try:
        client = minio_client(settings.minio_endpoint, settings.minio_access_key, settings.minio_secret_key,
                              secure=settings.minio_secure, connect_timeout_s=timeout_s, read_timeout_s=timeout_s)
        client.bucket_exists(settings.minio_bucket)  # a missing bucket is made at the first upload
    except S3Error as exc:
        return (f"the object store at {where} refuses us ({exc.code}): uploads will fail, and the runs with "
                "them. Check MINIO_ACCESS_KEY and MINIO_SECRET_KEY.")
    except (MinioException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
        return (f"the object store at {where} does not answer ({_reason(exc, timeout_s)}): uploads will fail, "
                "and the runs with them. Start it, or leave MINIO_ENDPOINT unset to keep artifacts in ARTIFACT_DIR.")
    return None


def _writable(directory: Path) -> str | None:
    """ARTIFACT_DIR, or the folder it will be made in, can be written by this process."""
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"ARTIFACT_DIR={directory}: {existing} is not a directory, so no artifact can be stored."
    if not os.access(existing, os.W_OK | os.X_OK):
        return (f"ARTIFACT_DIR={directory}: {existing} is not writable by this process, so no artifact can be "
                "stored; fix its permissions or set ARTIFACT_DIR elsewhere.")
    return None


def _store_name(settings: Settings) -> str:
    if settings.minio_endpoint:
        return f"bucket {settings.minio_bucket} at {without_password(settings.minio_endpoint)}"
    return str(settings.artifact_dir)


_ERRNO_TEXT = re.compile(r"\[Errno -?\d+\] ([^'\"\)\]]+)")


def _reason(exc: BaseException, timeout_s: float) -> str:
    """Why a connection failed, in a few words: requests and urllib3 bury the OS's reason inside
    a long repr of their own."""
    found = _ERRNO_TEXT.search(str(exc))
    if found:  # before the timeouts: urllib3's NewConnectionError is a ConnectTimeoutError too
        return found.group(1).strip()
    if isinstance(exc, requests.Timeout | urllib3.exceptions.TimeoutError | TimeoutError):
        return f"no answer within {timeout_s:g} s"
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:160]}" if text else type(exc).__name__
