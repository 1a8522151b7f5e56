"""One run, one trace, across real processes: `manage-runs enqueue`, the dispatcher, a Celery
worker and the gunicorn ingest app on the real server, each exporting over OTLP/HTTP to a
receiver this test starts (`devtools.otlp_receiver`, decoding the protobuf with opentelemetry-proto)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from devtools.otlp_receiver import OtlpReceiver, ReceivedSpan
from orchestrator import tracing
from tests.cluster import Cluster, cluster_on
from tests.servers import PYTHON, ROOT, wait_until

pytestmark = [pytest.mark.realserver, pytest.mark.slow]

STEPS = ("Stage_1", "Stage_2", "Stage_3", "Stage_4", "auto_validation")


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as r:
        yield r


@pytest.fixture
def traced(real_server: Any, tmp_path: Any, receiver: OtlpReceiver) -> Iterator[Cluster]:
    with cluster_on(real_server, tmp_path, "tr", OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
                    OTEL_BSP_SCHEDULE_DELAY="200") as c:
        yield c


def _enqueue(cluster: Cluster, tmp_path: Any) -> str:
    idea = tmp_path / "idea.json"
    idea.write_text(json.dumps({"stage_s": 0.2}))
    done = subprocess.run([PYTHON, "-m", "ops.cli", "--json", "enqueue", "--title", "traced", "--idea", "one trace",
                           "--pipeline", "sleepy", "--idea-json", str(idea)],
                          env=cluster.env(), cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["runId"]


def _names(spans: list[ReceivedSpan], service: str) -> set[str]:
    return {s.name for s in spans if s.service == service}


def test_one_run_is_one_trace_from_the_enqueue_through_dispatch_task_steps_and_ingest(traced: Cluster, receiver: OtlpReceiver, tmp_path: Any) -> None:
    traced.start_ingest(workers=1)
    traced.start_worker("pod-t")
    traced.start_dispatcher()
    run_id = _enqueue(traced, tmp_path)
    run = traced.wait_status(run_id, {"AWAITING_HUMAN"}, 90)
    trace_id = tracing.trace_id_of(run.get(tracing.FIELD))
    assert trace_id is not None, run

    def complete() -> bool:
        spans = receiver.in_trace(trace_id)
        return ({"enqueue"} <= _names(spans, "cli") and "dispatch" in _names(spans, "dispatcher")
                and {f"step {s}" for s in STEPS} | {"attempt"} <= _names(spans, "worker")
                and "ingest events" in _names(spans, "ingest"))
    try:
        wait_until(complete, 30, "every process's spans of the run")
    except TimeoutError:
        got = sorted({(s.service, s.name) for s in receiver.in_trace(trace_id)})
        pytest.fail(f"spans in the run's trace: {got}\nall services: {sorted({s.service for s in receiver.spans})}\n{traced.logs()}")

    spans = receiver.in_trace(trace_id)
    by_id = {s.span_id: s for s in spans}
    [enqueue] = [s for s in spans if s.name == "enqueue"]
    assert enqueue.parent_span_id is None and enqueue.attributes["run.id"] == run_id
    # Celery carried the dispatcher's context in the message: the task's span is under the publish.
    task = next(s for s in spans if s.service == "worker" and s.name.startswith("run/"))
    assert by_id[task.parent_span_id].service == "dispatcher"  # type: ignore[index]
    [attempt] = [s for s in spans if s.name == "attempt"]
    assert attempt.parent_span_id == task.span_id and attempt.attributes["run.outcome"] == "completed"
    for step in STEPS:
        [span] = [s for s in spans if s.name == f"step {step}"]
        assert span.parent_span_id == attempt.span_id
    assert any(s.name == "upload" for s in spans), "the Stage_2 artifact's upload"
    # The worker's POSTs continue the run's trace into ingest: Flask's request span, then the batch's.
    assert any(s.service == "ingest" and s.kind == 2 for s in spans), "a SERVER span of the ingest app"  # SPAN_KIND_SERVER
    assert any(s.service == "ingest" and s.attributes.get("db.system") == "mongodb" for s in spans)
    # The stored events carry the trace.
    events = list(traced.db.events.find({"runId": run_id, "source": "worker://pod-t"}))
    assert events and {tracing.trace_id_of(e.get("traceparent")) for e in events} == {trace_id}
    # No span of this run leaked into another trace.
    assert not [s for s in receiver.spans if s.attributes.get("run.id") == run_id and s.trace_id != trace_id]
