"""Where AI-Scientist-v2 is on this pod, how it is run, and what it needs before a GPU is spent.

Settings come from the environment (all optional but `AI_SCIENTIST_ROOT`):

- `AI_SCIENTIST_ROOT`: a checkout of SakanaAI/AI-Scientist-v2 (upstream has no packaging
  metadata; its code, LaTeX templates and `bfts_config.yaml` are used from the checkout).
- `AI_SCIENTIST_PYTHON`: the interpreter of upstream's own environment (default
  `$AI_SCIENTIST_ROOT/.venv/bin/python`): upstream's pins (e.g. `dataclasses-json`, which needs
  marshmallow < 4) and ours cannot share one environment.
- `AI_SCIENTIST_BFTS_CONFIG`: a tree-search config other than the checkout's `bfts_config.yaml`.
- `AI_SCIENTIST_MODEL_<STEP>`: the model of ideation, plot aggregation, writeup, the writeup's
  small model, citations and review (defaults: `launch_scientist_bfts.py`'s).
- `AI_SCIENTIST_REVIEW_ENSEMBLE`, `AI_SCIENTIST_REVIEW_REFLECTIONS`, `AI_SCIENTIST_PASS_OVERALL`:
  the review as the replaced worker ran it (3 reviewers, 2 reflections, pass at Overall >= 6).
- `AI_SCIENTIST_POLL_S`: seconds between looks at a running child (default 5).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from orchestrator.settings import SECRET_VARIABLES
from pipeline.errors import PipelineUnavailable

NAME = "ai_scientist"
ROOT_ENV = "AI_SCIENTIST_ROOT"
PYTHON_ENV = "AI_SCIENTIST_PYTHON"
BFTS_CONFIG_ENV = "AI_SCIENTIST_BFTS_CONFIG"
INSTALL = ("git clone https://github.com/SakanaAI/AI-Scientist-v2 && cd AI-Scientist-v2 && python3.11 -m venv .venv "
           "&& .venv/bin/pip install torch torchvision torchaudio && .venv/bin/pip install -r requirements.txt; "
           f"then set {ROOT_ENV} to the checkout (see the README, 'The ai_scientist pipeline')")
#: Config values the adapter reads files by: upstream's plotting and writeup read `logs/0-run`
#: (so the experiment name must be `run` and the run index 0) and the summaries the report writes.
ENFORCED = {"exp_name": "run", "generate_report": True}
#: Files of the checkout without which no step can work.
CHECKOUT_FILES = ("ai_scientist/__init__.py", "ai_scientist/blank_icbinb_latex/template.tex")
#: Upstream modules the child process imports, and torch, which upstream's launcher imports and
#: the code its tree search writes uses: the check that upstream's environment is complete.
MODULES = ("torch",
    "ai_scientist.treesearch.perform_experiments_bfts_with_agentmanager", "ai_scientist.treesearch.bfts_utils",
    "ai_scientist.perform_ideation_temp_free", "ai_scientist.perform_plotting", "ai_scientist.perform_icbinb_writeup",
    "ai_scientist.perform_llm_review", "ai_scientist.perform_vlm_review", "ai_scientist.utils.token_tracker",
)
#: Seconds the import check may take: upstream imports torch and transformers.
PROBE_TIMEOUT_S = 300
#: Programs the writeup runs (`perform_icbinb_writeup.py`: compile_latex, check_page_limit, chktex).
LATEX_TOOLS = ("pdflatex", "bibtex", "chktex", "pdftotext")
#: Variables that would make upstream's interpreter import from somewhere else than its own environment.
_FOREIGN = ("PYTHONPATH", "PYTHONHOME")
#: Run in upstream's interpreter: import everything, then report what upstream itself knows.
_PROBE = """
import importlib, json
for name in %r:
    importlib.import_module(name)
from ai_scientist.vlm import AVAILABLE_VLMS
try:
    import boto3
    aws = boto3.Session().get_credentials() is not None
except Exception:
    aws = None
print(json.dumps({"vlms": list(AVAILABLE_VLMS), "aws_credentials": aws}))
"""


@dataclass(frozen=True)
class Probe:
    """What upstream's own environment says: its vision models and whether boto3 finds AWS credentials
    (keys, a profile, a role; None when boto3 is not there)."""

    vlms: tuple[str, ...]
    aws_credentials: bool | None


_PROBED: dict[tuple[str, str], Probe] = {}


@dataclass(frozen=True)
class AiScientistConfig:
    """One pod's settings; model defaults are launch_scientist_bfts.py's."""

    root: Path
    python: Path
    bfts_config: Path
    model_ideation: str = "gpt-4o-2024-05-13"
    model_agg_plots: str = "o3-mini-2025-01-31"
    model_writeup: str = "o1-preview-2024-09-12"
    model_writeup_small: str = "gpt-4o-2024-05-13"
    model_citation: str = "gpt-4o-2024-11-20"
    model_review: str = "gpt-4o-2024-11-20"
    num_cite_rounds: int = 20
    writeup_retries: int = 3
    page_limit: int = 4
    ideation_generations: int = 1
    ideation_reflections: int = 5
    review_ensemble: int = 3
    review_reflections: int = 2
    pass_overall: float = 6.0
    poll_s: float = 5.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AiScientistConfig:
        env = os.environ if environ is None else environ
        root_text = env.get(ROOT_ENV, "")
        if not root_text:
            raise PipelineUnavailable(NAME, f"{ROOT_ENV} is not set. Install AI-Scientist-v2: {INSTALL}")
        root = Path(root_text).resolve()
        python = _interpreter(env.get(PYTHON_ENV) or str(root / ".venv" / "bin" / "python"))
        config = Path(env.get(BFTS_CONFIG_ENV) or root / "bfts_config.yaml")
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in ("root", "python", "bfts_config"):
                continue
            variable = "AI_SCIENTIST_" + f.name.upper()
            text = env.get(variable, "").strip()
            if text:
                values[f.name] = _parse(variable, text, type(f.default))
        return cls(root=root, python=python, bfts_config=config, **values)

    def check_code(self) -> Probe:
        """Raise `PipelineUnavailable` naming the fix unless the checkout, its config and an
        interpreter that imports upstream are all there. The import check runs once per process."""
        missing = [name for name in CHECKOUT_FILES if not (self.root / name).is_file()]
        if missing:
            raise PipelineUnavailable(NAME, f"{self.root} is not an AI-Scientist-v2 checkout (missing "
                                            f"{', '.join(missing)}). Install it: {INSTALL}")
        if not self.bfts_config.is_file():
            raise PipelineUnavailable(NAME, f"no tree-search config at {self.bfts_config}; set "
                                            f"{BFTS_CONFIG_ENV} or restore the checkout's bfts_config.yaml")
        if not os.access(self.python, os.X_OK):
            raise PipelineUnavailable(NAME, f"no Python interpreter at {self.python}; set {PYTHON_ENV} to "
                                            f"the interpreter of upstream's environment. Install it: {INSTALL}")
        return self._probe()

    def check_tools(self) -> None:
        """Raise `PipelineUnavailable` unless the writeup's LaTeX and PDF programs are on upstream's PATH."""
        path = upstream_environ(self.root).get("PATH")
        missing = [tool for tool in LATEX_TOOLS if shutil.which(tool, path=path) is None]
        if missing:
            raise PipelineUnavailable(NAME, f"the writeup needs {', '.join(missing)} on PATH: install a TeX "
                                            "distribution, poppler-utils and chktex (e.g. apt-get install texlive-full "
                                            "poppler-utils chktex)")

    def _probe(self) -> Probe:
        key = (str(self.python), str(self.root))
        if key in _PROBED:
            return _PROBED[key]
        code = _PROBE % (MODULES,)
        try:
            done = subprocess.run([str(self.python), "-c", code], cwd=self.root, capture_output=True, text=True,
                                  env=upstream_environ(self.root), timeout=PROBE_TIMEOUT_S, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PipelineUnavailable(NAME, f"{self.python} could not import AI-Scientist-v2: {exc}") from exc
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise PipelineUnavailable(NAME, f"{self.python} cannot import AI-Scientist-v2 from {self.root} "
                                            f"({last}); install upstream's requirements into that "
                                            f"environment: {INSTALL}")
        try:
            said = json.loads(done.stdout.strip().splitlines()[-1])
            probe = Probe(tuple(said["vlms"]), said["aws_credentials"])
        except (IndexError, ValueError, KeyError, TypeError) as exc:
            raise PipelineUnavailable(NAME, f"{self.python} imported AI-Scientist-v2 but its report was "
                                            f"unreadable ({exc}): {done.stdout[-300:]!r}") from exc
        _PROBED[key] = probe
        return probe

    def tree_search_settings(self) -> tuple[dict[str, Any], list[str]]:
        """The tree-search config with `ENFORCED` applied, and a note per value that was changed."""
        try:
            settings = yaml.safe_load(self.bfts_config.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise PipelineUnavailable(NAME, f"cannot read the tree-search config {self.bfts_config}: {exc}") from exc
        if not isinstance(settings, dict):
            raise PipelineUnavailable(NAME, f"the tree-search config {self.bfts_config} is not a mapping")
        changed = [f"{key}: {settings.get(key)!r} -> {value!r}" for key, value in ENFORCED.items()
                   if settings.get(key) != value]
        return {**settings, **ENFORCED}, changed


def upstream_environ(root: Path) -> dict[str, str]:
    """The environment of every upstream process: the worker's, without the control plane's
    credentials (the tree search runs code an LLM wrote), with `AI_SCIENTIST_ROOT` at `root`."""
    env = {k: v for k, v in os.environ.items() if k not in SECRET_VARIABLES and k not in _FOREIGN}
    env.update({ROOT_ENV: str(root), "PYTHONUNBUFFERED": "1"})
    return env


def _interpreter(text: str) -> Path:
    """A bare name is looked up on PATH, a relative path taken from the worker's directory: the
    children run elsewhere, so the path they get is absolute."""
    if os.sep not in text:
        return Path(shutil.which(text) or text)
    return Path(text).expanduser().resolve()


def _parse(variable: str, text: str, kind: type) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise PipelineUnavailable(NAME, f"{variable}={text!r} is not a {kind.__name__}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise PipelineUnavailable(NAME, f"{variable}={text!r} must be a finite number")
    if kind in (int, float) and value <= 0 and variable != "AI_SCIENTIST_PASS_OVERALL":
        raise PipelineUnavailable(NAME, f"{variable}={text!r} must be positive")
    return value
