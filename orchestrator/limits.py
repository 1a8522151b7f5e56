"""A run's wall-clock limits as the frontend, the API and the CLI give them, checked in one place.

On the run document: `limits: {"runS": seconds, "stepS": {step name: seconds}}`, both optional.
They override the pipeline's own defaults (`pipeline.base.Pipeline.limits`); a step or an
attempt past its limit fails with a retryable `Timeout`.
"""

from __future__ import annotations

from typing import Any

from orchestrator.events import STAGE_NAMES

#: Longest limit accepted (about 31 years): beyond it a value is a unit mistake.
MAX_SECONDS = 10**9


def parse_limits(value: Any) -> dict[str, Any]:
    """The limits, normalised (floats); ValueError naming the field and the reason."""
    if value is None:
        return {}
    if not isinstance(value, dict) or set(value) - {"runS", "stepS"}:
        raise ValueError(f"limits must be an object with runS and/or stepS, got {value!r}")
    limits: dict[str, Any] = {}
    if "runS" in value:
        limits["runS"] = seconds("limits.runS", value["runS"])
    steps = value.get("stepS", {})
    if not isinstance(steps, dict):
        raise ValueError(f"limits.stepS must map step names to seconds, got {steps!r}")
    for name, given in steps.items():
        if name not in STAGE_NAMES:
            raise ValueError(f"limits.stepS.{name}: not a step; steps are {', '.join(STAGE_NAMES)}")
        limits.setdefault("stepS", {})[name] = seconds(f"limits.stepS.{name}", given)
    return limits


def seconds(field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < MAX_SECONDS:
        raise ValueError(f"{field} must be a positive number of seconds, got {value!r}")
    return float(value)
