"""What every `manage-runs` command shares: its context (settings, database, `--json`), the
group that turns the project's errors into exit codes, `--json` on every command, and run ids
given by prefix. The exit codes are listed in `ops.cli`."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click
from pymongo.errors import PyMongoError
from rich.console import Console
from rich.text import Text

from ops.terminal import shown
from orchestrator import server_warnings
from orchestrator.db import ensure_indexes, get_db, is_unavailable
from orchestrator.errors import NotFound, SettingsError, TransitionError
from orchestrator.run_ids import RunIdError, resolve_run_id
from orchestrator.serialize import jsonable
from orchestrator.settings import Settings, read_log_format
from telemetry import logs, traces

EXIT_USAGE, EXIT_NOT_FOUND, EXIT_ILLEGAL, EXIT_NO_DATABASE = 2, 3, 4, 5
EXIT_RUN_DID_NOT_FINISH, EXIT_GAVE_UP = 6, 7

#: Commands that show warnings about what the server cannot do (`server_warnings`). Every call of
#: `manage-runs` is a new process, so "once per process" would still print the TTL warning at
#: every `list` or `show` on FerretDB; the long-running processes log it at their start. It is
#: shown where it concerns the operator: `stats` (the system's state) and `migrate` (setting the
#: database up). Elsewhere it is logged at DEBUG.
SERVER_WARNING_COMMANDS = frozenset({"stats", "migrate"})

console = Console()
errors = Console(stderr=True, soft_wrap=True)


class Ctx:
    """One call's settings and database, read when a command first needs them (`token` and
    `pipelines` need no database), and whether it prints JSON."""

    def __init__(self, as_json: bool, *, server_warnings_shown: bool = True):
        self.as_json = as_json
        self.server_warnings_shown = server_warnings_shown
        self._db: Any = None
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = Settings.from_env()
        return self._settings

    @property
    def db(self) -> Any:
        if self._db is None:
            db = get_db(self.settings)
            with server_warnings.at_level(logging.WARNING if self.server_warnings_shown else logging.DEBUG):
                ensure_indexes(db)
            self._db = db
        return self._db

    def out(self, data: Any, human: Callable[[], Any]) -> None:
        if self.as_json:
            click.echo(json.dumps(jsonable(data), indent=2, sort_keys=True))
        else:
            rendered = human()
            if rendered is not None:
                console.print(rendered)


def configure_logging() -> None:
    """A command's output is its tables or its JSON; logging adds warnings and errors only, on
    stderr. As text they are Python's bare last-resort lines, as ever; with LOG_FORMAT=json,
    JSON objects like every other process's. A bad LOG_FORMAT is a usage error (exit 2)."""
    if read_log_format() == "json":
        logs.configure_logging("json", process="cli", level=logging.WARNING)


def fail(message: str, code: int) -> NoReturn:
    """"error: " and the message as one line on stderr, then exit with `code`."""
    stop(Text.assemble(("error:", "red"), " ", shown(message)), code=code)


def stop(*lines: Text, code: int) -> NoReturn:
    """The lines on stderr (the module's `errors` console, looked up now so a test can swap it),
    then exit with `code`."""
    for line in lines:
        errors.print(line)
    sys.exit(code)


def _json_given(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    if value and not ctx.resilient_parsing:
        obj = ctx.find_object(Ctx)
        if obj is not None:
            obj.as_json = True
    return value


JSON_HELP = "Print JSON instead of tables."


def json_option() -> click.Option:
    """`--json` after a command's name: the same switch as before it."""
    return click.Option(["--json"], is_flag=True, expose_value=False, callback=_json_given, help=JSON_HELP)


class Group(click.Group):
    """Gives every command `--json` (so it may follow the command's name as well as precede it),
    and turns the project's errors into one clear line and a meaningful exit code."""

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        if not any("--json" in param.opts for param in cmd.params):
            cmd.params.append(json_option())
        super().add_command(cmd, name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except NotFound as exc:
            fail(str(exc), EXIT_NOT_FOUND)
        except TransitionError as exc:
            fail(str(exc), EXIT_ILLEGAL)
        except (SettingsError, RunIdError) as exc:
            fail(str(exc), EXIT_USAGE)
        except PyMongoError as exc:
            if not is_unavailable(exc):
                raise
            url = Settings.from_env().redacted()["mongodb_url"]
            fail(f"MongoDB at {url} is unreachable ({type(exc).__name__}); check MONGODB_URL and that the server is up",
                 EXIT_NO_DATABASE)


class RunId(click.ParamType):
    """A run's full id or an unambiguous prefix of it (`orchestrator.run_ids`), resolved to the
    full id before the command runs, so every command that takes a run id takes a prefix."""

    name = "RUN"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        obj = ctx.find_object(Ctx) if ctx is not None and not ctx.resilient_parsing else None
        if obj is None:
            return str(value)
        return resolve_run_id(obj.db, str(value))


RUN_ID = RunId()


def exit_at_once(command: click.Command) -> NoReturn:
    """Run a console script's click `command`, then end the process without the interpreter's
    shutdown. At exit pymongo joins its monitor threads, which sleep in steps of 0.5 s, so each
    command that touched the database took up to half a second more after its output (about half
    of `list`'s wall time). Everything a command does is done in its own `finally` blocks before
    click returns; all that is skipped is that wait. Output is flushed first; a closed pipe
    (`manage-runs list | head`) is not an error."""
    try:
        command.main(prog_name="manage-runs")
        code = 0
    except SystemExit as stopped:
        code = _exit_code(stopped.code)
    traces.flush()  # os._exit skips the SDK's own flush at exit
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _exit_code(code: object) -> int:
    """What `SystemExit(code)` would make the exit status: None is 0, a message is printed and is 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1
