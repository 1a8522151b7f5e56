"""Artifact storage: the local directory, and MinIO's client against a real S3 API server process
(moto's server mode on loopback)."""

from __future__ import annotations

import hashlib
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import requests
import urllib3

from orchestrator.artifact_keys import artifact_key
from orchestrator.retry import Backoff
from orchestrator.storage import (
    LocalStorage,
    MinioStorage,
    Storage,
    StorageError,
    StorageRetry,
    minio_client,
    storage_from_settings,
)
from tests.helpers import make_settings
from tests.servers import S3Server, free_port

#: Retries within milliseconds, so the failure paths stay fast.
QUICK = StorageRetry(tries=3, backoff=Backoff(base_s=0.01, cap_s=0.02))


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    path = tmp_path / "work" / "figures" / "loss.png"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x89PNG" + bytes(range(256)) * 40)
    return path


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def s3_storage(server: S3Server, bucket: str | None = None) -> MinioStorage:
    client = minio_client(server.endpoint, "test-access", "test-secret", secure=False)
    return MinioStorage(client, bucket or f"b-{uuid.uuid4().hex[:12]}", QUICK)


def holds(storage: Storage, key: str) -> bool:
    """Whether the store has an object under exactly `key`, asked of the store itself."""
    if isinstance(storage, LocalStorage):
        return storage.path_of(key).is_file()
    assert isinstance(storage, MinioStorage)
    if not storage.client.bucket_exists(storage.bucket):
        return False
    return key in {o.object_name for o in storage.client.list_objects(storage.bucket, recursive=True)}


def test_artifact_keys_are_runs_run_attempt_path_and_refuse_escapes() -> None:
    assert artifact_key("run-1", 2, Path("figures/loss.png")) == "runs/run-1/2/figures/loss.png"
    assert artifact_key("run-1", 2, "./figures//loss.png") == "runs/run-1/2/figures/loss.png"  # normalised
    for bad in ("../x", "/etc/passwd", "a/../../b"):
        with pytest.raises(StorageError, match="not a relative path"):
            artifact_key("run-1", 1, bad)
    for bad in ("runs/r/1//x", "runs/r/1/./x", "/runs/r/1/x", ""):
        with pytest.raises(StorageError, match="not a relative path"):
            LocalStorage("/tmp").download_url(bad)


def test_local_storage_copies_the_file_under_exactly_the_key(artifact: Path, tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "artifacts", QUICK)
    key = artifact_key("run-1", 1, "figures/loss.png")
    stored = storage.upload(artifact, key, "image/png")
    data = artifact.read_bytes()
    assert (stored.key, stored.bytes, stored.sha256, stored.content_type) == (key, len(data), sha256(data), "image/png")
    assert (tmp_path / "artifacts" / key).read_bytes() == data
    assert holds(storage, key) and not holds(storage, "runs/run-1/1/nothing.txt")
    url = storage.download_url(key)
    assert url.startswith("file:///")
    with urllib.request.urlopen(url) as response:
        assert response.read() == data


def test_the_content_type_is_guessed_from_the_name_when_not_given(artifact: Path, tmp_path: Path) -> None:
    assert LocalStorage(tmp_path / "a").upload(artifact, "runs/r/1/loss.png").content_type == "image/png"


def test_uploading_a_missing_file_fails_at_once_naming_the_key(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "artifacts", StorageRetry(tries=5, backoff=Backoff(10.0, 10.0)))
    with pytest.raises(StorageError, match="runs/r/1/paper.pdf.*FileNotFoundError"):
        storage.upload(tmp_path / "missing.pdf", "runs/r/1/paper.pdf", "application/pdf")


def test_settings_choose_minio_when_an_endpoint_is_set_else_the_local_directory(tmp_path: Path) -> None:
    local = storage_from_settings(make_settings(ARTIFACT_DIR=str(tmp_path)))
    assert isinstance(local, LocalStorage) and local.root == tmp_path.resolve()
    s3 = storage_from_settings(make_settings(MINIO_ENDPOINT="http://127.0.0.1:9000", MINIO_ACCESS_KEY="a",
                                             MINIO_SECRET_KEY="b", MINIO_BUCKET="art"))
    assert isinstance(s3, MinioStorage) and s3.bucket == "art"


def test_minio_storage_creates_the_bucket_and_uploads_under_the_exact_key(s3_server: S3Server, artifact: Path) -> None:
    storage = s3_storage(s3_server)
    key = artifact_key("run-1", 1, "figures/loss.png")
    stored = storage.upload(artifact, key, "image/png")
    assert storage.client.bucket_exists(storage.bucket)
    assert [o.object_name for o in storage.client.list_objects(storage.bucket, recursive=True)] == [key]
    response = storage.client.get_object(storage.bucket, key)
    try:
        data = response.read()
        assert response.headers["Content-Type"] == "image/png"
    finally:
        response.close()
        response.release_conn()
    assert (stored.key, stored.bytes, stored.sha256) == (key, len(data), sha256(data))
    assert data == artifact.read_bytes()


def test_minio_presigned_urls_fetch_the_bytes(s3_server: S3Server, artifact: Path) -> None:
    storage = s3_storage(s3_server)
    key = "runs/run-1/1/paper.pdf"
    assert not holds(storage, key)  # the bucket does not even exist yet
    storage.upload(artifact, key, "application/pdf")
    assert holds(storage, key)
    fetched = requests.get(storage.download_url(key, expires_s=60), timeout=10)
    assert fetched.status_code == 200 and fetched.content == artifact.read_bytes()


def test_an_existing_bucket_is_used_as_it_is(s3_server: S3Server, artifact: Path) -> None:
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    s3_storage(s3_server, bucket).upload(artifact, "runs/r/1/a.png")
    s3_storage(s3_server, bucket).upload(artifact, "runs/r/1/b.png")  # a second worker
    assert holds(s3_storage(s3_server, bucket), "runs/r/1/a.png")


def test_a_transient_failure_is_retried_and_then_succeeds(s3_server: S3Server, artifact: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = s3_storage(s3_server)
    real_put = storage.client.fput_object
    failures = [urllib3.exceptions.ProtocolError("Connection reset by peer")]

    def flaky(*args: object, **kwargs: object) -> object:
        if failures:
            raise failures.pop()
        return real_put(*args, **kwargs)

    monkeypatch.setattr(storage.client, "fput_object", flaky)
    stored = storage.upload(artifact, "runs/r/1/loss.png", "image/png")
    assert holds(storage, stored.key)


def test_an_unreachable_server_is_retried_then_reported_naming_key_and_cause(artifact: Path) -> None:
    client = minio_client(f"127.0.0.1:{free_port()}", "a", "b", secure=False, connect_timeout_s=1)
    storage = MinioStorage(client, "bucket", QUICK)
    began = time.monotonic()
    with pytest.raises(StorageError) as caught:
        storage.upload(artifact, "runs/r/1/loss.png", "image/png")
    message = str(caught.value)
    assert "runs/r/1/loss.png" in message and "after 3 tries" in message and "Connection refused" in message
    assert time.monotonic() - began < 5


@pytest.mark.parametrize("linked", ["runs", "runs/run-1/1", "runs/run-1/1/figures"])
def test_local_storage_refuses_a_folder_link_under_its_root(artifact: Path, tmp_path: Path, linked: str) -> None:
    root, outside = tmp_path / "artifacts", tmp_path / "outside"
    outside.mkdir()
    (root / linked).parent.mkdir(parents=True, exist_ok=True)
    (root / linked).symlink_to(outside, target_is_directory=True)
    key = artifact_key("run-1", 1, "figures/loss.png")
    with pytest.raises(StorageError, match=rf"artifact key '{key}': '{Path(linked).name}' in ARTIFACT_DIR is a symbolic link"):
        LocalStorage(root, QUICK).upload(artifact, key)
    assert list(outside.rglob("*")) == [], "nothing written outside ARTIFACT_DIR"


@pytest.mark.parametrize("name", ["loss.png", ".loss.png.partial"])
def test_local_storage_refuses_a_file_link_under_its_root(artifact: Path, tmp_path: Path, name: str) -> None:
    root, outside = tmp_path / "artifacts", tmp_path / "outside.txt"
    outside.write_bytes(b"keep me")
    key = artifact_key("run-1", 1, "figures/loss.png")
    (root / "runs/run-1/1/figures").mkdir(parents=True)
    (root / "runs/run-1/1/figures" / name).symlink_to(outside)
    with pytest.raises(StorageError, match=rf"'{key}': '{name}' in ARTIFACT_DIR is a symbolic link"):
        LocalStorage(root, QUICK).upload(artifact, key)
    assert outside.read_bytes() == b"keep me"


def test_local_storage_still_replaces_a_file_it_stored_before(artifact: Path, tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "artifacts", QUICK)
    key = artifact_key("run-1", 1, "figures/loss.png")
    storage.upload(artifact, key)
    artifact.write_bytes(b"second")
    assert storage.upload(artifact, key).bytes == 6 and storage.path_of(key).read_bytes() == b"second"
    assert sorted(p.name for p in storage.path_of(key).parent.iterdir()) == ["loss.png"], "no partial file left"
