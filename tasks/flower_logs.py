"""`celery -A tasks flower` with LOG_FORMAT=json writes JSON lines, as every other process does.

Flower sets its logging up through tornado's command-line options: `enable_pretty_logging` sets
the root level from `--logging` and adds tornado's own stderr handler only to a root logger that
has none. So when the Celery command line loads this app to run its `flower` subcommand, the
root logger gets our JSON handler first; Flower's level option still applies. Any other use of
the app (a worker, the dispatcher, a test) is left alone. A bad LOG_FORMAT stops Flower with one
line naming it, as it stops every other process.
"""

from __future__ import annotations

import click

from orchestrator.errors import SettingsError
from orchestrator.settings import read_log_format
from orchestrator.startup import exit_bad_setting
from telemetry import logs


def json_logs_for_flower() -> None:
    """Called as the app is loaded; acts only under `celery ... flower` with LOG_FORMAT=json."""
    context = click.get_current_context(silent=True)
    if context is None or context.invoked_subcommand != "flower":
        return
    try:
        log_format = read_log_format()
    except SettingsError as exc:
        exit_bad_setting(exc)
    if log_format == "json":
        logs.configure_logging("json", process="flower")
