"""Artifact storage: MinIO (any S3 API) in production, a local directory for the embedded demo.

`upload` computes size and sha256 from the local file, stores the bytes under exactly the key it
was given and returns that key: the key registered in `ai.artifact.registered` is the key the
bytes were uploaded to (the old worker registered a different one). Keys look like
`runs/{run_id}/{attempt}/{relative path}` (`orchestrator.artifact_keys`).

Transient failures (connection errors, timeouts, 5xx, throttling) are retried with backoff;
after the last try, or at once for a permanent one, `StorageError` names the key and the cause.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import mimetypes
import os
import shutil
import stat
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import certifi
import urllib3
from minio import Minio
from minio.error import InvalidResponseError, S3Error, ServerError
from opentelemetry.trace import SpanKind

from orchestrator import tracing
from orchestrator.artifact_keys import check_key
from orchestrator.errors import StorageError
from orchestrator.retry import Backoff
from orchestrator.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

#: S3 error codes worth another try: the server is busy or failed, not the request.
_TRANSIENT_S3_CODES = frozenset({"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout"})
#: Hashing and copying read this many bytes at a time, so memory does not grow with the file.
_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class StorageRetry:
    """How often a storage call is tried (first try included) and how long to wait between."""

    tries: int = 4
    backoff: Backoff = Backoff(base_s=0.25, cap_s=5.0)


@dataclass(frozen=True)
class UploadResult:
    """What was stored: the exact key, and size and sha256 of the bytes, computed locally."""

    key: str
    bytes: int
    sha256: str
    content_type: str


class Storage(ABC):
    """Where artifacts go. Subclasses store bytes; this class hashes, checks keys and retries."""

    def __init__(self, retry: StorageRetry | None = None):
        self.retry = retry or StorageRetry()

    def upload(self, local_path: str | os.PathLike[str], key: str, content_type: str | None = None) -> UploadResult:
        """Store a local file under `key`; `content_type` is guessed from the name when None."""
        check_key(key)
        path = Path(local_path)
        size, digest = _size_and_sha256(path, key)
        content_type = content_type or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        with tracing.span("upload", kind=SpanKind.CLIENT, attributes={"artifact.key": key, "artifact.bytes": size}):
            self._retrying(f"upload of {path} to {key!r}", lambda: self._put(path, key, content_type, digest))
        return UploadResult(key=key, bytes=size, sha256=digest, content_type=content_type)

    def download_url(self, key: str, expires_s: int = 3600) -> str:
        """A URL that fetches the bytes: presigned GET for S3, file:// for a local directory."""
        check_key(key)
        return self._retrying(f"download URL for {key!r}", lambda: self._url(key, expires_s))

    def _retrying(self, what: str, call: Callable[[], T]) -> T:
        """Run `call`, retrying transient failures; raise StorageError naming `what` and the cause."""
        for attempt in range(1, self.retry.tries + 1):
            try:
                return call()
            except self._failures as exc:
                if not self._transient(exc):
                    raise StorageError(f"{what} failed: {_describe(exc)}") from exc
                if attempt == self.retry.tries:
                    raise StorageError(f"{what} failed after {attempt} tries: {_describe(exc)}") from exc
                delay = self.retry.backoff.delay(attempt)
                log.warning("%s failed (try %d of %d): %s; retrying in %.2fs",
                            what, attempt, self.retry.tries, _describe(exc), delay)
                time.sleep(delay)
        raise AssertionError("unreachable: StorageRetry.tries must be at least 1")

    #: Exceptions a backend call may raise that become StorageError (others are bugs: propagate).
    _failures: tuple[type[BaseException], ...] = (OSError,)

    @abstractmethod
    def _transient(self, exc: BaseException) -> bool: ...

    @abstractmethod
    def _put(self, path: Path, key: str, content_type: str, sha256: str) -> None: ...

    @abstractmethod
    def _url(self, key: str, expires_s: int) -> str: ...


class LocalStorage(Storage):
    """Artifacts as files under a directory: the embedded demo, which runs with no services."""

    def __init__(self, root: str | os.PathLike[str], retry: StorageRetry | None = None):
        super().__init__(retry)
        self.root = Path(root).resolve()

    def path_of(self, key: str) -> Path:
        return self.root / check_key(key)

    def _transient(self, exc: BaseException) -> bool:
        # A full or read-only disk will not heal in a second, but a few quick tries cost little
        # and cover NFS hiccups; the missing source file was caught before the first try.
        return True

    def _put(self, path: Path, key: str, content_type: str, sha256: str) -> None:
        """Write through directory descriptors opened with O_NOFOLLOW, so a symbolic link
        anywhere under the root (a folder or a file linked outside it) can never make the write
        land outside ARTIFACT_DIR: such a key is refused with StorageError, not followed."""
        *folders, name = check_key(key).split("/")
        self.root.mkdir(parents=True, exist_ok=True)
        parent = self._open_folders(folders, key)
        try:
            if _is_link(name, parent):
                raise _link_refused(key, name)
            partial = f".{name}.partial"
            with _no_link(key, partial, parent):
                fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644, dir_fd=parent)
            with open(path, "rb") as source, os.fdopen(fd, "wb") as target:
                shutil.copyfileobj(source, target, _CHUNK_BYTES)
            os.replace(partial, name, src_dir_fd=parent, dst_dir_fd=parent)  # readers never see half a file
        finally:
            os.close(parent)

    def _open_folders(self, folders: list[str], key: str) -> int:
        """A descriptor of the key's folder under the root, each folder made if missing and
        opened without following a link, relative to the one before."""
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for folder in folders:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(folder, dir_fd=fd)
                with _no_link(key, folder, fd):
                    inner = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                os.close(fd)
                fd = inner
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _url(self, key: str, expires_s: int) -> str:
        return self.path_of(key).as_uri()


class MinioStorage(Storage):
    """Artifacts in an S3 bucket through the `minio` client; the bucket is created on first use."""

    _failures = (S3Error, ServerError, InvalidResponseError, urllib3.exceptions.HTTPError, OSError)

    def __init__(self, client: Minio, bucket: str, retry: StorageRetry | None = None):
        super().__init__(retry)
        self.client = client
        self.bucket = bucket
        self._bucket_ready = False

    def _transient(self, exc: BaseException) -> bool:
        if isinstance(exc, S3Error):
            status = exc.response.status if exc.response is not None else 0
            return status >= 500 or status == 429 or exc.code in _TRANSIENT_S3_CODES
        if isinstance(exc, ServerError):
            return exc.status_code >= 500 or exc.status_code == 429
        return True  # connection errors, timeouts, non-XML answers from a proxy in front

    def _ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        if not self.client.bucket_exists(self.bucket):
            try:
                self.client.make_bucket(self.bucket)
                log.info("created bucket %s", self.bucket)
            except S3Error as exc:
                if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise  # another worker creating it at the same moment is fine
        self._bucket_ready = True

    def _put(self, path: Path, key: str, content_type: str, sha256: str) -> None:
        self._ensure_bucket()
        self.client.fput_object(self.bucket, key, str(path), content_type=content_type, metadata={"sha256": sha256})

    def _url(self, key: str, expires_s: int) -> str:
        return self.client.presigned_get_object(self.bucket, key, expires=timedelta(seconds=expires_s))


def minio_client(endpoint: str, access_key: str | None, secret_key: str | None, *, secure: bool,
                 connect_timeout_s: float = 5.0, read_timeout_s: float = 120.0) -> Minio:
    """A client whose HTTP layer does not retry (`Storage` does, with its own policy) and whose
    timeouts are seconds, not the library's 5 minutes. `endpoint` may carry http:// or https://,
    which then decides `secure`."""
    parts = urlsplit(endpoint if "://" in endpoint else f"//{endpoint}")
    if parts.scheme:
        secure = parts.scheme == "https"
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=connect_timeout_s, read=read_timeout_s),
        maxsize=10,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=False,
    )
    return Minio(parts.netloc, access_key=access_key, secret_key=secret_key, secure=secure, http_client=http)


def storage_from_settings(settings: Settings, retry: StorageRetry | None = None) -> Storage:
    """MinIO when MINIO_ENDPOINT is set, else files under ARTIFACT_DIR (the embedded demo)."""
    if settings.minio_endpoint:
        client = minio_client(settings.minio_endpoint, settings.minio_access_key, settings.minio_secret_key,
                              secure=settings.minio_secure)
        return MinioStorage(client, settings.minio_bucket, retry)
    return LocalStorage(settings.artifact_dir, retry)


def _size_and_sha256(path: Path, key: str) -> tuple[int, str]:
    """Read the file once; a missing or unreadable file is not worth a retry."""
    digest = hashlib.sha256()
    size = 0
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK_BYTES):
                digest.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise StorageError(f"cannot upload {path} to {key!r}: {_describe(exc)}") from exc
    return size, digest.hexdigest()


def _is_link(name: str, folder_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(name, dir_fd=folder_fd).st_mode)
    except FileNotFoundError:
        return False


@contextlib.contextmanager
def _no_link(key: str, name: str, folder_fd: int) -> Iterator[None]:
    """Turn O_NOFOLLOW's refusal of `name` as a symbolic link (ELOOP; ENOTDIR with O_DIRECTORY)
    into a StorageError, which is not retried: the link will still be there in a second."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR) or not _is_link(name, folder_fd):
            raise
        raise _link_refused(key, name) from exc


def _link_refused(key: str, name: str) -> StorageError:
    return StorageError(f"artifact key {key!r}: {name!r} in ARTIFACT_DIR is a symbolic link; "
                        "refusing to write through it (remove the link)")


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
