"""Log records on stderr, for people (`LOG_FORMAT=text`, the default) or as one JSON object a
line (`LOG_FORMAT=json`) for a log collector: the one place that decides what a log line holds.

Every line names the run (and attempt) the thread works on and, in JSON, the trace and span it
is in, so one run can be followed across ingest, dispatcher, worker and CLI by `run_id` or by
`trace_id` (docs/operations.md, "JSON logs"). The run comes from `orchestrator.tracing`'s
`current_run`, the trace from the current OpenTelemetry span (a run's stored trace context is
made current even where no SDK records spans); `extra={"run_id": ...}` on a call names them for
code outside the run's scope.

A process that owns its logging calls `configure_logging`; where a host installs its own handlers
(Celery, gunicorn) they format JSON (`use_json`), or keep the host's text with the run at the end
(`use_run_suffix`).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from opentelemetry import trace

from orchestrator.tracing import current_run

#: The context fields a record may carry, in the order a JSON line shows them.
CONTEXT_KEYS = ("run_id", "attempt", "trace_id", "span_id")
#: The text format of a process that names none (the dispatcher's, since its first version).
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(log_format: str, *, process: str, level: int = logging.INFO,
                      text_format: str = TEXT_FORMAT) -> None:
    """For a process that owns its logging (the dispatcher, `manage-runs`): one stderr handler on
    the root logger, at `level`. Like `logging.basicConfig`, nothing changes when the root logger
    already has a handler: the host (pytest, an embedding program) decides then."""
    logging.basicConfig(level=level, handlers=[stderr_handler(log_format, process=process, text_format=text_format)])


def stderr_handler(log_format: str, *, process: str, text_format: str = TEXT_FORMAT) -> logging.Handler:
    """A handler writing to stderr, formatted as `log_format` (a LOG_FORMAT value) says."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format, process=process, text_format=text_format))
    return handler


def formatter(log_format: str, *, process: str, text_format: str = TEXT_FORMAT) -> logging.Formatter:
    """`JsonFormatter` for "json", else `TextFormatter` with `text_format`."""
    return JsonFormatter(process) if log_format == "json" else TextFormatter(text_format)


def use_json(logger: logging.Logger, *, process: str) -> None:
    """Every handler a host put on `logger` formats JSON from now on (Celery's, gunicorn's)."""
    for handler in logger.handlers:
        handler.setFormatter(JsonFormatter(process))


def use_run_suffix(handler: logging.Handler) -> None:
    """A host's handler (Celery's) keeps its own format and ends a run's lines in
    ` run=<id>/<attempt>`, as `TextFormatter` does."""
    if not isinstance(handler.formatter, RunSuffixed):
        handler.setFormatter(RunSuffixed(handler.formatter or logging.Formatter()))


def run_suffix(record: logging.LogRecord) -> str:
    """` run=<id>/<attempt>` when the record belongs to a run, else nothing."""
    context = context_of(record)
    if "run_id" not in context:
        return ""
    attempt = f"/{context['attempt']}" if "attempt" in context else ""
    return f" run={context['run_id']}{attempt}"


class TextFormatter(logging.Formatter):
    """`fmt`, then ` run=<id>/<attempt>` when the record belongs to a run: the text a person
    reads, with the one field they need to tell concurrent runs apart."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return super().formatMessage(record) + run_suffix(record)


class RunSuffixed(logging.Formatter):
    """A host's formatter, whatever it is, with the run suffix at the end of the record's first
    line (before any traceback), where a grep for the run finds it."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        line = self.inner.format(record)
        suffix = run_suffix(record)
        if not suffix:
            return line
        first, newline, rest = line.partition("\n")
        return first + suffix + newline + rest


class JsonFormatter(logging.Formatter):
    """One JSON object, on one line, per record: `time` (RFC 3339, UTC, milliseconds), `level`,
    `logger`, `message`, `process` (the role: ingest, dispatcher, worker, flower, cli), `pid`,
    `thread` (but the main one), `run_id`, `attempt`, `trace_id`, `span_id` when known,
    `exception` and `stack` when the record has them. A record whose arguments do not fit its message, or that
    holds values JSON cannot encode, still gives a line: a log call never fails."""

    def __init__(self, process: str | None = None) -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(self.fields(record), default=_text)

    def fields(self, record: logging.LogRecord) -> dict[str, Any]:
        fields: dict[str, Any] = {"time": rfc3339_ms(record.created), "level": record.levelname,
                                  "logger": record.name, "message": _message(record)}
        if self.process:
            fields["process"] = self.process
        fields["pid"] = record.process
        if record.threadName and record.threadName != "MainThread":
            fields["thread"] = record.threadName
        fields.update(context_of(record))
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            fields["exception"] = record.exc_text
        if record.stack_info:
            fields["stack"] = self.formatStack(record.stack_info)
        return fields


def context_of(record: logging.LogRecord) -> dict[str, Any]:
    """run_id and attempt, trace_id and span_id, of those known. Each pair comes from one source:
    the record's `extra=` when it names the first of the pair, else the thread's run and span."""
    given = record.__dict__
    found: dict[str, Any] = {}
    if given.get("run_id") is not None:
        found.update(run_id=given["run_id"], attempt=given.get("attempt"))
    elif (run := current_run()) is not None:
        found.update(run_id=run[0], attempt=run[1])
    if given.get("trace_id") is not None:
        found.update(trace_id=given["trace_id"], span_id=given.get("span_id"))
    else:
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            found.update(trace_id=f"{span.trace_id:032x}", span_id=f"{span.span_id:016x}")
    return {key: _plain(found[key]) for key in CONTEXT_KEYS if found.get(key) is not None}


def rfc3339_ms(created: float) -> str:
    """A record's time as 2026-12-03T10:00:00.123Z: UTC, milliseconds, sortable as text."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created * 1000) % 1000:03d}Z"


def _message(record: logging.LogRecord) -> str:
    """The message with its arguments, or, when they do not fit it, the message and the
    arguments as given: the line is still written, and shows what the call passed."""
    try:
        return record.getMessage()
    except Exception as exc:  # noqa: BLE001 - any failure of a caller's args or __str__
        return f"{_text(record.msg)} (arguments {_text(record.args)} did not fit: {type(exc).__name__})"


def _plain(value: Any) -> Any:
    """A context value as JSON holds it: an attempt is a number, anything else text."""
    return value if isinstance(value, int) and not isinstance(value, bool) else _text(value)


def _text(value: Any) -> str:
    """`str(value)`, or its type's name when even that fails."""
    try:
        return str(value)
    except Exception:  # noqa: BLE001 - a broken __str__ must not break logging
        return f"<{type(value).__name__}>"
