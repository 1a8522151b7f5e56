"""An artifact's bytes for a browser: a redirect to a presigned URL of the object store, or the
file itself from the local artifact folder of the embedded demo. Used by the API's download
route and by the console (which also shows images and the paper inline)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

from bson import ObjectId
from flask import redirect, send_file
from pymongo.database import Database
from werkzeug.wrappers import Response

from ingest_app.problem import problem
from ingest_app.state import app_state
from orchestrator import errors

#: Images a browser shows inline. SVG is left out on purpose: it can carry script, and an
#: artifact's bytes come from a pipeline's code.
INLINE_IMAGES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
PDF = "application/pdf"
#: Types served inline (shown in the page or the browser's PDF viewer); anything else is a
#: download, so a pipeline's HTML or SVG never runs as this site's page.
INLINE_TYPES = INLINE_IMAGES | {PDF}


def find_artifact(db: Database, run_id: str, artifact_id: str) -> dict[str, Any]:
    """The artifact by id (string or ObjectId hex), only if it belongs to `run_id`."""
    candidates: list[Any] = [artifact_id]
    if ObjectId.is_valid(artifact_id):
        candidates.append(ObjectId(artifact_id))
    artifact = db.artifacts.find_one({"_id": {"$in": candidates}, "runId": run_id})
    if artifact is None:
        raise errors.NotFound(f"run {run_id!r} has no artifact with id {artifact_id!r}")
    return artifact


def send_artifact(db: Database, run_id: str, artifact_id: str, *, inline: bool) -> Response:
    """The artifact's bytes (or a redirect to them); `inline` only for `INLINE_TYPES`."""
    artifact = find_artifact(db, run_id, artifact_id)
    storage = app_state().storage
    if storage is None:
        return problem(503, "Service Unavailable", "no artifact storage is configured; set MINIO_ENDPOINT or ARTIFACT_DIR")
    url = storage.download_url(artifact["key"])
    if url.startswith("file://"):
        return _send_local(url, artifact, inline=inline)
    return redirect(url, code=302)


def content_type(artifact: dict[str, Any]) -> str:
    """The artifact's media type without parameters, lower case ("" when it has none)."""
    return str(artifact.get("contentType") or "").split(";")[0].strip().lower()


def _local_file(url: str, root: str) -> Path | None:
    """The path a file:// URL names, if it lies inside ARTIFACT_DIR; an artifact key is written by
    a worker, and a key such as '../../etc/passwd' must not turn this route into a file server."""
    path = Path(url2pathname(urlsplit(url).path)).resolve()
    return path if path.is_relative_to(Path(root).resolve()) else None


def _send_local(url: str, artifact: dict[str, Any], *, inline: bool) -> Response:
    path = _local_file(url, app_state().settings.artifact_dir)
    if path is None:
        return problem(403, "Forbidden", f"artifact key {artifact['key']!r} points outside ARTIFACT_DIR")
    if not path.is_file():
        raise errors.NotFound(f"artifact {artifact['key']!r} is registered but its file is missing")
    shown_inline = inline and content_type(artifact) in INLINE_TYPES
    response = send_file(
        path, mimetype=(content_type(artifact) or None) if shown_inline else (artifact.get("contentType") or None),
        as_attachment=not shown_inline, download_name=Path(artifact["key"]).name or "artifact",
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
