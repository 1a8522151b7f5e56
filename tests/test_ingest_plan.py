"""The batch plan sends one update per (document, facet): the highest seq's."""

from __future__ import annotations

from orchestrator.events import make_event, seq_for, validate_event
from orchestrator.ingest import Outcome, _Candidate, _plan
from orchestrator.utc import utcnow


def _candidates(events):
    return [_Candidate(Outcome(i, e["id"], "invalid"), validate_event(e)) for i, e in enumerate(events)]


def test_repeated_facets_in_a_batch_become_one_update_each_with_the_highest_seq():
    run = {"_id": "r1", "status": "RUNNING", "attempt": 1, "maxAttempts": 3, "hypothesisId": "h"}
    events = [make_event("ai.run.stage_progress", "r1", seq_for(1, n), "worker://p",
                         {"stage": "Stage_1", "progress": n / 20}) for n in range(20, 0, -1)]
    plan = _plan(_candidates(events), {"r1": run}, utcnow(), "b", 3)
    run_updates = plan.updates["runs"]
    currents = [u for u in run_updates if u.supersedes and u.supersedes[2] == "currentStageSeq"]
    statuses = [u for u in run_updates if u.supersedes and u.supersedes[2] == "status"]
    assert len(currents) == 1 and currents[0].update["$set"]["currentStage"]["progress"] == 1.0
    assert len(statuses) == 1 and statuses[0].seq == seq_for(1, 20)
    stage_updates = plan.updates["stages"]
    assert len(stage_updates) == 2, "one status and one progress update for the stage"
    assert len(plan.creates["events"]) == 20, "the history keeps every event"
