"""Read AI-Scientist-v2's tree-search logs and report them as progress and metrics.

It reads files only and imports nothing of upstream. The layout (SakanaAI/AI-Scientist-v2 @
defddb8: `treesearch/perform_experiments_bfts_with_agentmanager.py`, `agent_manager.py`,
`journal.py`, `utils/config.py`, `utils/serialize.py`):

    <idea_dir>/logs/<index>-<exp_name>/          "0-run": the adapter clears old runs and enforces
                                                  exp_name "run", because upstream's plotting and
                                                  writeup read `logs/0-run` only
        stage_<N>_<main name>_<M>_<sub name>/     one per sub-stage, e.g.
                                                  stage_1_initial_implementation_1_preliminary
            journal.json                          {"nodes": [...], "node2parent": {...}, "__version": "2"}
            notes/stage_progress.json             {"stage", "total_nodes", "buggy_nodes", "good_nodes",
                                                   "best_metric" (a display string), "current_findings"}
        experiment_results/experiment_<node id>_proc_<pid>/*.png, seed_aggregation_<id>/*.png

Both files are rewritten after every tree-search step with a plain `open("w")`, so a poll can see
a half-written file: it is skipped and the last good reading kept. The stage's best node is
upstream's metric-based choice (`Journal.get_best_node`'s fallback, see `best_node`): good nodes
only, compared by the mean `final_value` over every metric and dataset. A stage's best node is
carried into the next stage under the same id.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline.context import RunContext
from pipeline.errors import AllNodesBuggy, MaxIterationsReached, PipelineError

#: Progress stays below this until the stage is known to be over: node counts say how much of the
#: iteration budget is used, not when the stage manager decides the stage is complete.
PROGRESS_CAP = 0.99

_STAGE_DIR = re.compile(r"^stage_(\d+)_\D*?_?(\d+)_")
_JOURNAL = "journal.json"
_PROGRESS = Path("notes") / "stage_progress.json"


@dataclass(frozen=True)
class StageSnapshot:
    """What the logs say about one main stage (all its sub-stages) at one poll."""

    sub_stages: tuple[str, ...]
    total_nodes: int
    good_nodes: int
    buggy_nodes: int
    #: Nodes of the newest sub-stage: each sub-stage has its own iteration budget.
    current_nodes: int
    best_metric: float | None
    metric_name: str | None
    maximize: bool | None
    #: The id of the node upstream's metric-based choice picks (ids are kept across stages).
    best_node: str | None = None


class _JsonCache:
    """Last good parse per file, keyed by (mtime, size) so an unchanged file is not re-read and a
    half-written one does not replace a good reading."""

    def __init__(self) -> None:
        self._seen: dict[Path, tuple[tuple[int, int], Any]] = {}

    def read(self, path: Path) -> Any:
        try:
            stat = path.stat()
        except OSError:
            return None
        key = (stat.st_mtime_ns, stat.st_size)
        seen = self._seen.get(path)
        if seen and seen[0] == key:
            return seen[1]
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            value = None
        if not isinstance(value, dict):
            value = seen[1] if seen else None  # skip this reading, keep the last good one
        self._seen[path] = (key, value)
        return value


def stage_dirs(log_dir: Path, main_stage: int) -> list[Path]:
    """The sub-stage directories of one main stage, in sub-stage order."""
    if not log_dir.is_dir():
        return []
    found = []
    for path in log_dir.iterdir():
        match = _STAGE_DIR.match(path.name)
        if path.is_dir() and match and int(match.group(1)) == main_stage:
            found.append((int(match.group(2)), path.name, path))
    return [path for _, _, path in sorted(found)]


def find_log_dir(idea_dir: Path) -> Path | None:
    """The experiment log dir under `<idea_dir>/logs`: the highest `<index>-<name>` directory."""
    logs = idea_dir / "logs"
    if not logs.is_dir():
        return None
    runs = [(int(p.name.split("-", 1)[0]), p) for p in logs.iterdir()
            if p.is_dir() and p.name.split("-", 1)[0].isdigit()]
    return max(runs)[1] if runs else None


def max_iterations(bfts_config: dict[str, Any], main_stage: int) -> int:
    """A stage's iteration budget as AgentManager reads it: `agent.stages.stage<N>_max_iters`,
    else `agent.steps`."""
    agent = bfts_config.get("agent") or {}
    stages = agent.get("stages") or {}
    value = stages.get(f"stage{main_stage}_max_iters", agent.get("steps"))
    if not isinstance(value, int) or value < 1:
        raise PipelineError(f"the BFTS config has no usable iteration budget for stage {main_stage}: {value!r}")
    return value


def read_stage(log_dir: Path, main_stage: int, cache: _JsonCache | None = None) -> StageSnapshot | None:
    """One main stage's state summed over its sub-stages; None while nothing readable is there."""
    cache = cache or _JsonCache()
    dirs = stage_dirs(log_dir, main_stage)
    readings = [r for r in (_read_sub_stage(d, cache) for d in dirs) if r is not None]
    if not readings:
        return None
    best = _better_node([r["best"] for r in readings if r["best"] is not None])
    metric = best[1] if best else None
    return StageSnapshot(
        sub_stages=tuple(d.name for d in dirs),
        total_nodes=sum(r["total"] for r in readings),
        good_nodes=sum(r["good"] for r in readings),
        buggy_nodes=sum(r["buggy"] for r in readings),
        current_nodes=readings[-1]["total"],
        best_metric=metric.mean if metric and math.isfinite(metric.mean) else None,
        metric_name=metric.names if metric else None,
        maximize=metric.maximize if metric else None,
        best_node=str(best[0].get("id")) if best else None,
    )


def diagnose(stage: str, snapshot: StageSnapshot | None, max_iterations: int) -> PipelineError | None:
    """Why a stage gave the next one nothing to build on, when its logs say so; else None."""
    if snapshot is None or snapshot.total_nodes == 0:
        return None
    if snapshot.buggy_nodes >= snapshot.total_nodes:
        return AllNodesBuggy(stage, snapshot.total_nodes)
    if snapshot.good_nodes == 0 and snapshot.current_nodes >= max_iterations:
        return MaxIterationsReached(stage, max_iterations)
    return None


def _read_sub_stage(directory: Path, cache: _JsonCache) -> dict[str, Any] | None:
    progress = cache.read(directory / _PROGRESS)
    journal = cache.read(directory / _JOURNAL)
    nodes = journal.get("nodes") if journal else None
    nodes = nodes if isinstance(nodes, list) else None
    counts = _counts_from_progress(progress) or (_counts_from_nodes(nodes) if nodes is not None else None)
    if counts is None:
        return None
    return {**counts, "best": best_node(nodes or [])}


class ProgressTranslator:
    """Polls one main stage's logs and turns changes into `ctx.progress` and `ctx.metric` calls.

    A poll that finds nothing new makes no call, so polling often costs no events.
    """

    def __init__(self, ctx: RunContext, log_dir: Path, stage: str, max_iterations: int):
        if not re.fullmatch(r"Stage_[1-4]", stage):
            raise ValueError(f"stage must be one of Stage_1..Stage_4, got {stage!r}")
        self.ctx = ctx
        self.log_dir = log_dir
        self.stage = stage
        self.main_stage = int(stage[-1])
        self.max_iterations = max_iterations
        self.snapshot: StageSnapshot | None = None
        self._cache = _JsonCache()
        self._progress = 0.0
        self._reported: dict[str, float] = {}
        self._metric_name: str | None = None

    def poll(self) -> StageSnapshot | None:
        """Read the logs once and report what changed since the last poll."""
        snapshot = self._read()
        if snapshot is None:
            return self.snapshot
        self.snapshot = snapshot
        self._report_progress(snapshot)
        self._report_metrics(snapshot)
        return snapshot

    def stage_over(self) -> bool:
        """True once this main stage is over: upstream saved its `checkpoint.pkl` (agent_manager.py
        `_save_checkpoint`, at the end of each main stage), or the next stage has logs. Stage_4 is
        over only when the process ends: after it, upstream still writes the stage summaries."""
        if stage_dirs(self.log_dir, self.main_stage + 1):
            return True
        return self.main_stage < 4 and any((d / "checkpoint.pkl").is_file() for d in stage_dirs(self.log_dir, self.main_stage))

    def diagnose(self) -> PipelineError | None:
        """After the tree search ended early: why this stage produced nothing to build on."""
        return diagnose(self.stage, self.snapshot, self.max_iterations)

    def summary(self) -> dict[str, Any]:
        """The step's outputs: small, JSON-able, enough for the dashboard and later steps."""
        if self.snapshot is None:
            return {"stage": self.stage, "sub_stages": [], "total_nodes": 0}
        out = asdict(self.snapshot)
        out["sub_stages"] = list(out["sub_stages"])
        return {"stage": self.stage, **out}

    def _read(self) -> StageSnapshot | None:
        return read_stage(self.log_dir, self.main_stage, self._cache)

    def _report_progress(self, snap: StageSnapshot) -> None:
        fraction = min(PROGRESS_CAP, snap.current_nodes / self.max_iterations)
        if fraction > self._progress:
            self._progress = fraction
            self.ctx.progress(fraction)

    def _report_metrics(self, snap: StageSnapshot) -> None:
        values = {"total_nodes": snap.total_nodes, "good_nodes": snap.good_nodes,
                  "buggy_nodes": snap.buggy_nodes, "best_metric": snap.best_metric}
        for name, value in values.items():
            if value is not None and self._reported.get(name) != value:
                self._reported[name] = value
                self.ctx.metric(name, value, step=snap.total_nodes)
        if snap.metric_name and snap.metric_name != self._metric_name:
            self._metric_name = snap.metric_name
            self.ctx.log(f"{self.stage} best_metric is {snap.metric_name}",
                         maximize=snap.maximize)


def _counts_from_progress(progress: dict[str, Any] | None) -> dict[str, int] | None:
    if not progress:
        return None
    counts: dict[str, int] = {}
    for key in ("total", "good", "buggy"):
        value = progress.get(f"{key}_nodes")
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            return None
        counts[key] = value
    return counts


def _counts_from_nodes(nodes: list[Any]) -> dict[str, int]:
    dicts = [n for n in nodes if isinstance(n, dict)]
    return {
        "total": len(dicts),
        "good": sum(n.get("is_buggy") is False and n.get("is_buggy_plots") is False for n in dicts),
        "buggy": sum(n.get("is_buggy") is True for n in dicts),
    }


@dataclass(frozen=True)
class Metric:
    """A node's metric as upstream's `MetricValue` compares it (treesearch/utils/metric.py)."""

    mean: float
    names: str | None
    maximize: bool

    def better_than(self, other: Metric | None) -> bool:
        """Upstream's `MetricValue.__gt__`: the mean over every metric and dataset, in the first
        metric's direction; equal means are not better."""
        if other is None:
            return True
        if self.mean == other.mean:
            return False
        return (self.mean > other.mean) if self.maximize else not (self.mean > other.mean)


def node_metric(node: dict[str, Any]) -> Metric | None:
    """The metric of a serialized node (`Node.to_dict()["metric"]`); None when it has no value."""
    metric = node.get("metric")
    if not isinstance(metric, dict) or metric.get("value") is None:
        return None
    value, name = metric["value"], metric.get("name")
    maximize = bool(metric.get("maximize"))
    if isinstance(value, dict) and isinstance(value.get("metric_names"), list):
        groups = [m for m in value["metric_names"] if isinstance(m, dict)]
        numbers = [d.get("final_value") for m in groups for d in (m.get("data") or []) if isinstance(d, dict)]
        names = [str(m.get("metric_name")) for m in groups if m.get("metric_name")]
        name = ", ".join(dict.fromkeys(names)) or name
        if groups and "lower_is_better" in groups[0]:
            maximize = not groups[0]["lower_is_better"]
        mean = _mean(numbers)
    elif isinstance(value, dict):
        mean = _mean(list(value.values()))
    else:
        mean = float(value) if _finite(value) else math.nan
    return Metric(mean, name if isinstance(name, str) else None, maximize)


def best_node(nodes: list[Any]) -> tuple[dict[str, Any], Metric | None] | None:
    """Upstream's `Journal.get_best_node(only_good=True)` without its LLM: among good nodes
    (`is_buggy` False and `is_buggy_plots` False) the metric-based `max`."""
    good = [n for n in nodes if isinstance(n, dict) and n.get("is_buggy") is False and n.get("is_buggy_plots") is False]
    best: tuple[dict[str, Any], Metric | None] | None = None
    for node in good:
        metric = node_metric(node)
        if best is None or (metric is not None and metric.better_than(best[1])):
            best = (node, metric)
    return best


def _better_node(candidates: list[tuple[dict[str, Any], Metric | None]]) -> tuple[dict[str, Any], Metric | None] | None:
    best = None
    for candidate in candidates:
        if best is None or (candidate[1] is not None and candidate[1].better_than(best[1])):
            best = candidate
    return best


def _mean(values: list[Any]) -> float:
    numbers = [float(v) for v in values if _finite(v)]
    return sum(numbers) / len(numbers) if numbers else math.nan


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
