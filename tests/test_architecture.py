"""The layout's rules, checked on the source itself (see docs/architecture.md).

- The core (`orchestrator/`) imports none of the web, Celery, terminal or plotting stacks, nor
  any layer above it, anywhere in a file (imports inside functions count).
- Each layer imports only the layers below it; no import cycle among product modules.
- The dispatcher's entry module loads neither the pipeline, numpy, matplotlib nor Flask.
- No product module is over 500 lines; every exception the project defines derives from
  `OrchestratorError`; nothing points outside the repository.
- `ruff check` and `mypy` are clean.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import subprocess
from pathlib import Path

import pytest

from orchestrator.errors import OrchestratorError
from tests.servers import PYTHON, ROOT, process_env

#: Product packages and their layer: a module may import only packages of a lower layer (or
#: its own package). `tasks` and `ingest_app` share a layer and never import each other.
LAYERS = {"orchestrator": 0, "pipeline": 1, "telemetry": 1, "tasks": 2, "ingest_app": 2, "ops": 3}
#: What the core must never import, in any form.
CORE_FORBIDDEN = {
    "flask", "werkzeug", "celery", "kombu", "rich", "click", "numpy", "matplotlib",
    "tasks", "ingest_app", "pipeline", "ops", "telemetry",
}
MAX_LINES = 500


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _product_files() -> dict[str, Path]:
    files = {_module_name(p): p for package in LAYERS for p in sorted((ROOT / package).rglob("*.py"))}
    files["celeryconfig"] = ROOT / "celeryconfig.py"
    return files


FILES = _product_files()


def _imports(name: str, path: Path) -> set[str]:
    """Every module `path` imports, at any depth of the file, relative imports resolved."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in FILES else base)
    return found


IMPORTS = {name: _imports(name, path) for name, path in FILES.items()}


def _package(module: str) -> str:
    return module.split(".")[0]


@pytest.mark.parametrize("module", sorted(m for m in FILES if _package(m) == "orchestrator"))
def test_the_core_imports_no_framework_and_no_upper_layer(module: str) -> None:
    bad = sorted(m for m in IMPORTS[module] if _package(m) in CORE_FORBIDDEN)
    assert not bad, f"{module} imports {bad}; the core must stay free of them"


@pytest.mark.parametrize("module", sorted(m for m in FILES if _package(m) == "orchestrator"))
def test_the_core_uses_the_opentelemetry_api_alone(module: str) -> None:
    """The SDK, its exporters and the instrumentations are set up per process (`telemetry`)."""
    bad = sorted(m for m in IMPORTS[module] if m.startswith("opentelemetry.")
                 and not m.startswith(("opentelemetry.trace", "opentelemetry.context", "opentelemetry.propagate")))
    assert not bad, f"{module} imports {bad}; the core uses opentelemetry-api only"


def test_every_layer_imports_only_the_layers_below_it() -> None:
    wrong = []
    for module, imported in IMPORTS.items():
        own = _package(module)
        rank = LAYERS.get(own, LAYERS["tasks"])  # celeryconfig is configuration of the tasks layer
        for target in imported:
            other = _package(target)
            if other in LAYERS and other != own and LAYERS[other] >= rank:
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports against the layers:\n" + "\n".join(sorted(wrong))


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_among_product_modules() -> None:
    graph = {module: {m for m in imported if m in FILES and m != module} for module, imported in IMPORTS.items()}
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_dispatcher_entry_loads_neither_the_pipeline_nor_plotting_nor_flask() -> None:
    code = "import sys, ops.dispatcher; print('\\n'.join(sorted(sys.modules)))"
    loaded = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, env=process_env(),
                            cwd=ROOT, timeout=120, check=True).stdout.split()
    heavy = sorted(m for m in loaded if _package(m) in {"pipeline", "numpy", "matplotlib", "flask", "werkzeug"})
    assert "ops.dispatcher" in loaded
    assert heavy == []


@pytest.mark.parametrize("module", sorted(FILES))
def test_no_product_module_is_over_500_lines(module: str) -> None:
    lines = len(FILES[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{FILES[module]} has {lines} lines"


def _defined_exceptions() -> list[type[BaseException]]:
    found = []
    for name in sorted(FILES):
        if name.endswith("_entry"):
            continue  # a script run in a child process, not an importable module of ours
        module = importlib.import_module(name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == name:
                found.append(obj)
    return found


def test_every_exception_the_project_defines_derives_from_the_root() -> None:
    exceptions = _defined_exceptions()
    assert len(exceptions) >= 10
    strays = [f"{e.__module__}.{e.__qualname__}" for e in exceptions if not issubclass(e, OrchestratorError)]
    assert strays == []


def test_nothing_in_the_repository_points_outside_it() -> None:
    outside = "../" + "shared"  # spelled in two parts so this file does not match itself
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    pointing = [p for p in tracked if (ROOT / p).is_file() and outside in (ROOT / p).read_text(errors="ignore")]
    assert pointing == []


def _tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, "-m", *args], cwd=ROOT, capture_output=True, text=True, env=process_env(), timeout=600)


def test_ruff_is_clean() -> None:
    result = _tool("ruff", "check", "--no-cache", ".")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_mypy_is_clean() -> None:
    result = _tool("mypy")
    assert result.returncode == 0, result.stdout + result.stderr
