"""Per-process telemetry set-up: what each process (ingest, dispatcher, worker, cli) calls once at
start, after any fork, so the core can stay on the OpenTelemetry API alone.

- `telemetry.traces`: the OpenTelemetry SDK, the OTLP exporter and the instrumentations.
- `telemetry.logs`: log records to stderr, human-readable or one JSON object a line.
"""
