import pickle
import subprocess
import sys
from pathlib import Path

import pytest

import pipeline
from orchestrator.events import STAGE_NAMES
from orchestrator.settings import DEFAULT_PIPELINE
from pipeline import (
    PIPELINES,
    AllNodesBuggy,
    MaxIterationsReached,
    Pipeline,
    PipelineError,
    PipelineUnavailable,
    Step,
    UnknownPipeline,
    check_available,
    get_pipeline,
)

ROOT = Path(__file__).resolve().parents[1]


def _noop(ctx):
    return {}


def test_an_unknown_pipeline_name_is_refused_with_the_known_names():
    with pytest.raises(UnknownPipeline) as caught:
        get_pipeline("alchemy")
    message = str(caught.value)
    assert "'alchemy'" in message
    assert "Known pipelines: ai_scientist, demo." in message
    assert isinstance(caught.value, PipelineError)


def test_check_available_refuses_an_unknown_name_the_same_way():
    with pytest.raises(UnknownPipeline, match="Known pipelines: ai_scientist, demo"):
        check_available("")


def test_the_demo_pipeline_is_available_and_has_every_stage_in_order():
    check_available("demo")
    demo = get_pipeline("demo")
    assert demo.name == "demo"
    assert demo.step_names == STAGE_NAMES
    assert all(callable(step.run) for step in demo.steps)


def test_every_registered_pipeline_has_every_stage_in_order():
    for name, factory in PIPELINES.items():
        built = factory()
        assert built.name == name
        assert built.step_names == STAGE_NAMES


def test_a_step_must_be_named_after_a_stage():
    with pytest.raises(ValueError, match="not a stage"):
        Step("Stage_5", _noop)


def test_a_pipeline_refuses_steps_out_of_stage_order_or_repeated():
    with pytest.raises(ValueError, match="out of stage order"):
        Pipeline("x", (Step("Stage_2", _noop), Step("Stage_1", _noop)))
    with pytest.raises(ValueError, match="repeats"):
        Pipeline("x", (Step("Stage_1", _noop), Step("Stage_1", _noop)))


def test_a_pipeline_finds_its_steps_by_name():
    demo = get_pipeline("demo")
    assert demo.step("paper").name == "paper"
    with pytest.raises(KeyError, match="no step 'Stage_9'"):
        demo.step("Stage_9")


def test_steps_are_frozen():
    step = Step("ideation", _noop)
    with pytest.raises(AttributeError):
        step.name = "paper"


@pytest.mark.parametrize("error", [
    UnknownPipeline("x", ["demo"]),
    PipelineUnavailable("ai_scientist", "install it"),
    MaxIterationsReached("Stage_1", 20),
    AllNodesBuggy("Stage_2", 7),
    pipeline.InvalidIdea("empty"),
])
def test_errors_survive_pickling_with_their_message(error):
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)


def test_the_pipeline_package_imports_no_celery_flask_mongo_or_http_library():
    code = (
        "import sys, pipeline, pipeline.demo, pipeline.ai_scientist\n"
        "banned = ('celery', 'kombu', 'flask', 'pymongo', 'requests', 'httpx', 'urllib3', 'aiohttp')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in banned))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_default_pipeline_of_a_run_is_registered():
    assert DEFAULT_PIPELINE in pipeline.PIPELINES


def test_a_pipeline_s_limits_and_a_run_s_overrides():
    from pipeline.base import Pipeline, Step

    chosen = Pipeline("p", (Step("Stage_1", lambda ctx: {}, timeout_s=60), Step("Stage_2", lambda ctx: {})), timeout_s=600)
    assert chosen.limits(None) == (600, {"Stage_1": 60, "Stage_2": None})
    assert chosen.limits({"runS": 30, "stepS": {"Stage_2": 5}}) == (30, {"Stage_1": 60, "Stage_2": 5})
    for bad, field in [({"runS": 0}, "limits.runS"), ({"runS": True}, "limits.runS"),
                       ({"stepS": {"Stage_9": 1}}, "limits.stepS.Stage_9"), ({"stepS": []}, "limits.stepS"),
                       ({"other": 1}, "limits must be"), ("soon", "limits must be")]:
        with pytest.raises(ValueError, match=field.replace(".", r"\.")):
            chosen.limits(bad)


def test_the_settings_name_exactly_the_pipelines_the_registry_ships() -> None:
    from orchestrator.settings import BUILTIN_PIPELINES, DEFAULT_PIPELINE
    from pipeline import ai_scientist, demo, registry

    assert set(BUILTIN_PIPELINES) == {demo.NAME, ai_scientist.NAME}
    assert set(BUILTIN_PIPELINES) == set(registry.BUILTIN), "a pipeline added to the registry is named in settings too"
    assert DEFAULT_PIPELINE in BUILTIN_PIPELINES
