"""An AI-Scientist idea from a hypothesis: complete `ideaJson` as given, gaps filled with defaults.

Upstream's AgentManager refuses an idea without Title, Abstract, Short Hypothesis, Experiments
and Risk Factors and Limitations, and the launcher names the idea directory after `Name`. A
hypothesis queued from the frontend often carries only some of them, so, as the replaced worker
did, missing or empty keys are filled (and the filling is logged):

| key | default |
|---|---|
| Name | the Title as a lowercase slug |
| Title | the hypothesis title |
| Abstract | the hypothesis idea text |
| Short Hypothesis | the hypothesis idea text |
| Experiments | `DEFAULT_EXPERIMENTS` |
| Risk Factors and Limitations | `DEFAULT_RISKS` |
"""

from __future__ import annotations

import re
from typing import Any

from pipeline.errors import InvalidIdea

IDEA_KEYS = ("Name", "Title", "Abstract", "Short Hypothesis", "Experiments", "Risk Factors and Limitations")
DEFAULT_EXPERIMENTS = ("Implement the proposed method and a strong baseline, compare them on standard "
                       "datasets over several seeds, and ablate each component of the method.")
DEFAULT_RISKS = "Not stated by the submitter; the results may not generalise beyond the datasets used."
NAME_MAX = 60


def slug(text: str) -> str:
    """A file-system-safe lowercase name: the idea directory and the paper are named after it."""
    name = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:NAME_MAX].strip("_")
    return name or "idea"


def hypothesis_text(hypothesis: dict[str, Any]) -> str:
    """The title and idea text, the workshop description for upstream's own ideation."""
    return "\n\n".join(str(hypothesis.get(k) or "").strip() for k in ("title", "idea")).strip()


def complete(idea: dict[str, Any], hypothesis: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """`idea` with every key upstream needs, and the names of the keys that were filled.

    Raises `InvalidIdea` when there is neither a title nor any text to build on."""
    title = _text(idea.get("Title")) or _text(hypothesis.get("title"))
    body = _text(idea.get("Abstract")) or _text(idea.get("Short Hypothesis")) or _text(hypothesis.get("idea"))
    if not title or not body:
        raise InvalidIdea("The idea needs a title and a description: ideaJson has no Title/Abstract and the "
                          "hypothesis no title/idea text.")
    defaults = {"Title": title, "Abstract": body, "Short Hypothesis": body, "Experiments": DEFAULT_EXPERIMENTS,
                "Risk Factors and Limitations": DEFAULT_RISKS, "Name": slug(title)}
    filled = [key for key in IDEA_KEYS if not _present(idea.get(key))]
    done = {**idea, **{key: defaults[key] for key in filled}}
    check_types(done)
    done["Name"] = slug(done["Name"])
    return done, filled


def check_types(idea: dict[str, Any]) -> None:
    """Raise `InvalidIdea` for a value upstream would fail on hours later: it concatenates Title,
    Abstract, Short Hypothesis and Code as text (agent_manager.py `_get_task_desc_str`), joins
    Experiments (text, a list of texts or a list of objects) in Stage_3 and Risk Factors and
    Limitations (text or a list of texts) in Stage_4 (`_curate_task_desc`)."""
    for key in ("Name", "Title", "Abstract", "Short Hypothesis", "Code"):
        if key in idea and not isinstance(idea[key], str):
            raise InvalidIdea(f"ideaJson.{key} must be text, not {type(idea[key]).__name__}.")
    experiments = idea.get("Experiments")
    if not (isinstance(experiments, str) or _list_of(experiments, str) or _list_of(experiments, dict)):
        raise InvalidIdea("ideaJson.Experiments must be text, a list of texts or a list of objects.")
    risks = idea.get("Risk Factors and Limitations")
    if not (isinstance(risks, str) or _list_of(risks, str)):
        raise InvalidIdea("ideaJson.Risk Factors and Limitations must be text or a list of texts.")


def _list_of(value: Any, kind: type) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(item, kind) for item in value)


def is_complete(idea: Any) -> bool:
    return isinstance(idea, dict) and all(_present(idea.get(k)) for k in IDEA_KEYS)


def _present(value: Any) -> bool:
    if isinstance(value, str):
        return bool(value.strip())
    return isinstance(value, (list, dict)) and bool(value)


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""
