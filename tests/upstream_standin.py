"""The stand-in of upstream AI-Scientist-v2 (`fixtures/ai_scientist_v2/`, see its README) installed
as a pod would have it, for the adapter's tests in both lanes."""

from __future__ import annotations

import os
import shutil
import stat
import sys
from pathlib import Path

STANDIN = Path(__file__).parent / "fixtures" / "ai_scientist_v2"
CREDENTIALS = {"OPENAI_API_KEY": "sk-test", "AWS_ACCESS_KEY_ID": "AKIA", "AWS_SECRET_ACCESS_KEY": "secret",
               "AWS_REGION_NAME": "us-east-1", "S2_API_KEY": "s2"}
IDEA = {"Name": "warm_restarts", "Title": "Warm restarts help small CNNs", "Abstract": "Cosine restarts.",
        "Short Hypothesis": "Restarts escape sharp minima.", "Experiments": ["cifar10"],
        "Risk Factors and Limitations": ["small data"]}


def _executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def install_upstream(tmp_path: Path) -> dict[str, str]:
    """A checkout of the stand-in; an interpreter wrapper standing in for upstream's venv (it has a
    `torch` and records each call); the writeup's LaTeX programs on PATH. Returns the environment."""
    checkout = tmp_path / "AI-Scientist-v2"
    shutil.copytree(STANDIN, checkout, ignore=shutil.ignore_patterns("__pycache__"))
    site, tools = tmp_path / "venv-site", tmp_path / "venv-bin"
    (site / "torch").mkdir(parents=True)
    (site / "torch" / "__init__.py").write_text('"""Stands in for PyTorch in the stand-in of upstream\'s venv."""\n')
    tools.mkdir()
    for tool in ("pdflatex", "bibtex", "chktex", "pdftotext"):
        _executable(tools / tool, "#!/bin/sh\nexit 0\n")
    wrapper = tools / "python"
    _executable(wrapper, f'#!/bin/sh\necho "$@" >> {tmp_path}/python-calls.txt\nenv > {tmp_path}/child-env.txt\n'
                         f'PYTHONPATH={site} exec {sys.executable} "$@"\n')
    return {**CREDENTIALS, "AI_SCIENTIST_ROOT": str(checkout), "AI_SCIENTIST_PYTHON": str(wrapper),
            "AI_SCIENTIST_POLL_S": "0.05", "STANDIN_STEP_S": "0.01", "PATH": f"{tools}:{os.environ['PATH']}"}
