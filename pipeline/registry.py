"""Pipelines by name, and the check that a named one can run on this worker."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable

from orchestrator.errors import SettingsError
from pipeline import ai_scientist, demo
from pipeline.base import Pipeline
from pipeline.errors import UnknownPipeline

#: Pipeline name -> factory. The name is what a run's `pipeline` field holds.
PIPELINES: dict[str, Callable[[], Pipeline]] = {
    demo.NAME: demo.demo_pipeline,
    ai_scientist.NAME: ai_scientist.ai_scientist_pipeline,
}
#: The pipelines this package ships, before `load_modules` adds a site's; `settings.BUILTIN_PIPELINES`
#: names the same ones for the web processes, which do not load this registry (a test checks).
BUILTIN: tuple[str, ...] = tuple(PIPELINES)

#: Pipelines that need more than this package (an installed library, a checkout, settings).
_AVAILABILITY: dict[str, Callable[[], None]] = {
    ai_scientist.NAME: ai_scientist.check_available,
}


def check_available(name: str) -> None:
    """Raise `UnknownPipeline` or `PipelineUnavailable` (with the fix) if `name` cannot run here."""
    if name not in PIPELINES:
        raise UnknownPipeline(name, PIPELINES)
    check = _AVAILABILITY.get(name)
    if check is not None:
        check()


def describe(name: str) -> str:
    """One line saying what the pipeline `name` does: its factory's `description` attribute if it
    has one, else the first sentence of the docstring of the module that defines the factory (the
    built-ins' modules open with it), so a site's pipeline from PIPELINE_MODULES gets one too."""
    factory = PIPELINES[name]
    given = getattr(factory, "description", None)
    if isinstance(given, str) and given.strip():
        return " ".join(given.split())
    module = inspect.getmodule(factory)
    text = " ".join((inspect.getdoc(module) or "").split("\n\n")[0].split()) if module else ""
    first, dot, _ = text.partition(". ")
    return first + ("." if dot else "")


def get_pipeline(name: str) -> Pipeline:
    """The pipeline called `name`, checked first so a run fails before its first step, not in it."""
    check_available(name)
    return PIPELINES[name]()


def load_modules(names: tuple[str, ...]) -> None:
    """Add the `PIPELINES` of each PIPELINE_MODULES module to the registry, so a site adds its
    own pipelines without forking this package."""
    for name in names:
        try:
            module = importlib.import_module(name)
            PIPELINES.update(module.PIPELINES)
        except (ImportError, AttributeError) as exc:
            raise SettingsError(f"PIPELINE_MODULES names {name!r}, which cannot be loaded: {exc}") from exc
