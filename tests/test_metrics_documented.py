"""The README's "Metrics" tables list every Prometheus metric of every process, and nothing else.

What each process serves is read from the registry it serves: the ingest app's own
(`IngestMetrics`), the dispatcher's (the default registry of a fresh `import ops.dispatcher`, in a
process of its own so no test's metrics mix in), the worker's (`tasks.pod.metrics.REGISTRY`, its
collector given a runtime and a GPU so every family shows). A metric constructed anywhere in the
product with a literal name must be among them, so one defined in a module no process imports
yet still fails here.
"""

from __future__ import annotations

import ast
import re
import subprocess
from collections.abc import Iterable
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from ingest_app.metrics import IngestMetrics
from tasks.pod import metrics as worker_metrics
from tests.servers import PYTHON, ROOT, process_env

PRODUCT = ("orchestrator", "tasks", "ingest_app", "ops", "pipeline", "telemetry")
#: prometheus_client's metric classes: the first argument is the metric's name.
CONSTRUCTORS = {"Counter", "Gauge", "Histogram", "Summary", "Info", "Enum",
                "CounterMetricFamily", "GaugeMetricFamily", "HistogramMetricFamily", "SummaryMetricFamily"}
#: README subsection heading (its first word) of each process.
PROCESSES = ("web", "dispatcher", "worker")


def exposed(families: Iterable[Metric]) -> set[str]:
    """Names as Prometheus shows them: a counter with its `_total`."""
    return {f"{family.name}_total" if family.type == "counter" else family.name for family in families}


def ingest_names() -> set[str]:
    return exposed(IngestMetrics().registry.collect())


def dispatcher_names() -> set[str]:
    code = "import ops.dispatcher\nfrom prometheus_client import REGISTRY, generate_latest\nprint(generate_latest(REGISTRY).decode())"
    out = subprocess.run([PYTHON, "-c", code], env=process_env(), cwd=ROOT, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    # The text format shows a counter's `_created` timestamp as a family of its own.
    return {name for name in exposed(text_string_to_metric_families(out)) if not name.endswith("_created")}


def worker_names(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    stats = SimpleNamespace(backlog=0, backlog_bytes=0, sent=0, duplicates=0, dropped_invalid=0, retries=0,
                            spool_errors=0, blocked_max_s=0.0)
    emitter = SimpleNamespace(running=True, stats=lambda: stats)
    monkeypatch.setattr(worker_metrics.COLLECTOR, "runtime", lambda: SimpleNamespace(emitter=emitter, current=None))
    monkeypatch.setattr(worker_metrics.COLLECTOR, "gpu", lambda: {"gpu_util": 1.0, "mem_gb": 1.0, "temp_c": 1.0})
    registry: CollectorRegistry = worker_metrics.REGISTRY
    return exposed(registry.collect())


def readme_tables() -> dict[str, set[str]]:
    """The metric names in the first cell of each table row, per "### process: ..." subsection of
    the README's "## Metrics" section."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    found: dict[str, set[str]] = {}
    for part in section.split("\n### ")[1:]:
        process = part.split(":", 1)[0].strip()
        rows = [line.split("|")[1] for line in part.splitlines() if line.startswith("|")]
        found[process] = {name for cell in rows for name in re.findall(r"`([a-z][a-z0-9_]*)`", cell)}
    return found


def constructed_in_the_source() -> set[str]:
    """Literal names handed to a prometheus_client metric class anywhere in the product."""
    names: set[str] = set()
    for package in PRODUCT:
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text(), str(path))
            imported = {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                        and (node.module or "").startswith("prometheus_client") for alias in node.names}
            for node in ast.walk(tree):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in imported
                        and node.func.id in CONSTRUCTORS and node.args and isinstance(node.args[0], ast.Constant)):
                    names.add(str(node.args[0].value))
    return names


@pytest.fixture(scope="module")
def served_by_the_dispatcher() -> set[str]:
    return dispatcher_names()


def test_the_readme_has_a_table_for_each_process() -> None:
    assert tuple(readme_tables()) == PROCESSES


@pytest.mark.parametrize("process", PROCESSES)
def test_each_process_serves_exactly_what_its_table_lists(process: str, served_by_the_dispatcher: set[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    served = {"web": ingest_names, "dispatcher": lambda: served_by_the_dispatcher,
              "worker": lambda: worker_names(monkeypatch)}[process]()
    listed = readme_tables()[process]
    assert not served - listed, f"add to the README's {process} table: {sorted(served - listed)}"
    assert not listed - served, f"the README's {process} table lists what it does not serve: {sorted(listed - served)}"


def test_every_metric_the_source_defines_is_served_by_some_process(served_by_the_dispatcher: set[str],
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    served = ingest_names() | served_by_the_dispatcher | worker_names(monkeypatch)
    defined = constructed_in_the_source()
    assert "orchestrator_dispatched_total" in defined and "ingest_batch_events" in defined  # the scan finds them
    missing = sorted(name for name in defined if name not in served and f"{name}_total" not in served)
    assert not missing, f"defined but served by no process (nor in the README): {missing}"
