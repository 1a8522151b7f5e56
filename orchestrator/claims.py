"""Claims: which pod owns which attempt of a run, and its lease.

Exactly-once rests on a unique-key insert (`_id` = "{run_id}:{attempt}"), the one primitive every
MongoDB-wire server makes atomic (FerretDB's find-and-modify is not). The lease lives on the
claim and only the owning worker renews it; the sweeper ends an expired claim by setting
`releasedAt`, after which the owner's renewal fails and it stops.

The lease is fenced from both sides, so two attempts never run steps at once:
- the worker: `fence_deadline` - one that cannot renew stops its attempt by its last successful
  renewal + `LEASE_S` - a margin, on its own monotonic clock, whether or not it can reach the
  database to learn that it lost;
- the sweeper: `lease_judgeable` - it judges a lease only `CLOCK_SKEW_S` after it ended, and
  only once it has itself been connected long enough for every live worker to have renewed
  (a database outage must not read as every worker dying at once).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from orchestrator.utc import utcnow

#: The worker's hard stop comes this long (at most a quarter of the lease) before its lease would
#: end: time to end its step's processes and exit.
FENCE_MARGIN_S = 2.0


def fence_deadline(renewed_at: float, lease_s: float) -> float:
    """The monotonic time by which a worker whose last successful renewal was *sent* at
    `renewed_at` (its own `time.monotonic()`) must have stopped its attempt. Counting from the
    send, not the answer, keeps the deadline before the `leaseExpiresAt` the server stored."""
    return renewed_at + lease_s - min(FENCE_MARGIN_S, lease_s / 4)


def lease_judgeable(claim: dict[str, Any], now: datetime, *, connected_for_s: float, lease_s: float,
                    skew_s: float) -> bool:
    """Whether a sweeper may end this claim as lost. Past `leaseExpiresAt` + `skew_s`, and, for
    a sweeper connected for less than `lease_s` (it just started, or the database just came
    back), past it by a whole lease more: a live worker re-asserts its lease within one
    heartbeat after an outage, long before that."""
    expires = claim.get("leaseExpiresAt")
    if expires is None:
        return False
    allowance = skew_s + (0.0 if connected_for_s >= lease_s else lease_s)
    return bool(expires + timedelta(seconds=allowance) < now)


def claim_id(run_id: str, attempt: int) -> str:
    return f"{run_id}:{attempt}"


def claim_attempt(db: Database, run_id: str, attempt: int, pod_id: str, lease_s: float) -> dict[str, Any] | None:
    """Claim an attempt; None when another delivery already owns it (a duplicate message)."""
    now = utcnow()
    claim = {
        "_id": claim_id(run_id, attempt),
        "runId": run_id,
        "attempt": attempt,
        "podId": pod_id,
        "claimedAt": now,
        "leaseExpiresAt": now + timedelta(seconds=lease_s),
        "releasedAt": None,
    }
    try:
        db.claims.insert_one(claim)
    except DuplicateKeyError:
        return None
    return claim


def renew_lease(db: Database, run_id: str, attempt: int, pod_id: str, lease_s: float) -> bool:
    """Extend our lease; False means it is no longer ours (the sweeper ended it): stop work."""
    result = db.claims.update_one(
        {"_id": claim_id(run_id, attempt), "podId": pod_id, "releasedAt": None},
        {"$set": {"leaseExpiresAt": utcnow() + timedelta(seconds=lease_s)}},
    )
    return result.matched_count == 1


#: Release reasons the sweeper acts on (`orchestrator.sweeper`); any other (the attempt's
#: outcome: "failed", "canceled", ...) means its events carry the outcome.
#: The run left SCHEDULED (or a cancel was asked) between the claim and the start: nothing ran.
NOT_STARTABLE = "not startable"
#: The pod must stop (SIGTERM, a spot preemption): the run goes back to the queue at once, and
#: the attempt does not count. A suffix may follow ("preempted; events undelivered").
PREEMPTED = "preempted"


def handed_back(claim: dict[str, Any]) -> bool:
    """The worker gave the attempt back without an outcome: its pod had to stop, or the run
    could not be started. The sweeper requeues such a run at once, not counting the attempt."""
    reason = str(claim.get("releaseReason") or "")
    return reason.startswith(PREEMPTED) or reason == NOT_STARTABLE


def release(db: Database, run_id: str, attempt: int, pod_id: str, reason: str = "finished") -> None:
    """The owner is done with the attempt (finished, failed or canceled)."""
    db.claims.update_one(
        {"_id": claim_id(run_id, attempt), "podId": pod_id, "releasedAt": None},
        {"$set": {"releasedAt": utcnow(), "releaseReason": reason}},
    )


def expire(db: Database, run_id: str, attempt: int, now: datetime) -> bool:
    """The sweeper ends a claim whose lease ran out; True if this caller ended it.

    Guarded on the lease still being expired, so a renewal that landed first wins."""
    result = db.claims.update_one(
        {"_id": claim_id(run_id, attempt), "releasedAt": None, "leaseExpiresAt": {"$lt": now}},
        {"$set": {"releasedAt": now, "releaseReason": "lease expired"}},
    )
    return result.modified_count == 1


def get_claim(db: Database, run_id: str, attempt: int) -> dict[str, Any] | None:
    return db.claims.find_one({"_id": claim_id(run_id, attempt)})


def request_cancel(db: Database, run_id: str, attempt: int, *, by: str | None, reason: str | None) -> None:
    """Ask the worker of an attempt to stop, in a document nobody else writes.

    Why not only `runs.cancelRequested`: the ingest app rewrites run documents all the time,
    and on a server without isolated updates (FerretDB v1 writes back the whole document) a
    concurrent event can erase the flag (seen in the process tests). A unique insert cannot be
    lost that way; a second request for the same attempt is a no-op."""
    try:
        db.cancel_requests.insert_one(
            {"_id": claim_id(run_id, attempt), "runId": run_id, "attempt": attempt, "by": by, "reason": reason,
             "requestedAt": utcnow()}
        )
    except DuplicateKeyError:
        pass


def cancel_requested(db: Database, run_id: str, attempt: int) -> dict[str, Any] | None:
    """The cancel request of an attempt ({by, reason, ...}), or None."""
    return db.cancel_requests.find_one({"_id": claim_id(run_id, attempt)})
