"""Run upstream's code in child processes, in a directory laid out as upstream's launcher expects.

`launch_scientist_bfts.py` runs from the checkout root with `AI_SCIENTIST_ROOT` set to it and the
idea directory at `experiments/<idea>`; upstream depends on all three: the writeup copies its
LaTeX template from the relative path `ai_scientist/blank_icbinb_latex`, nodes store paths relative
to the working directory and seed aggregation loads them from `AI_SCIENTIST_ROOT`. So each run
gets its own such root inside its work dir (a copy of the checkout's `ai_scientist` package, not a
link: a run must not change the checkout or see another run's files), and every child runs there:

    <workdir>/ai_scientist/                 cwd and AI_SCIENTIST_ROOT of every child
        ai_scientist/                       copy of the checkout's package (code and templates)
        bfts_config.yaml                    the tree-search config, with `ENFORCED` values
        orchestrator_entry.py               copy of `entry.py`: run by path, so `import ai_scientist`
                                            finds the copy beside it, never this adapter
        <entry>.log, <entry>.args.json      each child's output and arguments
        token_usage/<entry>.json            each child's token tracker summary
        ideation/generated_ideas.json       upstream's ideation output, when it ran
        experiments/<idea name>/            the idea dir: logs/0-run, figures, paper, reviews
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from pipeline.ai_scientist.config import AiScientistConfig, upstream_environ
from pipeline.context import RunContext
from pipeline.errors import PipelineError

ENTRY = Path(__file__).with_name("entry.py")
ENTRY_NAME = "orchestrator_entry.py"
ROOT_NAME = "ai_scientist"
#: Seconds a child gets to exit after SIGTERM before SIGKILL.
STOP_GRACE_S = 10.0
#: Entries of an idea dir that upstream counts when it picks the run index (`_get_next_logindex`).
_RUN_INDEXED = re.compile(r"^\d+-")


class ChildFailed(PipelineError):
    """A child process exited with a code its caller does not accept; the message names its log."""

    def __init__(self, entry: str, code: int, log: Path):
        self.entry, self.code, self.log = entry, code, log
        super().__init__(f"AI-Scientist-v2 {entry} exited with code {code}; see {log}")

    def __reduce__(self):
        return (type(self), (self.entry, self.code, self.log))


def run_root(ctx: RunContext) -> Path:
    """Absolute: upstream joins AI_SCIENTIST_ROOT with paths relative to its working directory."""
    return (Path(ctx.workdir) / ROOT_NAME).resolve()


def idea_dir(ctx: RunContext, name: str) -> Path:
    return run_root(ctx) / "experiments" / name


def prepare(ctx: RunContext, cfg: AiScientistConfig, entry: str) -> Path:
    """Lay out the run root (idempotent; the package is copied once per work dir)."""
    root = run_root(ctx)
    root.mkdir(parents=True, exist_ok=True)
    if not (root / "ai_scientist" / "__init__.py").is_file():
        shutil.copytree(cfg.root / "ai_scientist", root / "ai_scientist", dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    settings, changed = cfg.tree_search_settings()
    for note in changed if entry == "experiments" else ():
        ctx.log(f"tree-search config: {note} (the adapter reads logs/0-run and the stage summaries)", "warning")
    (root / "bfts_config.yaml").write_text(yaml.safe_dump(settings, sort_keys=False), encoding="utf-8")
    shutil.copyfile(ENTRY, root / ENTRY_NAME)
    return root


def recover_from_earlier_attempt(ctx: RunContext, idea: Path) -> int | None:
    """Copy the idea dir of the newest earlier attempt of this run on this pod into this attempt's
    root, when this one has none; returns that attempt's number, or None.

    The worker gives each attempt its own work dir, `WORK_DIR/<run>/<attempt>`, so an attempt
    that retries the plots, the paper or the review would otherwise not see the tree search that
    an earlier attempt ran on this very pod."""
    if (idea / "logs" / "0-run").is_dir():
        return None
    relative = idea.relative_to(run_root(ctx))
    for attempt in earlier_attempts(ctx):
        source = run_root_of(ctx, attempt) / relative
        if (source / "logs" / "0-run").is_dir():
            shutil.copytree(source, idea, dirs_exist_ok=True, symlinks=True)
            return attempt
    return None


def earlier_attempts(ctx: RunContext) -> list[int]:
    """Earlier attempts of this run with a work dir on this pod, newest first."""
    attempts = Path(ctx.workdir).resolve().parent
    if not attempts.is_dir():
        return []
    return sorted((int(p.name) for p in attempts.iterdir() if p.name.isdigit() and int(p.name) < ctx.attempt),
                  reverse=True)


def run_root_of(ctx: RunContext, attempt: int) -> Path:
    """The run root of another attempt of this run on this pod (`WORK_DIR/<run>/<attempt>`)."""
    return Path(ctx.workdir).resolve().parent / str(attempt) / ROOT_NAME


def clear_tree_search(idea: Path) -> list[str]:
    """Remove what an earlier tree search left in `idea` (its logs, its `<n>-run` workspaces), so
    upstream picks run index 0 again; returns what was removed."""
    removed: list[str] = []
    if not idea.is_dir():
        return removed
    for entry in sorted(idea.iterdir()):
        if entry.name == "logs" or _RUN_INDEXED.match(entry.name):
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
            removed.append(entry.name)
    return removed


def start(ctx: RunContext, cfg: AiScientistConfig, entry: str, args: dict[str, Any]) -> subprocess.Popen:
    """Start `entry` of the child script in the run root, in a session of its own (a cancel stops
    its whole process group), output appended to `<entry>.log`, without the control plane's
    credentials in its environment (the tree search runs code an LLM wrote)."""
    root = prepare(ctx, cfg, entry)
    args_file = root / f"{entry}.args.json"
    args_file.write_text(json.dumps(args), encoding="utf-8")
    env = upstream_environ(root)
    with open(log_path(ctx, entry), "ab") as log:
        process = subprocess.Popen(
            [str(cfg.python), ENTRY_NAME, entry, args_file.name], cwd=root, env=env,
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
    (root / f"{entry}.pid").write_text(str(process.pid), encoding="utf-8")
    return process


def reap_earlier_attempts(ctx: RunContext, entry: str) -> list[int]:
    """Kill what `entry` children of earlier attempts of this run on this pod left running (their
    worker died, and a child in its own session outlives it): one tree search per GPU.
    Returns the process groups killed."""
    killed = []
    for pidfile in (run_root_of(ctx, attempt) / f"{entry}.pid" for attempt in earlier_attempts(ctx)):
        try:
            group = int(pidfile.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if _kill_group(group, pidfile.parent):
            killed.append(group)
        pidfile.unlink(missing_ok=True)
    return killed


def _kill_group(group: int, root: Path) -> bool:
    """SIGKILL every process of `group` that works inside `root`, so a pid the system has since
    given to an unrelated process is left alone. Linux (/proc) only."""
    found = False
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
            process_group = int(stat[stat.rindex(")") + 2:].split()[2])  # after "(comm)": state, ppid, pgrp
            if process_group == group and os.readlink(entry / "cwd").startswith(str(root)):
                os.kill(int(entry.name), signal.SIGKILL)
                found = True
        except (OSError, ValueError):
            continue
    return found


def run(ctx: RunContext, cfg: AiScientistConfig, entry: str, args: dict[str, Any], ok: tuple[int, ...] = (0,)) -> int:
    """Run `entry` to its end, looking for a cancel while it runs; returns its exit code, raises
    `ChildFailed` for a code not in `ok`."""
    process = start(ctx, cfg, entry, args)
    try:
        while process.poll() is None:
            ctx.checkpoint()
            time.sleep(cfg.poll_s)
    except BaseException:
        stop(process)
        raise
    stop(process)  # its leftovers, if any
    if process.returncode not in ok:
        raise ChildFailed(entry, process.returncode, log_path(ctx, entry))
    return process.returncode


def log_path(ctx: RunContext, entry: str) -> Path:
    return run_root(ctx) / f"{entry}.log"


def stop(process: subprocess.Popen) -> None:
    """SIGTERM the child's process group, give its leader the grace time, then SIGKILL whatever
    of the group is left (upstream's tree search leaves worker processes, as its launcher knows)."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
