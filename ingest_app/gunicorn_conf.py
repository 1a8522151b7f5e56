"""gunicorn's configuration for the ingest app (Procfile: `gunicorn -c python:ingest_app.gunicorn_conf`).

gunicorn builds the app in each worker after the master has bound the port. A bad setting there
printed a traceback per worker and exited with gunicorn's "worker failed to boot" status (3),
and a worker ended with any other status is simply started again. So the master checks the
settings first, before it binds: a bad one is one line on stderr and exit status 2, as for
every other process (`orchestrator.startup`).
"""

from __future__ import annotations

from typing import Any

from ingest_app import require_credential
from ingest_app.auth import make_verifier
from orchestrator.errors import SettingsError
from orchestrator.startup import exit_bad_setting, settings_or_exit


def on_starting(server: Any) -> None:
    """gunicorn's hook in the master, before it binds and forks: the checks `create_app` makes
    of the settings, without connecting to anything."""
    settings = settings_or_exit()
    try:
        require_credential(settings)
        make_verifier(settings)  # a webhook secret too short or malformed
    except SettingsError as exc:
        exit_bad_setting(exc)
