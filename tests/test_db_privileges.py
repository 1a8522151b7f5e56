"""A database user that may not create indexes (docs/security.md: only the bootstrap user may)
still starts when the indexes exist, and is told what to run when one does not."""

from __future__ import annotations

from typing import Any

import mongomock
import pytest
from pymongo.errors import OperationFailure

from orchestrator.db import UNAUTHORIZED, ensure_indexes


def _unauthorized(*_: Any, **__: Any) -> Any:
    raise OperationFailure("not authorized on ai_scientist to execute command { createIndexes: ... }", UNAUTHORIZED)


def test_a_user_without_create_index_starts_when_every_index_exists(monkeypatch: Any) -> None:
    db = mongomock.MongoClient(tz_aware=True)["privileges"]
    ensure_indexes(db)  # the bootstrap user, once
    monkeypatch.setattr(mongomock.collection.Collection, "create_indexes", _unauthorized)
    assert ensure_indexes(db) == []


def test_a_missing_index_the_user_may_not_create_is_an_error_naming_it_and_the_fix(monkeypatch: Any) -> None:
    db = mongomock.MongoClient(tz_aware=True)["privileges_fresh"]
    monkeypatch.setattr(mongomock.collection.Collection, "create_indexes", _unauthorized)
    with pytest.raises(OperationFailure) as caught:
        ensure_indexes(db)
    assert caught.value.code == UNAUTHORIZED
    assert "manage-runs migrate" in str(caught.value) and "creating index" in str(caught.value)
