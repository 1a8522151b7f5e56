"""gunicorn's configuration for the ingest app (Procfile: `gunicorn -c python:ingest_app.gunicorn_conf`).

Where it listens: BIND_HOST:WEB_PORT from the settings (127.0.0.1:8000 by default, where
INGEST_URL's default points), never the PORT that honcho hands each process (5000 to the first,
5100 to the next...) and that gunicorn itself would bind on every interface. A `--bind` on the
command line still wins.

gunicorn builds the app in each worker after the master has bound the port. A bad setting there
printed a traceback per worker and exited with gunicorn's "worker failed to boot" status (3),
and a worker ended with any other status is simply started again. So the master checks the
settings first, before it binds: a bad one is one line on stderr and exit status 2, as for
every other process (`orchestrator.startup`).

With PROMETHEUS_MULTIPROC_DIR set (the Procfile makes the directory and sets it for this process
alone: it must exist before `ingest_app` is imported, whose modules create metrics at import),
the master removes the files an earlier run left there, so its counts are not added in, and
marks each dead worker for the library (`ingest_app.metrics` has why).

gunicorn's own logs (its error log: the master starting, workers booting and dying; the access
log, when --access-logfile asks for one) stay where gunicorn writes them, formatted as LOG_FORMAT
says (`Logger`): with `json`, every line the web process writes is one JSON object.
"""

from __future__ import annotations

import glob
import os
import re
from typing import Any

from gunicorn.glogging import Logger as GunicornLogger
from prometheus_client import multiprocess

from ingest_app import require_credential
from ingest_app.auth import make_verifier
from ingest_app.metrics import multiprocess_dir
from orchestrator.errors import SettingsError
from orchestrator.startup import exit_bad_setting, settings_or_exit
from telemetry import logs

#: Read when gunicorn loads this file, in the master: a bad value ends the master here, in one
#: line with status 2.
_settings = settings_or_exit()
#: BIND_HOST:WEB_PORT.
bind = [_settings.bind_address]


class Logger(GunicornLogger):
    """gunicorn's logger, its handlers and their destinations unchanged; with LOG_FORMAT=json
    their lines are JSON objects like the app's (`telemetry.logs`). `setup` runs again at a
    reload (SIGHUP), which makes new handlers: they get the formatter again."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        if _settings.log_format == "json":
            for logger in (self.error_log, self.access_log):
                logs.use_json(logger, process="ingest")


logger_class = Logger


def on_starting(server: Any) -> None:
    """gunicorn's hook in the master, before it binds and forks: the checks `create_app` makes
    of the settings, without connecting to anything; then the metrics directory emptied."""
    try:
        require_credential(_settings)
        make_verifier(_settings)  # a webhook secret too short or malformed
    except SettingsError as exc:
        exit_bad_setting(exc)
    remove_stale_metrics()


def child_exit(server: Any, worker: Any) -> None:
    """A worker is gone: its live gauges must no longer count (its counters still do)."""
    path = multiprocess_dir()
    if path is not None:
        multiprocess.mark_process_dead(worker.pid, path)


def remove_stale_metrics() -> None:
    """Remove every file of PROMETHEUS_MULTIPROC_DIR but this master's own (made when the app's
    modules were imported): what is left there is an earlier run's."""
    path = multiprocess_dir()
    if path is None:
        return
    for stale in glob.glob(os.path.join(path, "*.db")):
        found = re.search(r"_(\d+)\.db$", stale)
        if found is None or int(found.group(1)) != os.getpid():
            os.remove(stale)
