"""How a process's entry point reads its settings: a bad one ends the process at once with one
line on stderr and exit status 2, never a traceback.

A traceback buries the one line that matters (which variable, what is wrong, how to fix it) and
looks like a bug to whoever reads the pod log; status 2 is a usage error, as `manage-runs` uses
it. `SettingsError` messages name the variable and never contain a secret (`orchestrator.settings`).
"""

from __future__ import annotations

import sys
from typing import NoReturn

from orchestrator.errors import SettingsError
from orchestrator.settings import Settings

#: The exit status of a process stopped by a bad setting.
EXIT_BAD_SETTING = 2


def settings_or_exit() -> Settings:
    """`Settings.from_env()`, or the process ends with `exit_bad_setting`."""
    try:
        return Settings.from_env()
    except SettingsError as exc:
        exit_bad_setting(exc)


def exit_bad_setting(exc: SettingsError) -> NoReturn:
    """Print `error: <message>` as one line on stderr and exit with status 2."""
    message = " ".join(str(exc).split())  # one line, whatever the message holds
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(EXIT_BAD_SETTING)
