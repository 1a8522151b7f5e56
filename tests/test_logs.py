"""Log lines (`telemetry.logs`): the JSON object's fields, with and without a run and a span,
exceptions and arguments that do not fit, the text format's run suffix, and LOG_FORMAT's
check. The processes themselves are started with LOG_FORMAT=json in test_logs_processes.py."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from orchestrator import tracing
from orchestrator.errors import SettingsError
from orchestrator.settings import Settings, read_log_format
from telemetry import logs

TRACE_ID, SPAN_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger of its own writing JSON lines into a buffer."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter("worker"))
    logger = logging.getLogger("tests.logs.json")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict]:
    text = stream.getvalue()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def a_span() -> NonRecordingSpan:
    return NonRecordingSpan(SpanContext(TRACE_ID, SPAN_ID, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED)))


def test_a_line_outside_any_run_has_time_level_logger_message_and_process(logged) -> None:
    logger, stream = logged
    logger.info("dispatched %d runs to %s", 3, "gpu")
    [line] = lines(stream)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"]), line["time"]
    assert {k: line[k] for k in ("level", "logger", "message", "process")} == {
        "level": "INFO", "logger": "tests.logs.json", "message": "dispatched 3 runs to gpu", "process": "worker"}
    assert isinstance(line["pid"], int) and "thread" not in line
    assert not set(line) & {"run_id", "attempt", "trace_id", "span_id", "exception", "stack"}


def test_the_time_is_utc_with_milliseconds() -> None:
    assert logs.rfc3339_ms(1796292000.1234) == "2026-12-03T10:00:00.123Z"
    assert logs.rfc3339_ms(0.9996) == "1970-01-01T00:00:00.999Z"


def test_inside_a_run_scope_and_a_span_the_line_names_the_run_attempt_trace_and_span(logged) -> None:
    logger, stream = logged
    with trace.use_span(a_span()), tracing.run_scope("run-1", 2):
        logger.warning("step slow")
    with tracing.run_scope("run-2", None):
        logger.warning("before the first attempt")
    [inside, no_attempt] = lines(stream)
    assert (inside["run_id"], inside["attempt"]) == ("run-1", 2)
    assert (inside["trace_id"], inside["span_id"]) == ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
    assert no_attempt["run_id"] == "run-2" and "attempt" not in no_attempt and "trace_id" not in no_attempt


def test_run_span_without_an_sdk_still_gives_the_stored_trace_its_id(logged) -> None:
    logger, stream = logged
    traceparent = f"00-{TRACE_ID:032x}-{SPAN_ID:016x}-01"
    with tracing.run_span("attempt", "run-3", traceparent, attempt=1):
        logger.info("claimed")
    [line] = lines(stream)
    assert (line["run_id"], line["attempt"], line["trace_id"]) == ("run-3", 1, f"{TRACE_ID:032x}")
    assert re.fullmatch(r"[0-9a-f]{16}", line["span_id"])


def test_extra_names_the_run_and_trace_for_code_outside_their_scope(logged) -> None:
    logger, stream = logged
    with trace.use_span(a_span()), tracing.run_scope("current", 9):
        logger.info("for another run", extra={"run_id": "given", "attempt": 4, "trace_id": "ab" * 16, "span_id": "cd" * 8})
        logger.info("run only", extra={"run_id": "given"})
    given, run_only = lines(stream)
    assert [given[k] for k in logs.CONTEXT_KEYS] == ["given", 4, "ab" * 16, "cd" * 8]
    assert run_only["run_id"] == "given" and "attempt" not in run_only, "the attempt of another run is not borrowed"
    assert run_only["trace_id"] == f"{TRACE_ID:032x}"


def test_exceptions_and_stacks_are_fields_and_the_line_stays_one_line(logged) -> None:
    logger, stream = logged
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        logger.exception("step failed:\n%s", "two lines")
    logger.info("where", stack_info=True)
    failed, where = lines(stream)
    assert failed["message"] == "step failed:\ntwo lines" and failed["level"] == "ERROR"
    assert failed["exception"].startswith("Traceback") and "ValueError: bad\nvalue" in failed["exception"]
    assert where["stack"].startswith("Stack (most recent call last)")


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no")

    __repr__ = __str__


def formatted(msg: str, *args: object, extra: dict | None = None) -> dict:
    """The JSON line of a record, made without a logger: pytest's own handlers would choke on
    the records this test makes."""
    record = logging.getLogger("odd").makeRecord("odd", logging.INFO, __file__, 1, msg, args, None, extra=extra)
    line = logs.JsonFormatter().format(record)
    assert "\n" not in line
    return json.loads(line)


def test_odd_arguments_and_values_never_break_a_line() -> None:
    mismatched = formatted("%d events", "many")
    assert mismatched["message"].startswith("%d events (arguments ('many',) did not fit: TypeError")
    unprintable = formatted("one %s", Unprintable())
    assert unprintable["message"].startswith("one %s (arguments") and "<tuple>" in unprintable["message"]
    assert formatted("no placeholder", "extra arg")["message"].startswith("no placeholder (arguments")
    assert formatted("object %s", object)["message"] == "object <class 'object'>"
    odd = formatted("odd context", extra={"run_id": Unprintable(), "attempt": {"a": 1}, "trace_id": b"\x00"})
    assert (odd["run_id"], odd["attempt"], odd["trace_id"]) == ("<Unprintable>", "{'a': 1}", "b'\\x00'")
    assert formatted("%s", {"set": {1}})["message"] == "{'set': {1}}"


def test_a_thread_other_than_the_main_one_is_named(logged) -> None:
    import threading

    logger, stream = logged
    thread = threading.Thread(target=logger.info, args=("beat",), name="heartbeat-x")
    thread.start()
    thread.join()
    assert lines(stream)[0]["thread"] == "heartbeat-x"


def test_the_text_format_ends_a_run_s_lines_with_its_id_and_attempt() -> None:
    formatter = logs.TextFormatter("%(levelname)s %(name)s: %(message)s")
    record = logging.LogRecord("ops.demo", logging.WARNING, __file__, 1, "slow %s", ("step",), None)
    assert formatter.format(record) == "WARNING ops.demo: slow step"
    with tracing.run_scope("run-1", 2):
        assert formatter.format(record) == "WARNING ops.demo: slow step run=run-1/2"
    with tracing.run_scope("run-1", None):
        assert formatter.format(record) == "WARNING ops.demo: slow step run=run-1"
    try:
        raise KeyError("k")
    except KeyError:
        record.exc_info = sys.exc_info()
    with tracing.run_scope("run-1", 2):
        first, *rest = formatter.format(record).splitlines()
    assert first == "WARNING ops.demo: slow step run=run-1/2" and rest[0].startswith("Traceback"), "the id before the traceback"


def test_formatter_follows_log_format() -> None:
    assert isinstance(logs.formatter("json", process="cli"), logs.JsonFormatter)
    assert type(logs.formatter("text", process="cli")) is logs.TextFormatter


def test_use_json_reformats_the_handlers_a_host_installed() -> None:
    logger = logging.getLogger("tests.logs.host")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("[%(levelname)s] %(message)s"))
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logs.use_json(logger, process="worker")
        logger.warning("ready")
    finally:
        logger.removeHandler(handler)
    assert json.loads(stream.getvalue())["message"] == "ready"


def test_celery_s_own_lines_end_in_the_run_in_the_text_format() -> None:
    """The worker's text lines stay Celery's (its TaskFormatter: task name and id), a run's lines
    ending in its id and attempt before any traceback; wrapping twice adds one suffix."""
    from celery.app.log import TaskFormatter

    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(TaskFormatter("%(levelname)s %(task_name)s[%(task_id)s]: %(message)s", use_color=False))
    logs.use_run_suffix(handler)
    logs.use_run_suffix(handler)
    record = logging.LogRecord("tasks.pod.attempt", logging.WARNING, __file__, 1, "slow %s", ("step",), None)
    assert handler.format(record) == "WARNING ???[???]: slow step"
    with tracing.run_scope("run-1", 2):
        assert handler.format(record) == "WARNING ???[???]: slow step run=run-1/2"
        try:
            raise KeyError("k")
        except KeyError:
            record.exc_info = sys.exc_info()
        first, *rest = handler.format(record).splitlines()
    assert first == "WARNING ???[???]: slow step run=run-1/2" and rest[0].startswith("Traceback")


def test_the_worker_s_hook_formats_celery_s_handlers_only(monkeypatch) -> None:
    """In the text format the hook wraps the handlers Celery made and leaves a host's alone
    (pytest's, around an in-process worker); in JSON it formats them all."""
    from celery.utils.log import ColorFormatter

    from tasks import hooks

    logger = logging.getLogger("tests.logs.celery_host")
    celerys, hosts = logging.StreamHandler(io.StringIO()), logging.StreamHandler(io.StringIO())
    celerys.setFormatter(ColorFormatter("%(message)s", use_color=False))
    hosts.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(celerys)
    logger.addHandler(hosts)
    try:
        monkeypatch.setenv("LOG_FORMAT", "text")
        hooks._on_task_logging_set_up(logger=logger)
        assert isinstance(celerys.formatter, logs.RunSuffixed) and type(hosts.formatter) is logging.Formatter
        monkeypatch.setenv("LOG_FORMAT", "json")
        hooks._on_task_logging_set_up(logger=logger)
        assert all(isinstance(h.formatter, logs.JsonFormatter) for h in (celerys, hosts))
    finally:
        logger.removeHandler(celerys)
        logger.removeHandler(hosts)


def test_log_format_is_text_by_default_json_when_asked_and_a_clear_error_otherwise() -> None:
    assert read_log_format({}) == "text" and read_log_format({"LOG_FORMAT": "JSON"}) == "json"
    assert Settings.from_env({"LOG_FORMAT": "json"}).log_format == "json"
    with pytest.raises(SettingsError, match=r"LOG_FORMAT='xml' must be one of text, json"):
        Settings.from_env({"LOG_FORMAT": "xml"})


def test_flower_s_hook_leaves_any_other_use_of_the_app_alone(monkeypatch) -> None:
    """Loaded outside `celery ... flower` (a worker, the dispatcher, this test), the app adds no
    handler, whatever LOG_FORMAT says: those processes set their logging up themselves."""
    import click

    from tasks.flower_logs import json_logs_for_flower

    monkeypatch.setenv("LOG_FORMAT", "json")
    before = list(logging.getLogger().handlers)
    json_logs_for_flower()
    with click.Context(click.Group("celery")) as context:
        context.invoked_subcommand = "worker"
        json_logs_for_flower()
    assert logging.getLogger().handlers == before


def test_flower_with_a_bad_log_format_stops_with_one_line_naming_it() -> None:
    import subprocess

    from tests.servers import PYTHON, ROOT, process_env

    env = process_env(LOG_FORMAT="xml", MONGODB_URL="mongodb://127.0.0.1:9/nowhere")
    done = subprocess.run([PYTHON, "-m", "celery", "-A", "tasks", "flower", "--port=0"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr == "error: LOG_FORMAT='xml' must be one of text, json.\n"
