"""The operations overview: one read model of the whole system for a dashboard and for
`manage-runs stats`, assembled from the modules that own each part (runs and queues from
`queries`, pods from `pods`, ingest counts from `ingest_stats`, notifications from `notify`)."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from pymongo.database import Database

from orchestrator import ingest_stats, notify, pods, queries, run_counts
from orchestrator.settings import DEFAULT_QUEUE
from orchestrator.utc import utcnow

#: Runs listed under "deadLetters" (those whose latest dead letter arrived last).
DEAD_LETTER_RUNS = 20
#: Notifications listed (newest first).
RECENT_NOTIFICATIONS = 10


def overview(db: Database, now: datetime | None = None) -> dict[str, Any]:
    """{"runsByStatus": {status: n} (every status), "terminalCountedAt": when the terminal
    statuses were counted (`run_counts`), "queueDepth": {queue: n} (`known_queues` too),
    "oldestQueuedAgeS": seconds or None, "pods": `pods.live` (busy, idle, then gone),
    "podsBusy", "podsIdle", "podsGone": n, "ingest": `ingest_stats.last_hour`,
    "deadLetters": {"total": n, "runs": [{"runId", "count"}, ...] (latest 20)},
    "notifications": {"counts": {state: n}, "recent": the latest `RECENT_NOTIFICATIONS`}}."""
    now = now or utcnow()
    present = pods.live(db, now)
    states = Counter(p["state"] for p in present)
    counts, counted_at = run_counts.by_status(db, now)
    return {
        "runsByStatus": counts,
        "terminalCountedAt": counted_at,
        "queueDepth": queries.queue_depth(db, known_queues(present)),
        "oldestQueuedAgeS": queries.oldest_queued_age_s(db, now),
        "pods": present,
        "podsBusy": states[pods.BUSY],
        "podsIdle": states[pods.IDLE],
        "podsGone": states[pods.GONE],
        "ingest": ingest_stats.last_hour(db, now),
        "deadLetters": queries.dead_letter_summary(db, DEAD_LETTER_RUNS),
        "notifications": {"counts": notify.counts(db, now), "recent": notify.recent(db, RECENT_NOTIFICATIONS, now)},
    }


def known_queues(present: list[dict[str, Any]]) -> list[str]:
    """The queues whose depth is shown even when empty: the GPU queue every run goes to unless it
    names another, and each queue a pod that is not gone consumes (its presence record)."""
    queues = {DEFAULT_QUEUE}
    for pod in present:
        if pod.get("state") != pods.GONE:
            queues.update(str(q) for q in pod.get("queues") or ())
    return sorted(queues)
