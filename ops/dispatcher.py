"""`orchestrator-dispatcher`: the core's dispatcher loop and sweeper, sending through Celery,
and, when NOTIFY_URL is set, the run notifier (`orchestrator.notify`) in a thread of its own, so
a slow receiver never holds up a dispatch. SIGTERM or SIGINT stops both.

The Procfile's `dispatcher` process. It loads neither the pipeline nor the web stack: the task is
sent by name (`tasks.sender`).
"""

from __future__ import annotations

import logging
import signal
import threading

from prometheus_client import start_http_server
from pymongo.database import Database

from orchestrator.db import ensure_indexes, get_db, probe_features
from orchestrator.dispatcher import Dispatcher
from orchestrator.notify import Notifier
from orchestrator.settings import Settings
from orchestrator.startup import settings_or_exit
from orchestrator.sweeper import Sweeper
from tasks.sender import celery_sender
from telemetry import logs, traces

log = logging.getLogger(__name__)


def main() -> None:
    """Run until SIGTERM or SIGINT."""
    settings = settings_or_exit()  # a bad setting: one line, exit status 2
    logs.configure_logging(settings.log_format, process="dispatcher")
    traces.configure("dispatcher")  # before the first MongoClient, which the pymongo instrumentation must see
    db = get_db(settings)
    ensure_indexes(db)
    features = probe_features(db)
    log.info("database: %s %s (%s)", features.name, features.version,
             "change streams" if features.change_streams else "no change streams: sweeping")
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.bind_host)  # BIND_HOST: this machine unless told
        log.info("Prometheus metrics on %s:%d/metrics", settings.bind_host, settings.metrics_port)
    sweeper = Sweeper(db, settings, celery_sender)
    dispatcher = Dispatcher(db, celery_sender, interval_s=settings.dispatch_interval_s,
                            use_change_stream=features.change_streams, sweep=sweeper,
                            sweep_every_s=settings.sweep_interval_s, on_database_error=sweeper.disconnected,
                            connected_for=sweeper.connected_for)
    notifier = start_notifier(db, settings, dispatcher.stopping)
    signal.signal(signal.SIGTERM, dispatcher.stop)
    signal.signal(signal.SIGINT, dispatcher.stop)
    dispatcher.run_forever()
    if notifier is not None:
        notifier.join(timeout=10)  # at most the POST under way (its timeout is 5 s)


def start_notifier(db: Database, settings: Settings, stop: threading.Event) -> threading.Thread | None:
    """The notifier's thread, passing every SWEEP_INTERVAL_S until `stop` is set (the
    dispatcher's own stop event); None when NOTIFY_URL is not set."""
    if not settings.notify_url:
        return None
    notifier = Notifier(db, settings)
    thread = threading.Thread(target=notifier.run_forever, args=(stop, settings.sweep_interval_s), name="notifier",
                              daemon=True)
    thread.start()
    return thread


if __name__ == "__main__":
    main()
