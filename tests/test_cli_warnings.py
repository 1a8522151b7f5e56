"""Warnings about what the server cannot do are said once per process, through one helper, and
`manage-runs` shows them only where they concern the operator (`stats`, `migrate`)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import mongomock
import pytest
from click.testing import CliRunner

from ops.cli import main
from ops.cli_core import SERVER_WARNING_COMMANDS
from orchestrator import db as dbmod
from orchestrator import server_warnings

TTL = "cannot expire events_seen"


@pytest.fixture(autouse=True)
def fresh_process() -> Iterator[None]:
    server_warnings.forget()
    yield
    server_warnings.forget()


@pytest.fixture
def no_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that refuses TTL indexes, as FerretDB v1 does."""
    def refused() -> None:
        raise NotImplementedError("TTL indexes are not supported")
    monkeypatch.setattr(dbmod, "_ttl_index", refused)


def _said(caplog: pytest.LogCaptureFixture, text: str, level: int = logging.WARNING) -> int:
    return sum(1 for r in caplog.records if text in r.getMessage() and r.levelno == level)


def test_warn_once_says_a_warning_once_per_process(caplog):
    caplog.set_level(logging.DEBUG)
    assert server_warnings.warn_once("k", "the server lacks k")
    assert not server_warnings.warn_once("k", "the server lacks k")
    assert _said(caplog, "the server lacks k") == 1


def test_a_lowered_warning_is_not_counted_as_said(caplog):
    caplog.set_level(logging.DEBUG)
    with server_warnings.at_level(logging.DEBUG):
        assert server_warnings.warn_once("k", "the server lacks k")
    assert _said(caplog, "the server lacks k", logging.DEBUG) == 1
    assert server_warnings.warn_once("k", "the server lacks k"), "a later part that wants it still gets it once"
    assert not server_warnings.warn_once("k", "the server lacks k")
    assert _said(caplog, "the server lacks k") == 1


def test_ensure_indexes_returns_the_warning_each_time_and_logs_it_once(no_ttl, caplog):
    database = mongomock.MongoClient(tz_aware=True)["warn"]
    first, second = dbmod.ensure_indexes(database), dbmod.ensure_indexes(database)
    assert len(first) == 1 and TTL in first[0] and second == first
    assert _said(caplog, TTL) == 1


def test_two_stats_calls_in_one_process_warn_once(cli_db, no_ttl, caplog):
    for _ in range(2):
        assert CliRunner().invoke(main, ["stats"]).exit_code == 0
    assert _said(caplog, TTL) == 1


@pytest.mark.parametrize("command", ["list", "pipelines", "prune-seen", "sweep"])
def test_everyday_commands_do_not_nag(cli_db, no_ttl, caplog, command):
    caplog.set_level(logging.DEBUG)
    assert CliRunner().invoke(main, [command]).exit_code == 0
    assert _said(caplog, TTL) == 0, f"{command} warned"
    needs_the_database = command != "pipelines"
    assert _said(caplog, TTL, logging.DEBUG) == int(needs_the_database), "logged for whoever turns DEBUG on"
    assert CliRunner().invoke(main, ["--json", "stats"]).exit_code == 0
    assert _said(caplog, TTL) == 1, "stats, later in the same process, still warns"


def test_the_commands_that_warn_exist():
    assert SERVER_WARNING_COMMANDS <= set(main.commands)
