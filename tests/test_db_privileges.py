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


def test_ferretdb_on_sqlite_is_recognised_by_its_plan_and_warned_of() -> None:
    """FerretDB names its backend only in `explain`: SQLite's plan is a list of lines."""
    from orchestrator import db as dbmod

    class Server:
        def __init__(self, plan: object) -> None:
            self.plan = plan
            self.admin = self

        def command(self, name: object, *args: object, **kwargs: object) -> dict[str, object]:
            if name == "buildInfo":
                return {"version": "7.0.42", "ferretdbVersion": "v1.24.2"}
            return {"queryPlanner": {"Plan": self.plan}}

    class Db:
        def __init__(self, plan: object) -> None:
            self.client = Server(plan)

        def command(self, *args: object, **kwargs: object) -> dict[str, object]:
            return self.client.command(*args, **kwargs)

    assert dbmod.ferretdb_backend(Db(["id=2 parent=0 notused=0 detail=SCAN t"])) == "sqlite"  # type: ignore[arg-type]
    assert dbmod.ferretdb_backend(Db({"Node Type": "Seq Scan"})) == "postgresql"  # type: ignore[arg-type]
