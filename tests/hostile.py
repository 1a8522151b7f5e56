"""Hostile inputs, shared by the unit tests and the real-server lane: each answered 500 once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from orchestrator.safe_json import MAX_FREE_FORM_BYTES
from tests.ingest_helpers import SHA, Worker

Event = dict[str, Any]
DEEP = "[" * 1000 + "]" * 1000


def log_event(w: Worker, **data: Any) -> Event:
    return w.event("ai.run.log", level="info", message="m", **data)


def artifact_event(w: Worker, key: str) -> Event:
    return w.event("ai.artifact.registered", key=key, bytes=1, sha256=SHA, content_type="text/plain", kind="log")


def with_attributes(**attributes: Any) -> Callable[[Worker], Event]:
    return lambda w: {**log_event(w), **attributes}


#: (what, event builder, the field its error names). Each answered 500 before.
HOSTILE: list[tuple[str, Callable[[Worker], Event], str]] = [
    ("type an array", with_attributes(type=["ai.run.log"]), "type"),
    ("type an object", with_attributes(type={"a": 1}), "type"),
    ("time before year 1 in UTC", with_attributes(time="0001-01-01T00:00:00+01:00"), "time"),
    ("time after year 9999 in UTC", with_attributes(time="9999-12-31T23:59:59-01:00"), "time"),
    ("seq 2**64", with_attributes(seq=2**64), "seq"),
    ("seq 2**63", with_attributes(seq=2**63), "seq"),
    ("NUL in a data key", lambda w: log_event(w, kv={"a\x00b": 1}), "data.kv"),
    ("NUL in a data string", lambda w: {**log_event(w), "data": {**log_event(w)["data"], "message": "a\x00"}}, "data.message"),
    ("NUL in a metric name", lambda w: w.event("ai.run.stage_metric", stage="Stage_1", name="loss\x00", value=1.0), "data.name"),
    ("NUL in an artifact key", lambda w: artifact_event(w, f"runs/{w.run_id}/1/a\x00.txt"), "data.key"),
    ("NUL in the id", with_attributes(id="a\x00b"), "id"),
    ("NUL in the source", with_attributes(source="worker://\x00"), "source"),
    ("a lone surrogate in the id", with_attributes(id="\ud800"), "id"),
    ("a lone surrogate in a data string", lambda w: log_event(w, kv={"k": "\udfff"}), "data.kv.k"),
    ("a lone surrogate in an extension", with_attributes(foo="\ud800"), "foo"),
    ("an object as an extension value", with_attributes(foo={"$a": 1}), "foo"),
    ("a huge integer as an extension value", with_attributes(foo=2**70), "foo"),
    ("a huge bytes count", lambda w: {**artifact_event(w, f"runs/{w.run_id}/1/a"), "data": {
        **artifact_event(w, f"runs/{w.run_id}/1/a")["data"], "bytes": 2**64}}, "data.bytes"),
    ("a huge step", lambda w: w.event("ai.run.stage_metric", stage="Stage_1", name="l", value=1.0, step=10**30), "data.step"),
    ("specversion a number", with_attributes(specversion=1.0), "specversion"),
    ("subject of another run", with_attributes(subject="run/other"), "subject"),
    ("subject not run/...", with_attributes(subject="x"), "subject"),
    ("an artifact of another run", lambda w: artifact_event(w, "runs/other-run/1/a.txt"), "data.key"),
    ("an artifact key climbing out", lambda w: artifact_event(w, f"runs/{w.run_id}/../x"), "data.key"),
    ("an artifact key ../x", lambda w: artifact_event(w, "../x"), "data.key"),
    ("an absolute artifact key", lambda w: artifact_event(w, f"/runs/{w.run_id}/1/a"), "data.key"),
    ("the run folder itself", lambda w: artifact_event(w, f"runs/{w.run_id}/"), "data.key"),
    ("a failed artifact of another run", lambda w: w.event("ai.artifact.failed", key="runs/b/x", code="E", message="m"),
     "data.key"),
    ("a paper of another run", lambda w: w.event("ai.paper.generated", artifact_key="runs/b/1/paper.pdf"), "data.artifact_key"),
]


#: (what a hypothesis body adds, status, the field its error names, words of the message).
HOSTILE_HYPOTHESES: list[tuple[str, int, str, str]] = [
    ('"ideaJson": {"x": NaN}', 400, "body", "NaN is not valid JSON"),
    ('"ideaJson": {"x": -Infinity}', 400, "body", "-Infinity"),
    ('"ideaJson": {"x": 1e400}', 400, "body", "out of range"),
    (f'"ideaJson": {{"x": {DEEP}}}', 400, "body", "at most 64 levels"),
    ('"ideaJson": {"$x": 1}', 422, "ideaJson", "leading '$'"),
    ('"ideaJson": {"a": {"x.y": 1}}', 422, "ideaJson.a", "no '.'"),
    ('"ideaJson": {"x": [[1]]}', 422, "ideaJson.x.0", "Arrays directly inside arrays"),
    ('"ideaJson": {"x\\u0000": 1}', 422, "ideaJson", "NUL"),
    ('"ideaJson": {"x": "\\ud800"}', 422, "ideaJson.x", "lone surrogate"),
    ('"ideaJson": {"x": 18446744073709551616}', 422, "ideaJson.x", "64 bits"),
    ('"ideaJson": {"x": "' + "a" * MAX_FREE_FORM_BYTES + '"}', 422, "ideaJson", "at most 262144"),
    ('"ideaJson": []', 422, "ideaJson", "Not a valid mapping"),
    ('"title2": "\\u0000"', 422, "title2", "NUL"),
    ('"priority": 99999999999999999999999', 422, "priority", "64 bits"),
    ('"maxAttempts": 1e400', 400, "body", "out of range"),
    ('"limits": {"runS": NaN}', 400, "body", "NaN"),
    ('"limits": {"stepS": {"$x": 1}}', 422, "limits.stepS", "leading '$'"),
    ('"queue": "\\udc00"', 422, "queue", "lone surrogate"),
]
