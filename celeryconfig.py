"""Celery settings for hours-long GPU runs on kombu's MongoDB transport.

Read by `tasks/celery.py` (`app.config_from_object("celeryconfig")`). Values that depend on
the deployment come from the environment through `orchestrator.settings`.

Why these settings (docs/architecture.md, "The broker is not the record", says more):
- The broker is not the record of a run. kombu's MongoDB transport deletes a message when a
  worker fetches it; a SIGKILLed pod loses it whatever we set. The run document, its claim with
  a lease, and the sweeper make runs crash-safe; these settings only narrow the window.
- No result backend: the run document is the record, and Celery's MongoDB backend would grow
  forever (it has no expiry). `task_ignore_result` keeps Celery from trying to store results.
"""

from orchestrator.settings import DEFAULT_PRIORITY, DEFAULT_QUEUE
from orchestrator.startup import settings_or_exit

#: A bad setting stops `celery -A tasks worker` here with one line and status 2, not a traceback.
_settings = settings_or_exit()

#: MongoDB is the broker: kombu's transport, same database as the state (collections
#: `messages`, `messages.routing`, `messages.broadcast`). mongomock:// is the embedded demo.
broker_url = _settings.broker_url
#: kombu's MongoDB transport, except that it takes no message once the worker is stopping: the
#: stock one keeps an idle worker polling 2-4 s after SIGTERM (Celery's loop for a polling
#: transport reads the stop flag only every 2 s), past honcho's 5 s before SIGKILL with the rest
#: of the shutdown. `tasks/broker.py` says more. The embedded `mongomock://` transport
#: (`tasks/embedded_broker.py`, chosen by the URL's scheme) does the same.
broker_transport = None if _settings.embedded else "tasks.broker:Transport"
broker_connection_retry_on_startup = True
broker_transport_options = {
    # Seconds between polls of an empty queue, one find-and-delete each: BROKER_POLLING_INTERVAL_S,
    # 0.5 s by default, chosen for 100 pods in BENCHMARKS.md ("Idle load"): 0.1 s made polls 91%
    # of an idle pod's 11 commands/s; 1 s would save little more and double the longest wait.
    "polling_interval": _settings.broker_polling_interval_s,
    # Fail a connect in seconds (server selection is bounded in `broker_url` itself).
    "connect_timeout": _settings.mongodb_timeout_s,
    # No "ttl": kombu would create TTL indexes, which FerretDB refuses at connect time.
}

result_backend = None
task_ignore_result = True

#: GPU work goes to the `gpu` queue only; the dispatcher also names the run's queue explicitly.
task_routes = {"tasks.run_experiment": {"queue": DEFAULT_QUEUE}}
task_default_queue = "default"
task_queue_max_priority = 9
task_default_priority = DEFAULT_PRIORITY

#: Acknowledge after the run, so a clean shutdown or a killed pool child puts the message back;
#: with prefetch 1 a killed worker loses only the running task (the sweeper recovers that run).
task_acks_late = True
task_reject_on_worker_lost = True
#: Reconnect the consumer on a channel error too, not only on a connection error. kombu's MongoDB
#: transport counts pymongo's OperationFailure as a channel error, and FerretDB answers every
#: command with one (InternalError) while the PostgreSQL behind it is down: without this the
#: worker's main process exits with "Unrecoverable error" at the first outage (seen).
broker_channel_error_retry = True
worker_prefetch_multiplier = 1
#: One run at a time per pod (one GPU); a fresh child per run frees GPU memory held by a library.
worker_concurrency = 1
worker_max_tasks_per_child = 1
#: The longest the worker's timer thread sleeps (Celery's default is 1 s). A warm shutdown waits
#: for that thread to wake (`Timer.stop`, celery/utils/timer2.py), then at exit for billiard's
#: timeout-handler thread, which sleeps 1 s between checks; both began their 1 s sleeps at start-up
#: together, so the second wait is most of a second whatever the first was (measured: 0.53 s +
#: 0.92 s). At 0.25 s the timer's wait is gone and an idle worker stopped in 1.7-2.1 s instead of
#: 2.8-3.2 s, for 4 wake-ups a second of one thread (at DEBUG, 4 "Timer wake-up" lines). No task
#: here uses eta/countdown, the schedule this setting was made for.
worker_timer_precision = 0.25

#: Task events, so `celery events` and Flower's task view show runs as they start and end.
#: They ride a topic exchange (plain `messages` documents) and work on FerretDB; remote control
#: (`celery inspect`/`control`, Flower's worker details and buttons) rides the fanout exchange and
#: gets no reply there, whatever is set here. `event_queue_ttl`/`event_queue_expires` are no-ops
#: without kombu's `ttl` option, so a stopped Flower's `celeryev.*` queue is never expired.
#: See docs/operations.md and tests/test_flower_realserver.py.
worker_send_task_events = True
task_send_sent_event = True

task_serializer = "json"
accept_content = ["json"]
#: GPU runs are never scheduled with eta/countdown: those messages live in worker memory and
#: die with it. The dispatcher's `notBefore` on the run document does that job instead.
timezone = "UTC"
enable_utc = True
worker_hijack_root_logger = False
