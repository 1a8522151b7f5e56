"""One trace per run (orchestrator.tracing, telemetry.traces): with the SDK's in-memory exporter,
and with no SDK at all, where the run's trace id must still be carried."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.trace import SpanKind

import pipeline
from orchestrator import tracing
from orchestrator.dispatcher import dispatch_once
from orchestrator.ingest import Item, ingest
from orchestrator.runs import create_hypothesis_and_run, new_run_document
from orchestrator.storage import LocalStorage
from pipeline.base import Pipeline, Step
from tasks.pod.attempt import Attempt
from tasks.pod.runtime import Runtime
from telemetry import traces
from tests.fakes import InProcessEmitter
from tests.helpers import make_settings
from tests.tracing_helpers import Spans, hex_trace, parent_span_id, reset_tracing

TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture(autouse=True)
def _no_sdk_unless_asked():
    reset_tracing()
    yield
    reset_tracing()


# -- traceparent values ------------------------------------------------------------------------
@pytest.mark.parametrize("value", [
    None, 42, "", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331", "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "00-00000000000000000000000000000000-b7ad6b7169203331-01", "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
    "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333_-01",
    TP + "\n", "00_0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
])
def test_a_malformed_traceparent_names_no_context(value: Any) -> None:
    assert tracing.parse(value) is None and tracing.trace_id_of(value) is None


def test_a_traceparent_round_trips() -> None:
    ctx = tracing.parse(TP)
    assert ctx is not None and tracing.format_traceparent(ctx) == TP
    assert tracing.trace_id_of(TP) == "0af7651916cd43dd8448eb211c80319c"


# -- without the SDK: the trace is still carried ------------------------------------------------
def test_without_the_sdk_a_new_run_still_gets_a_trace_of_its_own() -> None:
    with tracing.new_run_trace("enqueue", "r1") as first, tracing.new_run_trace("enqueue", "r2") as second:
        pass
    assert tracing.parse(first) is not None and tracing.parse(second) is not None
    assert tracing.trace_id_of(first) != tracing.trace_id_of(second)
    assert first.endswith("-01"), "sampled: a process that traces records the run's spans"


def test_without_the_sdk_work_on_a_run_carries_its_stored_context_and_the_run() -> None:
    with tracing.run_span("attempt", "r1", TP, attempt=2):
        with tracing.span("step Stage_1"):
            assert tracing.current_traceparent() == TP
            assert tracing.current_run() == ("r1", 2)
    assert tracing.current_traceparent() is None and tracing.current_run() is None


def test_the_sdk_is_off_unless_an_otlp_endpoint_is_set() -> None:
    assert not traces.enabled({})
    assert traces.enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert traces.enabled({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"})
    assert not traces.enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "TRUE"})
    assert not traces.enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "})
    assert traces.configure("worker", env={}) is None


def test_a_process_must_name_itself_as_one_of_the_four() -> None:
    with pytest.raises(ValueError, match="unknown process 'web'; known: ingest, dispatcher, worker, cli"):
        traces.configure("web", env={})


# -- with the SDK -------------------------------------------------------------------------------
def test_each_process_names_itself_unless_otel_service_name_does(spans: Spans) -> None:
    with tracing.run_span("attempt", "r1", TP):
        pass
    resource = spans.one("attempt").resource.attributes
    assert resource["service.name"] == "worker" and resource["service.namespace"] == traces.NAMESPACE


def test_a_run_trace_starts_at_enqueue_as_a_root_linked_to_the_request_that_asked(spans: Spans) -> None:
    with tracing.span("POST /api/runs", kind=SpanKind.SERVER) as request, \
            tracing.new_run_trace("enqueue", "r1", {"run.queue": "gpu"}) as traceparent:
        pass
    enqueue = spans.one("enqueue")
    assert enqueue.parent is None, "one trace per run, not a child of the request"
    assert tracing.trace_id_of(traceparent) == hex_trace(enqueue)
    assert [link.context.span_id for link in enqueue.links] == [request.get_span_context().span_id]
    assert enqueue.attributes is not None and enqueue.attributes["run.id"] == "r1"


def test_a_span_of_a_run_is_a_child_of_its_stored_context_or_of_the_current_span_in_that_trace(spans: Spans) -> None:
    with tracing.run_span("attempt", "r1", TP, attempt=1):
        with tracing.run_span("inner", "r1", TP, attempt=1):
            pass
    attempt, inner = spans.one("attempt"), spans.one("inner")
    assert hex_trace(attempt) == hex_trace(inner) == tracing.trace_id_of(TP)
    assert parent_span_id(attempt) == "b7ad6b7169203331"
    assert inner.parent is not None and attempt.context is not None and inner.parent.span_id == attempt.context.span_id


def test_a_failure_in_a_span_is_recorded_on_it(spans: Spans) -> None:
    with pytest.raises(RuntimeError), tracing.run_span("attempt", "r1", TP):
        raise RuntimeError("boom")
    span = spans.one("attempt")
    assert not span.status.is_ok and [e.name for e in span.events] == ["exception"]


def test_a_batch_of_one_runs_events_continues_its_trace_and_one_of_many_links_to_each(spans: Spans) -> None:
    other = "00-11111111111111111111111111111111-2222222222222222-01"
    with tracing.events_span("one", [TP, TP, None]):
        pass
    with tracing.events_span("many", [TP, other, TP]):
        pass
    one, many = spans.one("one"), spans.one("many")
    assert hex_trace(one) == tracing.trace_id_of(TP) and parent_span_id(one) == "b7ad6b7169203331"
    assert many.parent is None and {f"{link.context.trace_id:032x}" for link in many.links} == {
        tracing.trace_id_of(TP), tracing.trace_id_of(other)}


def test_links_are_capped(spans: Spans) -> None:
    many = [f"00-{i + 1:032x}-{i + 1:016x}-01" for i in range(tracing.MAX_LINKS + 10)]
    assert len(tracing.links_to(many)) == tracing.MAX_LINKS


# -- one run, end to end in one process ----------------------------------------------------------
def _pipeline_with_an_upload(monkeypatch) -> str:
    def step(ctx):
        path = ctx.workdir / "figure.png"
        path.write_bytes(b"png")
        ctx.save_artifact(path, kind="figure")
        return {"ok": True}

    monkeypatch.setitem(pipeline.PIPELINES, "traced", lambda: Pipeline("traced", [Step("Stage_1", step), Step("Stage_2", step)]))
    return "traced"


def test_one_run_is_one_trace_from_enqueue_through_every_step_upload_and_ingest(spans: Spans, mock_db, tmp_path, monkeypatch) -> None:
    name = _pipeline_with_an_upload(monkeypatch)
    _, run_id = create_hypothesis_and_run(mock_db, "t", "idea", pipeline=name)
    stored = mock_db.runs.find_one({"_id": run_id})[tracing.FIELD]
    assert dispatch_once(mock_db, lambda *a, **k: None) == 1
    settings = make_settings(WORK_DIR=str(tmp_path / "work"), ARTIFACT_DIR=str(tmp_path / "art"), HEARTBEAT_INTERVAL_S="0.05")
    emitter = InProcessEmitter(mock_db)
    rt = Runtime(settings=settings, db=mock_db, emitter=emitter, storage=LocalStorage(tmp_path / "art"))  # type: ignore[arg-type]
    assert Attempt(rt, run_id, 1).execute() == "completed"

    trace_id = tracing.trace_id_of(stored)
    names = [s.name for s in spans.all]
    for expected in ("enqueue", "dispatch", "attempt", "step Stage_1", "step Stage_2", "upload", "ingest events"):
        assert expected in names, names
    assert {hex_trace(s) for s in spans.all} == {trace_id}, "every span of the run is in its one trace"
    attempt = spans.one("attempt")
    assert attempt.attributes is not None and attempt.attributes["run.outcome"] == "completed"
    assert attempt.attributes["run.attempt"] == 1
    # No Celery here to carry the dispatch span in the message: the attempt hangs off the run's stored context.
    assert parent_span_id(attempt) == stored.split("-")[2] == f"{spans.one('enqueue').context.span_id:016x}"  # type: ignore[union-attr]
    steps = {s.name: s for s in spans.all if s.name.startswith("step ")}
    assert all(parent_span_id(s) == f"{attempt.context.span_id:016x}" for s in steps.values())  # type: ignore[union-attr]
    assert {tracing.trace_id_of(e.get("traceparent")) for e in emitter.events} == {trace_id}
    stored_events = list(mock_db.events.find({"runId": run_id}))
    assert stored_events and all(tracing.trace_id_of(e.get("traceparent")) == trace_id for e in stored_events)
    started = next(e for e in emitter.events if e["type"] == "ai.run.stage_started" and e["data"]["stage"] == "Stage_2")
    assert started["traceparent"].split("-")[2] == f"{steps['step Stage_2'].context.span_id:016x}"  # type: ignore[union-attr]


def test_a_run_a_frontend_inserted_without_a_trace_gets_one_from_the_dispatcher(mock_db) -> None:
    run = new_run_document("h1")
    mock_db.runs.insert_one(run)
    assert dispatch_once(mock_db, lambda *a, **k: None) == 1
    stored = mock_db.runs.find_one({"_id": run["_id"]})
    assert tracing.parse(stored.get(tracing.FIELD)) is not None


def test_the_dispatcher_keeps_a_runs_own_trace(mock_db) -> None:
    _, run_id = create_hypothesis_and_run(mock_db, "t", "idea")
    before = mock_db.runs.find_one({"_id": run_id})[tracing.FIELD]
    sent: list[str | None] = []
    assert dispatch_once(mock_db, lambda *a, **k: sent.append(tracing.current_traceparent())) == 1
    assert mock_db.runs.find_one({"_id": run_id})[tracing.FIELD] == before
    assert sent == [before], "the send happens in the run's trace (the Celery instrumentation puts it in the headers)"


def test_ingest_keeps_an_events_trace_context_and_applies_it_in_that_trace(spans: Spans, mock_db) -> None:
    from orchestrator.events import make_event

    _, run_id = create_hypothesis_and_run(mock_db, "t", "idea")
    event = make_event("ai.run.stage_started", run_id, 1, "worker://p", {"stage": "Stage_1"})
    event["traceparent"], event["tracestate"] = TP, "vendor=1"
    [outcome] = ingest(mock_db, [Item(0, event)], bucket="b", default_max_attempts=3)
    assert outcome.status == "accepted"
    stored = mock_db.events.find_one({"runId": run_id, "type": "ai.run.stage_started"})
    assert stored["traceparent"] == TP and stored["tracestate"] == "vendor=1"
    applied = spans.one("ingest events")
    assert parent_span_id(applied) == "b7ad6b7169203331" and applied.attributes["events.accepted"] == 1  # type: ignore[index]


# -- where an operator sees the trace ------------------------------------------------------------
JAEGER = "https://jaeger.example.org/trace/{trace_id}"


def test_trace_url_template_must_be_a_url_with_the_trace_id_placeholder() -> None:
    from orchestrator.errors import SettingsError
    from tests.helpers import make_settings

    assert make_settings(TRACE_URL_TEMPLATE=JAEGER).trace_url_template == JAEGER
    assert make_settings().trace_url_template is None
    with pytest.raises(SettingsError, match=r"TRACE_URL_TEMPLATE=.* must contain \{trace_id\}"):
        make_settings(TRACE_URL_TEMPLATE="https://jaeger.example.org/search")
    with pytest.raises(SettingsError, match="TRACE_URL_TEMPLATE=.* must be an http:// or https:// URL"):
        make_settings(TRACE_URL_TEMPLATE="javascript:alert({trace_id})")


def test_the_console_run_page_and_the_api_show_the_trace_id_and_link(mock_db) -> None:
    from tests.console_helpers import HTML, console_app, sign_in
    from tests.helpers import READER_TOKEN, bearer

    _, run_id = create_hypothesis_and_run(mock_db, "t", "idea")
    trace_id = tracing.trace_id_of(mock_db.runs.find_one({"_id": run_id})[tracing.FIELD])
    linked = console_app(mock_db, TRACE_URL_TEMPLATE=JAEGER)
    page = sign_in(linked, READER_TOKEN).get(f"/runs/{run_id}", headers=HTML).get_data(as_text=True)
    assert f'<a href="https://jaeger.example.org/trace/{trace_id}" rel="noopener noreferrer" target="_blank"><code>{trace_id}</code></a>' in page
    detail = linked.test_client().get(f"/api/runs/{run_id}", headers=bearer(READER_TOKEN)).get_json()
    assert detail["traceId"] == trace_id and detail["traceUrl"] == f"https://jaeger.example.org/trace/{trace_id}"
    plain = sign_in(console_app(mock_db), READER_TOKEN).get(f"/runs/{run_id}", headers=HTML).get_data(as_text=True)
    assert f"<code>{trace_id}</code>" in plain and "jaeger" not in plain


def test_manage_runs_show_prints_the_trace_id_and_link(cli_db, monkeypatch) -> None:
    from click.testing import CliRunner

    from ops.cli import main

    _, run_id = create_hypothesis_and_run(cli_db, "t", "idea")
    trace_id = tracing.trace_id_of(cli_db.runs.find_one({"_id": run_id})[tracing.FIELD])
    monkeypatch.setenv("TRACE_URL_TEMPLATE", JAEGER)
    shown = CliRunner().invoke(main, ["show", run_id])
    assert shown.exit_code == 0, shown.output
    whole = "".join(shown.output.split())  # a narrow terminal folds the link, never cuts it
    assert trace_id in shown.output and f"tracelinkhttps://jaeger.example.org/trace/{trace_id}" in whole
    as_json = CliRunner().invoke(main, ["--json", "show", run_id])
    assert f'"traceId": "{trace_id}"' in as_json.output


# -- what the review found ------------------------------------------------------------------------
@pytest.mark.parametrize("garbage", [12345, {"x": 1}, "garbage", "00-" + "f" * 10_000, None])
def test_a_run_with_a_malformed_stored_context_is_canceled_and_its_decision_carries_none(spans: Spans, mock_db, garbage) -> None:
    """A frontend's insert with anything in `traceparent`: no 500 in the middle of a cancel (the
    status written, the history entry not), and a request's own trace is never taken for the run's."""
    from orchestrator.runs import cancel_run

    run = new_run_document("h1")
    run[tracing.FIELD] = garbage
    mock_db.runs.insert_one(run)
    with tracing.span("POST /api/runs/x/cancel", kind=SpanKind.SERVER):
        assert cancel_run(mock_db, run["_id"], by="op", reason="r")["status"] == "CANCELED"
    [decision] = list(mock_db.events.find({"runId": run["_id"]}))
    assert tracing.FIELD not in decision


def test_for_run_takes_the_current_span_only_in_the_runs_own_trace(spans: Spans) -> None:
    other = "00-11111111111111111111111111111111-2222222222222222-01"
    assert tracing.for_run(TP) == TP and tracing.for_run(None) is None and tracing.for_run(42) is None
    with tracing.run_span("attempt", "r1", TP):
        inner = tracing.current_traceparent()
        assert inner is not None and inner != TP and tracing.for_run(TP) == inner
        assert tracing.for_run(other) == other, "another run's context is kept, not replaced by this span"
        assert tracing.for_run("not-a-context") is None


def test_untraced_suppresses_every_instrumentation() -> None:
    from opentelemetry.instrumentation.utils import is_http_instrumentation_enabled, is_instrumentation_enabled

    with tracing.untraced():
        assert not is_instrumentation_enabled() and not is_http_instrumentation_enabled()
    assert is_instrumentation_enabled() and is_http_instrumentation_enabled()


def test_the_notifier_s_post_is_never_traced(monkeypatch) -> None:
    """Its URL is a credential (a Slack webhook's path), which a client span would record."""
    from opentelemetry.instrumentation.utils import is_http_instrumentation_enabled

    from orchestrator import notify

    class Session:
        traced: list[bool] = []

        def post(self, *args: Any, **kwargs: Any) -> Any:
            self.traced.append(is_http_instrumentation_enabled())
            raise notify.requests.ConnectionError("refused")

    notify.post(Session(), "https://hooks.example.org/services/SECRET", "{}", "msg_1", None, 1.0)  # type: ignore[arg-type]
    assert Session.traced == [False]


def test_only_steps_and_outcomes_carry_a_batch_into_the_runs_trace(spans: Spans) -> None:
    from tasks.pod.emitter import _milestone

    routine = [{"type": "ai.run.heartbeat", "traceparent": TP}, {"type": "ai.run.stage_progress", "traceparent": TP}]
    assert _milestone(routine) is None
    assert _milestone([*routine, {"type": "ai.run.stage_completed", "traceparent": TP}]) == TP
    with tracing.events_span("routine", (e["traceparent"] for e in routine if e["type"] not in tracing_routine())):
        pass
    assert spans.one("routine").parent is None and not spans.one("routine").links


def tracing_routine() -> frozenset[str]:
    from orchestrator.events import ROUTINE_TYPES

    return ROUTINE_TYPES


def test_a_forked_child_keeps_its_parent_s_provider_instead_of_a_second_one(spans: Spans) -> None:
    provider = traces._provider
    traces._pid = -1  # as in a child forked after the parent set up
    assert traces.configure("worker", env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}) is provider
    assert traces._pid > 0


def test_an_export_is_bounded_unless_the_otlp_timeout_says_otherwise(monkeypatch) -> None:
    """With the collector away, `manage-runs` and a pool child wait at exit for the exporter's
    timeout: ours (2 s) unless OTEL_EXPORTER_OTLP_TIMEOUT says otherwise (the SDK reads it)."""
    from opentelemetry.exporter.otlp.proto.http import trace_exporter
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    asked: list[float | None] = []

    class Recorder(SpanExporter):
        def __init__(self, timeout: float | None = None) -> None:
            asked.append(timeout)

        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    monkeypatch.setattr(trace_exporter, "OTLPSpanExporter", Recorder)
    for env in ({}, {"OTEL_EXPORTER_OTLP_TIMEOUT": "7"}, {"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "7"}):
        traces._make_provider("cli", None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", **env}).shutdown()
        reset_tracing()
    assert asked == [traces.EXPORT_TIMEOUT_S, None, None]
