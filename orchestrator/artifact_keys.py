"""Artifact keys: where a run's files live in the bucket (or the artifact folder).

`runs/{run_id}/{attempt}/{relative path}`: the one builder, used by the worker's context, the
pipeline's recording context and the tests. Kept apart from `orchestrator.storage` so code that
only names keys (the pipeline package) loads no S3 client.
"""

from __future__ import annotations

import os
from pathlib import Path

from orchestrator.errors import StorageError


def artifact_key(run_id: str, attempt: int, relative_path: str | os.PathLike[str]) -> str:
    """`runs/{run_id}/{attempt}/{relative path}`, with the path in POSIX form."""
    relative = Path(relative_path).as_posix()  # pathlib drops "." segments and doubled slashes
    return check_key(f"runs/{run_id}/{attempt}/{relative}")


def check_key(key: str) -> str:
    """Refuse keys that would escape the bucket or the artifact directory, or are not canonical."""
    parts = key.split("/")
    if not key or key.startswith("/") or "\\" in key or any(p in ("", ".", "..") for p in parts):
        raise StorageError(
            f"artifact key {key!r} is not a relative path of plain segments "
            "(no leading '/', no '.', '..' or empty segments, no backslashes)"
        )
    return key
