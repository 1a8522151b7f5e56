"""Which credentials each step's models need, read the way upstream picks its API clients.

Checked before a step starts, for that step and every later one, so a run missing (say) the
writeup's key fails in ideation with the variable named, not hours of GPU later. The rules
transcribe upstream's `ai_scientist/llm.py` `create_client` (ideation, plots, writeup, review),
`ai_scientist/treesearch/backend` (the tree search: `"claude-" in model` goes to Amazon Bedrock,
anything else, Ollama included, through an OpenAI client that needs OPENAI_API_KEY) and
`ai_scientist/vlm.py` (the writeup's small model and the reviewer also read figures, so they must
be among upstream's vision models). Amazon Bedrock takes credentials from anywhere boto3 looks
(keys, a profile, a pod's role) and its region defaults to us-east-1, so a missing key is only
a gap when boto3, asked in upstream's environment, finds nothing either.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.events import STAGE_INDEX, STAGE_NAMES
from pipeline.ai_scientist.config import NAME, AiScientistConfig, Probe
from pipeline.errors import PipelineUnavailable

#: Any one of these names a source of AWS credentials (keys, a profile, a pod's web identity).
AWS_CREDENTIALS = (("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"), ("AWS_PROFILE",),
                   ("AWS_WEB_IDENTITY_TOKEN_FILE",), ("AWS_CONTAINER_CREDENTIALS_FULL_URI",))
BEDROCK = "Amazon Bedrock"
#: Optional: Semantic Scholar works without a key, rate-limited.
S2_KEY = "S2_API_KEY"
#: The model upstream's journal uses for its summaries and node selection when the config names none.
TREE_SEARCH_DEFAULT_MODEL = "gpt-4o"


@dataclass(frozen=True)
class Need:
    """One model's credential: `variables` (all of them) satisfied by any group."""

    model: str
    provider: str
    groups: tuple[tuple[str, ...], ...]

    def missing(self, env: Mapping[str, str], probe: Probe | None) -> str | None:
        """What is missing, in words, or None."""
        if not self.groups or any(all(env.get(v) for v in group) for group in self.groups):
            return None
        if self.provider == BEDROCK and probe is not None and probe.aws_credentials:
            return None
        return " or ".join(" and ".join(group) for group in self.groups)


def client_need(model: str) -> Need:
    """Upstream `llm.create_client`: the provider and key a model name leads to."""
    if model.startswith("claude-"):
        return Need(model, "Anthropic", (("ANTHROPIC_API_KEY",),))
    if model.startswith("bedrock") and "claude" in model:
        return Need(model, BEDROCK, AWS_CREDENTIALS)
    if model.startswith("vertex_ai") and "claude" in model:
        return Need(model, "Vertex AI", ())  # Google application default credentials: not checkable here
    if model.startswith("ollama/"):
        return Need(model, "Ollama", ())
    if "gpt" in model or "o1" in model or "o3" in model:
        return Need(model, "OpenAI", (("OPENAI_API_KEY",),))
    fixed = {"deepseek-coder-v2-0724": ("DeepSeek", "DEEPSEEK_API_KEY"),
             "deepcoder-14b": ("HuggingFace", "HUGGINGFACE_API_KEY"),
             "llama3.1-405b": ("OpenRouter", "OPENROUTER_API_KEY")}
    if model in fixed:
        provider, variable = fixed[model]
        return Need(model, provider, ((variable,),))
    if "gemini" in model:
        return Need(model, "Gemini", (("GEMINI_API_KEY",),))
    raise PipelineUnavailable(NAME, f"AI-Scientist-v2 does not support the model {model!r}")


def tree_search_need(model: str) -> Need:
    """Upstream `treesearch.backend.get_ai_client`: its Ollama client is an OpenAI client without a key."""
    if "claude-" in model:
        return Need(model, BEDROCK, AWS_CREDENTIALS)
    return Need(model, "OpenAI" if not model.startswith("ollama/") else "Ollama (OpenAI client)",
                (("OPENAI_API_KEY",),))


def tree_search_models(settings: Mapping[str, Any]) -> list[str]:
    """Every model the tree search calls under this config."""
    agent = settings.get("agent") or {}
    models = [(agent.get(part) or {}).get("model") for part in ("code", "feedback", "vlm_feedback")]
    for optional in ("summary", "select_node"):
        models.append((agent.get(optional) or {}).get("model") or TREE_SEARCH_DEFAULT_MODEL)
    return [m for m in models if isinstance(m, str) and m]


def remaining(step: str) -> tuple[str, ...]:
    """`step` and the steps after it."""
    return STAGE_NAMES[STAGE_INDEX[step]:]


def needs(step: str, cfg: AiScientistConfig, settings: Mapping[str, Any], *, generate_ideas: bool) -> list[Need]:
    """The credentials of `step` and of every step after it."""
    per_step: dict[str, list[Need]] = {
        "ideation": [client_need(cfg.model_ideation)] if generate_ideas else [],
        "Stage_1": [tree_search_need(m) for m in tree_search_models(settings)],
        "plots": [client_need(cfg.model_agg_plots)],
        "paper": [client_need(m) for m in (cfg.model_citation, cfg.model_writeup, cfg.model_writeup_small)],
        "auto_validation": [client_need(cfg.model_review)],
    }
    later = remaining(step)
    if step.startswith("Stage_") and step != "Stage_1":
        later = ("Stage_1", *later)  # a stage after a restart starts the tree search over
    return [need for name in later for need in per_step.get(name, [])]


def check(step: str, cfg: AiScientistConfig, settings: Mapping[str, Any], env: Mapping[str, str], *,
          generate_ideas: bool, probe: Probe | None = None) -> None:
    """Raise `PipelineUnavailable` listing every missing credential of this and later steps, and
    every vision model upstream does not have."""
    problems = []
    for need in needs(step, cfg, settings, generate_ideas=generate_ideas):
        gap = need.missing(env, probe)
        if gap:
            problems.append(f"{need.model} ({need.provider}) needs {gap}")
    later = remaining(step)
    vision = [m for s, m in (("paper", cfg.model_writeup_small), ("auto_validation", cfg.model_review)) if s in later]
    if probe is not None:
        problems += [f"{m} is not one of upstream's vision models ({', '.join(probe.vlms)})"
                     for m in vision if m not in probe.vlms]
    if problems:
        unique = list(dict.fromkeys(problems))
        raise PipelineUnavailable(NAME, "the models cannot be reached; set the credentials in the worker's "
                                        "environment or change the models: " + "; ".join(unique))
