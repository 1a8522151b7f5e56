"""The pod runtime: what runs one attempt on a GPU pod, free of Celery.

`attempt` claims and runs it, `heartbeat` renews the lease and watches for a cancel, `context`
turns a step's reports into events, `emitter` and `spool` deliver them, `gpu` reads telemetry,
and `runtime` holds what a worker process keeps across tasks.
"""
