"""Every mapper, applied through `ingest` on mongomock: what each event type writes, that a
repeat or a late arrival changes nothing it should not, and the status rules."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from orchestrator import mappers
from orchestrator.events import EVENT_TYPES, STAGE_INDEX, record_id, seq_for, validate_event
from orchestrator.ingest import ACCEPTED
from tests.ingest_helpers import BUCKET, SHA, T0, Worker, apply, documents, full_run, insert_run


def _run(db: Any, run_id: str) -> dict[str, Any]:
    return db.runs.find_one({"_id": run_id})


def _stage(db: Any, run_id: str, stage: str) -> dict[str, Any]:
    return db.stages.find_one({"_id": f"{run_id}:{stage}"})


def _time(worker: Worker, n: int) -> Any:
    return T0 + timedelta(hours=worker.attempt, seconds=n)


# --- pure function properties -------------------------------------------------------------------


def test_mappers_never_upsert_and_every_update_of_a_facet_is_guarded_by_its_seq() -> None:
    run = {"_id": "r", "attempt": 1, "maxAttempts": 3, "hypothesisId": "h"}
    for event in full_run(Worker("r")) + full_run(Worker("r", n=50), outcome="failure"):
        writes = mappers.writes_for(validate_event(event), run, received_at=T0, bucket=BUCKET, default_max_attempts=3)
        assert isinstance(writes[0], mappers.Create) and writes[0].collection == "events"
        for write in writes:
            if isinstance(write, mappers.Update) and "$set" in write.update:
                seq_fields = [k for k in write.update["$set"] if k.endswith("Seq") or k.startswith("metricSeqs.")]
                assert seq_fields, f"{event['type']} sets {write.update['$set']} without a seq"


# --- one test per event type --------------------------------------------------------------------


def test_every_accepted_event_lands_in_the_history_with_time_and_trace(mock_db: Any) -> None:
    run_id = insert_run(mock_db)
    event = Worker(run_id).event("ai.run.log", level="info", message="hello", kv={"a": 1})
    event["traceparent"] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert apply(mock_db, [event])[0].status == ACCEPTED
    record = mock_db.events.find_one({"eventId": event["id"]})
    assert record["source"] == "worker://pod-a" and record["runId"] == run_id and record["type"] == "ai.run.log"
    assert record["seq"] == seq_for(1, 1) and record["time"] == T0 + timedelta(hours=1, seconds=1)
    assert record["data"] == {"run_id": run_id, "level": "info", "message": "hello", "kv": {"a": 1}}
    assert record["traceparent"] == event["traceparent"] and record["receivedAt"].tzinfo is not None
    assert _run(mock_db, run_id)["lastEventSeq"] == seq_for(1, 1)


def test_enqueued_and_log_only_add_history(mock_db: Any) -> None:
    run_id = insert_run(mock_db)
    w = Worker(run_id)
    before = _run(mock_db, run_id)
    apply(mock_db, [w.event("ai.run.enqueued", hypothesis_id="h", priority=5), w.event("ai.run.log", level="info", message="m")])
    after = _run(mock_db, run_id)
    changed = {k for k in after if after.get(k) != before.get(k)}
    assert changed == {"lastEventSeq", "updatedAt"}
    assert mock_db.events.count_documents({"runId": run_id}) == 2


def test_started_sets_starting_pod_and_the_earliest_start_and_the_first_step_running(mock_db: Any) -> None:
    run_id = insert_run(mock_db, status="SCHEDULED")
    w = Worker(run_id)
    apply(mock_db, [w.event("ai.run.started", pod_id="pod-a", attempt=1, gpu="A100", region="eu", image="img:1")])
    run = _run(mock_db, run_id)
    assert run["status"] == "STARTING" and run["statusSeq"] == seq_for(1, 1) and run["claimedBy"] == "pod-a"
    assert run["pod"] == {"id": "pod-a", "gpu": "A100", "region": "eu", "image": "img:1"}
    assert run["startedAt"] == _time(w, 1)
    apply(mock_db, [w.event("ai.run.stage_started", stage="ideation")])
    assert _run(mock_db, run_id)["status"] == "RUNNING"


def test_heartbeat_keeps_the_latest_time_and_the_highest_seq_gpu_reading(mock_db: Any) -> None:
    run_id = insert_run(mock_db)
    w = Worker(run_id)
    early = w.event("ai.run.heartbeat", gpu_util=10.0, mem_gb=1.0, temp_c=40.0)
    late = w.event("ai.run.heartbeat", gpu_util=90.0, mem_gb=2.0, temp_c=80.0)
    bare = Worker(run_id, n=0).event("ai.run.heartbeat")  # seq 1 again but another id: no gpu data
    bare["id"] = "bare"
    apply(mock_db, [late, early, bare])
    run = _run(mock_db, run_id)
    assert run["lastHeartbeat"] == _time(w, 2)
    assert run["gpu"] == {"util": 90.0, "memGb": 2.0, "tempC": 80.0}


def test_stage_started_progress_completed_build_the_stage_document(mock_db: Any) -> None:
    run_id = insert_run(mock_db)
    w = Worker(run_id)
    events = [
        w.event("ai.run.stage_started", stage="Stage_2", desc="d"),
        w.event("ai.run.stage_progress", stage="Stage_2", progress=0.25),
        w.event("ai.run.stage_completed", stage="Stage_2", duration_s=12.5, summary={"best_lr": 0.01, "trials": [{"lr": 0.1}]}),
    ]
    apply(mock_db, events[:2])
    stage = _stage(mock_db, run_id, "Stage_2")
    assert (stage["status"], stage["progress"]) == ("RUNNING", 0.25)
    assert _run(mock_db, run_id)["currentStage"] == {"name": "Stage_2", "progress": 0.25}
    apply(mock_db, events[2:])
    stage = _stage(mock_db, run_id, "Stage_2")
    assert stage["runId"] == run_id and stage["index"] == STAGE_INDEX["Stage_2"] and stage["name"] == "Stage_2"
    assert stage["description"] == "Baseline Tuning"
    assert (stage["status"], stage["progress"]) == ("COMPLETED", 1.0)
    assert stage["startedAt"] == _time(w, 1) and stage["completedAt"] == _time(w, 3) and stage["durationS"] == 12.5
    assert stage["summary"] == {"best_lr": 0.01, "trials": [{"lr": 0.1}]}
    run = _run(mock_db, run_id)
    assert run["status"] == "RUNNING" and run["currentStage"] == {"name": "Stage_2", "progress": 1.0}


def test_a_late_progress_event_does_not_undo_a_completed_stage(mock_db: Any) -> None:
    run_id = insert_run(mock_db)
    w = Worker(run_id)
    started, progress, done = (
        w.event("ai.run.stage_started", stage="Stage_1"),
        w.event("ai.run.stage_progress", stage="Stage_1", progress=0.5),
        w.event("ai.run.stage_completed", stage="Stage_1", summary={}),
    )
    apply(mock_db, [done, started, progress])
    stage = _stage(mock_db, run_id, "Stage_1")
    assert (stage["status"], stage["progress"], stage["startedAt"]) == ("COMPLETED", 1.0, _time(w, 1))


def test_stage_metric_keeps_the_highest_seq_value_per_name_on_run_and_stage(mock_db: Any) -> None:
    run_id = insert_run(mock_db)
    w = Worker(run_id)
    events = [
        w.event("ai.run.stage_metric", stage="Stage_1", name="loss", value=v, step=i) for i, v in enumerate((0.9, 0.5, 0.3))
    ]
    events.append(w.event("ai.run.stage_metric", stage="Stage_1", name="acc", value=0.8))
    apply(mock_db, list(reversed(events)))
    assert _run(mock_db, run_id)["metrics"] == {"loss": 0.3, "acc": 0.8}
    assert _stage(mock_db, run_id, "Stage_1")["metrics"] == {"loss": 0.3, "acc": 0.8}
    history = [e["data"]["value"] for e in mock_db.events.find({"runId": run_id, "data.name": "loss"}).sort("seq", 1)]
    assert history == [0.9, 0.5, 0.3]


def test_non_retryable_failure_stores_the_error_and_fails_run_and_stage(mock_db: Any) -> None:
    run_id = insert_run(mock_db, status="RUNNING")
    w = Worker(run_id)
    failed = w.event("ai.run.failed", stage="Stage_3", code="AllNodesBuggy", message="all buggy", traceback="tb", retryable=False)
    apply(mock_db, [failed, failed])
    run = _run(mock_db, run_id)
    assert run["status"] == "FAILED" and run["finishedAt"] == _time(w, 1)
    assert run["error"] == {"code": "AllNodesBuggy", "message": "all buggy", "traceback": "tb", "retryable": False,
                            "stage": "Stage_3", "attempt": 1, "eventId": failed["id"]}
    assert run["attempts"] == [{"code": "AllNodesBuggy", "message": "all buggy", "retryable": False, "stage": "Stage_3",
                                "attempt": 1, "at": _time(w, 1), "eventId": failed["id"]}]
    assert _stage(mock_db, run_id, "Stage_3")["status"] == "FAILED"


def test_retryable_failure_with_attempts_left_requeues_with_a_backoff(mock_db: Any) -> None:
    run_id = insert_run(mock_db, status="RUNNING", attempt=2, max_attempts=3)
    w = Worker(run_id, attempt=2)
    apply(mock_db, [w.event("ai.run.failed", code="CudaOutOfMemory", message="oom", retryable=True)])
    run = _run(mock_db, run_id)
    assert run["status"] == "QUEUED" and run["notBefore"] == _time(w, 1) + timedelta(seconds=60)
    assert "finishedAt" not in run and run["error"]["retryable"] is True and run["attempt"] == 2


def test_retryable_failure_of_the_last_attempt_fails_the_run(mock_db: Any) -> None:
    run_id = insert_run(mock_db, status="RUNNING", attempt=3, max_attempts=3)
    apply(mock_db, [Worker(run_id, attempt=3).event("ai.run.failed", code="Timeout", message="t", retryable=True)])
    assert _run(mock_db, run_id)["status"] == "FAILED"


def test_canceled_ends_the_run_and_keeps_who_asked(mock_db: Any) -> None:
    run_id = insert_run(mock_db, status="RUNNING", cancel={"by": "alice", "reason": "api"}, cancelRequested=True)
    w = Worker(run_id)
    apply(mock_db, [w.event("ai.run.canceled", reason="canceled at checkpoint")])
    run = _run(mock_db, run_id)
    assert run["status"] == "CANCELED" and run["finishedAt"] == _time(w, 1)
    assert run["cancel"] == {"by": "alice", "reason": "canceled at checkpoint", "at": _time(w, 1), "eventId": f"{run_id}-a1-0001"}


def test_completed_from_an_earlier_verdict_ends_the_attempt_without_a_second_validation(mock_db: Any) -> None:
    run_id = insert_run(mock_db, status="STARTING", attempt=2)
    apply(mock_db, full_run(Worker(run_id, attempt=2), outcome="reused"))
    run = _run(mock_db, run_id)
    assert (run["status"], run["verdict"]) == ("AWAITING_HUMAN", "pass")
    assert mock_db.validations.count_documents({"runId": run_id}) == 0


def test_completed_of_an_attempt_the_run_has_left_does_not_move_it(mock_db: Any) -> None:
    run_id = insert_run(mock_db, status="RUNNING", attempt=3)
    apply(mock_db, full_run(Worker(run_id, attempt=2), outcome="reused"))
    assert _run(mock_db, run_id)["status"] == "RUNNING"


def test_ideation_sets_the_count_on_the_hypothesis_and_the_run(mock_db: Any) -> None:
    run_id = insert_run(mock_db)
    w = Worker(run_id)
    older = Worker(run_id, n=-1).event("ai.ideation.generated", count=1)  # seq below the first one's
    apply(mock_db, [w.event("ai.ideation.generated", count=12, top_k=3), older])
    run = _run(mock_db, run_id)
    hypothesis = mock_db.hypotheses.find_one({"_id": run["hypothesisId"]})
    assert (hypothesis["ideasCount"], hypothesis["topK"], hypothesis["title"]) == (12, 3, "t")
    assert run["ideasCount"] == 12


def test_ideation_records_the_chosen_idea_and_how_the_hypothesis_was_mapped_onto_it(mock_db: Any) -> None:
    run_id = insert_run(mock_db)
    mapping = "The demo maps this hypothesis onto its synthetic experiment adam_optimiser (matched on 'Adam')."
    apply(mock_db, [Worker(run_id).event("ai.ideation.generated", count=10, top_k=1, chosen="adam_optimiser",
                                         mapping=mapping)])
    run = _run(mock_db, run_id)
    hypothesis = mock_db.hypotheses.find_one({"_id": run["hypothesisId"]})
    for document in (run, hypothesis):
        assert (document["chosenIdea"], document["ideaMapping"]) == ("adam_optimiser", mapping)


def test_paper_generated_records_the_key_and_word_count(mock_db: Any) -> None:
    run_id = insert_run(mock_db)
    key = f"runs/{run_id}/1/paper.pdf"
    apply(mock_db, [Worker(run_id).event("ai.paper.generated", artifact_key=key, word_count=900)])
    assert _run(mock_db, run_id)["paper"] == {"artifactKey": key, "wordCount": 900}


def test_auto_validation_moves_the_run_and_records_the_verdict_with_its_model(mock_db: Any) -> None:
    run_id = insert_run(mock_db, status="RUNNING")
    w = Worker(run_id)
    started = w.event("ai.validation.auto_started", model="reviewer-1", rubric_version="v2")
    apply(mock_db, [started])
    run = _run(mock_db, run_id)
    assert run["status"] == "AUTO_VALIDATING"
    assert run["validation"] == {"model": "reviewer-1", "rubricVersion": "v2", "startedAt": _time(w, 1)}
    completed = w.event("ai.validation.auto_completed", verdict="fail", scores={"soundness": 2.0}, notes="weak")
    apply(mock_db, [completed])
    run = _run(mock_db, run_id)
    assert run["status"] == "AWAITING_HUMAN" and run["verdict"] == "fail"
    record = mock_db.validations.find_one({"eventId": completed["id"]})
    assert {k: record[k] for k in ("runId", "kind", "verdict", "scores", "notes", "model", "createdAt")} == {
        "runId": run_id, "kind": "auto", "verdict": "fail", "scores": {"soundness": 2.0}, "notes": "weak",
        "model": "reviewer-1", "createdAt": _time(w, 2),
    }


def test_a_verdict_records_its_results_beside_its_scores(mock_db: Any) -> None:
    run_id = insert_run(mock_db, status="RUNNING")
    results = {"metric": "validation log-loss", "arms": [{"name": "baseline", "mean": 0.68, "stderr": 0.003, "n": 5}],
               "test": {"name": "paired t-test", "statistic": 14.8, "df": 4, "p_value": 6e-5}}
    completed = Worker(run_id).event("ai.validation.auto_completed", verdict="pass", scores={"overall": 1.0},
                                     results=results)
    apply(mock_db, [completed])
    record = mock_db.validations.find_one({"eventId": completed["id"]})
    assert (record["scores"], record["results"]) == ({"overall": 1.0}, results)


def test_a_verdict_that_arrives_before_its_auto_started_gets_the_model_later(mock_db: Any) -> None:
    run_id = insert_run(mock_db, status="RUNNING")
    w = Worker(run_id)
    started = w.event("ai.validation.auto_started", model="reviewer-1")
    completed = w.event("ai.validation.auto_completed", verdict="pass")
    apply(mock_db, [completed])
    assert mock_db.validations.find_one({"eventId": completed["id"]})["model"] is None
    apply(mock_db, [started])
    assert mock_db.validations.find_one({"eventId": completed["id"]})["model"] == "reviewer-1"
    assert _run(mock_db, run_id)["status"] == "AWAITING_HUMAN"


def test_artifact_registered_is_stored_under_exactly_the_uploaded_key(mock_db: Any) -> None:
    run_id = insert_run(mock_db)
    w = Worker(run_id)
    event = w.event("ai.artifact.registered", key=f"runs/{run_id}/1/a b/fig-1.png", bytes=2048, sha256=SHA,
                    content_type="image/png", kind="figure")
    apply(mock_db, [event, event])
    assert list(mock_db.artifacts.find({"runId": run_id})) == [{
        "_id": record_id(event["source"], event["id"]), "source": event["source"], "eventId": event["id"],
        "runId": run_id, "key": f"runs/{run_id}/1/a b/fig-1.png", "bucket": BUCKET, "status": "registered",
        "bytes": 2048, "sha256": SHA, "contentType": "image/png", "kind": "figure", "createdAt": _time(w, 1),
    }]


def test_artifact_failed_is_recorded_as_a_failed_artifact(mock_db: Any) -> None:
    run_id = insert_run(mock_db)
    event = Worker(run_id).event("ai.artifact.failed", key=f"runs/{run_id}/1/x.pdf", code="UploadFailed", message="503 from S3")
    apply(mock_db, [event])
    record = mock_db.artifacts.find_one({"eventId": event["id"]})
    assert (record["status"], record["key"]) == ("failed", f"runs/{run_id}/1/x.pdf")
    assert (record["code"], record["message"]) == ("UploadFailed", "503 from S3")


def test_a_late_artifact_registration_is_never_dropped(mock_db: Any) -> None:
    """The old seq gate dropped anything at or below lastEventSeq; additive facts must survive."""
    run_id = insert_run(mock_db)
    w = Worker(run_id)
    artifact = w.event("ai.artifact.registered", key=f"runs/{run_id}/1/k", bytes=1, sha256=SHA, content_type="text/plain", kind="log")
    later = [w.event("ai.run.log", level="info", message=str(i)) for i in range(3)]
    apply(mock_db, later)
    assert apply(mock_db, [artifact])[0].status == ACCEPTED
    assert mock_db.artifacts.count_documents({"runId": run_id}) == 1


# --- status rules ---------------------------------------------------------------------------------


def test_a_stage_event_after_auto_completed_does_not_drag_the_status_back_in_either_order(mock_db: Any) -> None:
    w = Worker("placeholder")
    completed = w.event("ai.validation.auto_completed", verdict="pass")
    stage_done = w.event("ai.run.stage_completed", stage="auto_validation", summary={})
    for order in ([completed, stage_done], [stage_done, completed]):
        run_id = insert_run(mock_db, status="AUTO_VALIDATING")
        events = [
            {**e, "id": f"{run_id}-{e['id']}", "subject": f"run/{run_id}", "data": {**e["data"], "run_id": run_id}}
            for e in order
        ]
        apply(mock_db, events)
        assert _run(mock_db, run_id)["status"] == "AWAITING_HUMAN"


def test_late_events_of_an_earlier_attempt_never_move_the_current_attempts_status(mock_db: Any) -> None:
    run_id = insert_run(mock_db, status="RUNNING", attempt=2)
    old = Worker(run_id, attempt=1)
    apply(mock_db, [Worker(run_id, attempt=2).event("ai.run.stage_started", stage="Stage_2")])
    late = [
        old.event("ai.validation.auto_started", model="m"),
        old.event("ai.run.failed", code="X", message="m", retryable=False),
    ]
    apply(mock_db, late)
    run = _run(mock_db, run_id)
    assert run["status"] == "RUNNING" and run["statusSeq"] == seq_for(2, 1)
    assert run["error"]["attempt"] == 1  # the failure is still recorded, it just moves nothing
    assert len(run["attempts"]) == 1


def test_a_requeued_run_is_not_revived_by_late_events_of_its_attempt(mock_db: Any) -> None:
    """The sweeper requeued the attempt (lease expired, `attempt` kept); the dead worker's
    buffered events arrive afterwards and must leave the run for the dispatcher."""
    run_id = insert_run(mock_db, status="QUEUED", attempt=1)
    apply(mock_db, [Worker(run_id).event("ai.run.stage_progress", stage="Stage_1", progress=0.9)])
    assert _run(mock_db, run_id)["status"] == "QUEUED"


@pytest.mark.parametrize("status", ["FAILED", "CANCELED", "HUMAN_VALIDATED"])
def test_events_never_move_an_ended_run(mock_db: Any, status: str) -> None:
    run_id = insert_run(mock_db, status=status)
    w = Worker(run_id)
    apply(mock_db, [
        w.event("ai.run.started", pod_id="p", attempt=1),
        w.event("ai.run.failed", code="X", message="m", retryable=True),
    ])
    assert _run(mock_db, run_id)["status"] == status


def test_started_may_land_before_the_claim_write(mock_db: Any) -> None:
    run_id = insert_run(mock_db, status="SCHEDULED")
    apply(mock_db, [Worker(run_id).event("ai.run.stage_started", stage="ideation")])
    assert _run(mock_db, run_id)["status"] == "RUNNING"


def test_retry_end_to_end_requeue_then_second_attempt_ignores_the_first(mock_db: Any) -> None:
    run_id = insert_run(mock_db, status="STARTING", attempt=1)
    first, second = Worker(run_id, attempt=1), Worker(run_id, attempt=2)
    first_events = [first.event("ai.run.started", pod_id="a", attempt=1), first.event("ai.run.stage_started", stage="Stage_1")]
    straggler = first.event("ai.run.stage_progress", stage="Stage_1", progress=0.99)  # sent, delivered late
    failure = first.event("ai.run.failed", stage="Stage_1", code="CudaOutOfMemory", message="oom", retryable=True)
    apply(mock_db, [*first_events, failure])
    assert _run(mock_db, run_id)["status"] == "QUEUED"
    # The dispatcher (not events) moves it on.
    mock_db.runs.update_one({"_id": run_id}, {"$set": {"status": "SCHEDULED", "attempt": 2}})
    apply(mock_db, [second.event("ai.run.started", pod_id="b", attempt=2), straggler])
    run = _run(mock_db, run_id)
    assert run["status"] == "STARTING" and run["pod"]["id"] == "b" and run["statusSeq"] == seq_for(2, 1)
    stage = _stage(mock_db, run_id, "Stage_1")
    assert stage["status"] == "FAILED"  # the attempt-1 progress is older than its own failure
    apply(mock_db, [second.event("ai.run.stage_started", stage="Stage_1")])
    assert _stage(mock_db, run_id, "Stage_1")["status"] == "RUNNING"


def test_applying_the_same_events_twice_changes_no_document(mock_db: Any) -> None:
    """A crash between apply and the dedup record means a resend applies everything again."""
    run_id = insert_run(mock_db)
    events = full_run(Worker(run_id))
    apply(mock_db, events)
    before = documents(mock_db, run_id)
    mock_db.events_seen.delete_many({})
    apply(mock_db, events)
    assert documents(mock_db, run_id) == before


def test_full_run_covers_every_event_type_and_every_event_validates() -> None:
    events = [
        *full_run(Worker("r-1")),
        *full_run(Worker("r-1", n=100), outcome="failure"),
        *full_run(Worker("r-1", n=200), outcome="cancel"),
        *full_run(Worker("r-1", n=300), outcome="reused"),
    ]
    assert {e["type"] for e in events} == set(EVENT_TYPES)
    for event in events:
        validate_event(event)



def test_worker_numbers_seq_within_its_attempts_block() -> None:
    worker = Worker("r-1", attempt=2)
    first, second = (worker.event("ai.run.log", level="info", message=m) for m in "ab")
    assert (first["seq"], second["seq"]) == (seq_for(2, 1), seq_for(2, 2))
    assert first["id"] != second["id"]
