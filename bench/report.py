"""BENCHMARKS.md: the results table, the machine it ran on, and the notes of each benchmark.

`Row`, `Target` and the renderers are pure (the smoke test runs them); `machine` reads /proc.
"""

from __future__ import annotations

import os
import platform
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

_OPS = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}
_SHOWN = {"<": "<", "<=": "≤", ">": ">", ">=": "≥"}


@dataclass(frozen=True)
class Target:
    """What a figure must be: `figure < 0.5` (on="figure") or `ratio >= 0.5` (on="ratio")."""

    op: str
    value: float
    on: str = "figure"

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise ValueError(f"target operator {self.op!r} is not one of {', '.join(_OPS)}")
        if self.on not in ("figure", "ratio"):
            raise ValueError(f"a target is on 'figure' or 'ratio', not {self.on!r}")

    def met(self, figure: float, ratio: float | None) -> bool | None:
        subject = figure if self.on == "figure" else ratio
        return None if subject is None else _OPS[self.op](subject, self.value)

    def text(self, unit: str) -> str:
        if self.on == "ratio":
            return f"ratio {_SHOWN[self.op]} {self.value:g}"
        return f"{_SHOWN[self.op]} {self.value:g} {unit}".rstrip()


@dataclass(frozen=True)
class Row:
    """One figure of the table. `ratio` is figure / baseline, whatever the direction; the target
    says which way is good."""

    item: str
    measure: str
    figure: float
    unit: str
    baseline: float | None = None
    baseline_what: str = ""
    target: Target | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline == 0:
            return None
        return self.figure / self.baseline

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.target.met(self.figure, self.ratio)


def number(value: float) -> str:
    """Three significant digits, thousands separated; no exponent for the ranges used here."""
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    if magnitude == 0:
        return "0"
    return f"{value:.3g}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_table(rows: Sequence[Row]) -> str:
    """The Markdown results table."""
    lines = [
        "| # | measure | figure | baseline (same run) | ratio | target | met? | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        baseline = "—" if row.baseline is None else f"{number(row.baseline)} {row.unit} ({row.baseline_what})"
        ratio = "—" if row.ratio is None else number(row.ratio)
        target = "—" if row.target is None else row.target.text(row.unit)
        met = {True: "met", False: "**missed**", None: "—"}[row.met]
        cells = [row.item, row.measure, f"{number(row.figure)} {row.unit}", baseline, ratio, target, met, row.note]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


@dataclass(frozen=True)
class Machine:
    cpu: str
    cores: str
    ram: str
    python: str
    system: str
    server: str
    packages: str

    def markdown(self) -> str:
        return "\n".join(f"- **{name}**: {value}" for name, value in (
            ("CPU", self.cpu), ("cores", self.cores), ("RAM", self.ram), ("Python", self.python),
            ("OS", self.system), ("server", self.server), ("packages", self.packages)))


def machine(server: str) -> Machine:
    """This machine, from /proc and the interpreter; `server` is the database's name and version."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    ram = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    packages = ", ".join(f"{name} {_version(name)}" for name in ("pymongo", "flask", "gunicorn", "celery", "kombu", "requests"))
    return Machine(cpu=cpu, cores=f"{os.cpu_count()} logical ({usable} usable)", ram=ram,
                   python=f"{platform.python_implementation()} {platform.python_version()}",
                   system=platform.platform(), server=server, packages=packages)


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "?"


def ferretdb_version(go_mod: Path) -> str | None:
    """The FerretDB module version the test server is built from (its buildInfo says "unknown")."""
    try:
        match = re.search(r"github\.com/FerretDB/FerretDB (v[\w.\-]+)", go_mod.read_text())
    except OSError:
        return None
    return match.group(1) if match else None


@dataclass
class Document:
    """Everything BENCHMARKS.md says, assembled by the benchmarks as they run."""

    command: str
    machine: Machine
    rows: list[Row] = field(default_factory=list)
    sections: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def render(self) -> str:
        missed = [r for r in self.rows if r.met is False]
        parts = [
            "# Benchmarks",
            "",
            f"Written by `{self.command}` (issue 7); every figure and its baseline come from the same run, "
            f"which took {self.seconds:.0f} s. Timing is never asserted in a test; this file is the record. "
            "Ratio = figure / baseline; the target says which direction is good.",
            "",
            "Run it with `python -m bench` (about 15 minutes on the machine below, 7 of them the idle benchmark), "
            "`--quick` (shorter windows, fewer samples), `--only NAME` (ingest, dispatch, visibility, emitter, flood, "
            "memory, console, idle, tracing) or `--history N ...` (growth with N past runs: about 14 minutes for 0, 1,000 and "
            "10,000); it starts the test server, FerretDB on "
            "PostgreSQL (`bash devtools/setup.sh` builds and installs them; `FERRETDB_BACKEND=sqlite` for FerretDB on "
            "SQLite), or uses `MONGODB_TEST_URL` when that is set.",
            "",
            "## Machine",
            "",
            self.machine.markdown(),
            "",
            "## Results",
            "",
            render_table(self.rows),
            "",
            f"{len(self.rows)} figures, {sum(r.met is True for r in self.rows)} targets met, {len(missed)} missed"
            + (": " + "; ".join(f"{r.item} {r.measure}" for r in missed) if missed else "") + ".",
        ]
        for title, body in self.sections:
            parts += ["", f"## {title}", "", body.strip()]
        return "\n".join(parts) + "\n"
