"""The ingest engine: validate, dedup and apply a batch of events, as plain functions over a
database. The HTTP layer (`ingest_app`) parses requests into `Item`s and calls `ingest`.

For one batch the database sees a handful of commands, not one per event or per field:

1. validate every item (invalid ones change nothing);
2. one `find` on `events_seen` answers "duplicate" early for pairs applied before (skipped
   on FerretDB, see `fast_path_pays`);
3. one `find` loads the runs the batch names (an unknown run makes its event invalid);
4. the mappers compute every write (pure); the writes run grouped per collection: one
   `insert_many` of the documents to create, then ordered `bulk_write`s of the guarded updates
   (at most `updates_per_command` per command);
5. the status history of each run an event of the batch moved (`ingest_history.record_event_changes`);
6. only then the dedup records: one `insert_many(ordered=False)` into `events_seen`, whose
   unique index on (source, eventId) is the authority.

A crash (or a MongoDB outage) anywhere before step 6 leaves no dedup record, so the client's
resend applies the batch again; every write is idempotent, so nothing is doubled. Two processes
that get the same event at the same moment both pass step 2 and both apply it (idempotent,
so the documents are as if once); the unique insert of step 5 picks one: its caller reports
"accepted", the other "duplicate".
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pymongo import UpdateMany, UpdateOne
from pymongo.database import Database
from pymongo.errors import BulkWriteError

from orchestrator import mappers, seen_retention, tracing
from orchestrator.db import ServerFeatures, errors_besides_duplicates, insert_missing
from orchestrator.events import EVENT_TYPES, ROUTINE_TYPES, EventError, validate_event
from orchestrator.ingest_history import Asserted, record_event_changes
from orchestrator.runs import late_outcome_applied, take_late_outcome
from orchestrator.utc import utcnow

ACCEPTED = "accepted"
DUPLICATE = "duplicate"
INVALID = "invalid"

#: Updates per `bulk_write` command on MongoDB: few round trips next to the updates themselves.
UPDATES_PER_COMMAND = 20
#: ... and on FerretDB v1.24, which keeps every update of one command holding a pooled backend
#: connection until the command returns (`msg_update.go`): the update commands in flight
#: together must stay under the pool, or the server deadlocks for good (seen). The pool is 50
#: connections for the whole server on PostgreSQL (`pool_max_conns`; one command of 50 updates
#: hangs it), 100 per database on SQLite. 8 keeps the Procfile's 4 gunicorn workers at 32,
#: leaving room for the workers, dispatchers and broker on the same server (docs/ferretdb.md).
FERRETDB_UPDATES_PER_COMMAND = 8
#: Fields of the run snapshot the mappers read.
_RUN_FIELDS = {
    "status": 1, "statusSeq": 1, "attempt": 1, "maxAttempts": 1, "hypothesisId": 1, "validation": 1, "validationSeq": 1,
    "cancel": 1, "attempts": 1, tracing.FIELD: 1,
}
#: Write order across collections; every `Create` of the batch runs before any `Update`.
_COLLECTIONS = ("events", "artifacts", "validations", "stages", "hypotheses", "runs")


@dataclass(frozen=True)
class Item:
    """One event of a request before validation: the decoded JSON value, or why it has none.

    `index` counts events from 0 in request order (NDJSON blank lines are not events);
    `line` is the 1-based NDJSON line, so an error can name it.
    """

    index: int
    event: Any = None
    errors: dict[str, list[str]] | None = None
    line: int | None = None


@dataclass
class Outcome:
    """What became of one item of a request."""

    index: int
    id: str | None
    status: str
    type: str | None = None
    errors: dict[str, list[str]] | None = None
    line: int | None = None

    @property
    def error(self) -> str | None:
        """The reasons as one line, for logs and the batch result's `error`."""
        if not self.errors:
            return None
        return "; ".join(f"{path}: {' '.join(reasons)}" for path, reasons in sorted(self.errors.items()))

    @property
    def metric_type(self) -> str:
        """The type as a metrics label: only catalogue types, so a client cannot mint labels."""
        return self.type if self.type in EVENT_TYPES else "unknown"

    def as_result(self) -> dict[str, Any]:
        result: dict[str, Any] = {"index": self.index, "id": self.id, "status": self.status}
        if self.line is not None:
            result["line"] = self.line
        if self.errors:
            result["error"] = self.error
            result["errors"] = self.errors
        return result


@dataclass
class _Candidate:
    """A valid event on its way through the batch."""

    outcome: Outcome
    event: dict[str, Any]

    @property
    def key(self) -> tuple[str, str]:
        return self.event["source"], self.event["id"]

    @property
    def run_id(self) -> str:
        return self.event["data"]["run_id"]


@dataclass
class _Plan:
    """The batch's writes grouped per collection."""

    creates: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    updates: dict[str, list[mappers.Update]] = field(default_factory=lambda: defaultdict(list))
    #: supersedes key -> index of the kept update in `updates[collection]`
    _latest: dict[tuple[Any, ...], int] = field(default_factory=dict)

    def add(self, write: mappers.Write) -> None:
        if isinstance(write, mappers.Create):
            self.creates[write.collection].append(write.document)
        elif write.supersedes is None:
            self.updates[write.collection].append(write)
        else:
            self._add_superseding(write)

    def _add_superseding(self, write: mappers.Update) -> None:
        """Keep one update per key, the highest seq's: the others would be no-ops after it
        (see `mappers.Update`). A worker's batch repeats the same facets (progress, current
        stage, status) many times, so this sends about a quarter of the updates (measured in
        BENCHMARKS.md), and on a server where each update costs milliseconds that is the bill."""
        assert write.supersedes is not None
        updates = self.updates[write.collection]
        at = self._latest.get(write.supersedes)
        if at is None:
            self._latest[write.supersedes] = len(updates)
            updates.append(write)
        elif write.seq > updates[at].seq:
            updates[at] = write


def ingest(
    db: Database, items: Sequence[Item], *, bucket: str, default_max_attempts: int, seen_lookup: bool = True,
    per_command: int = UPDATES_PER_COMMAND,
) -> list[Outcome]:
    """Apply a request's items; one `Outcome` per item, in order.

    `seen_lookup` turns the fast path (step 2) on; turn it off where the server cannot answer
    it from the index (see `fast_path_pays`). Without it a resent event is applied again
    (idempotent) and the unique insert still answers "duplicate". `per_command` caps the
    updates of one command (see `updates_per_command`).

    Raises pymongo's `ConnectionFailure` (and its subclasses) when MongoDB is unreachable; the
    caller answers 503, and a resend finishes whatever this call had applied.
    """
    outcomes, candidates = _validate(items)
    with tracing.events_span("ingest events", (c.event.get(tracing.FIELD) for c in candidates
                                               if c.event["type"] not in ROUTINE_TYPES),
                             {"events.count": len(outcomes), "events.valid": len(candidates)}) as span:
        _apply_candidates(db, candidates, bucket, default_max_attempts, seen_lookup, per_command)
        span.set_attribute("events.accepted", sum(c.outcome.status == ACCEPTED for c in candidates))
    return outcomes


def _apply_candidates(db: Database, candidates: list[_Candidate], bucket: str, default_max_attempts: int,
                      seen_lookup: bool, per_command: int) -> None:
    fresh = _drop_duplicates(db, candidates, seen_lookup)
    runs = _load_runs(db, {c.run_id for c in fresh})
    known = [c for c in fresh if _known_run(c, runs)]
    if known:
        now = utcnow()
        late = {c.key for c in known if take_late_outcome(db, runs[c.run_id], c.event)}
        plan = _plan(known, runs, now, bucket, default_max_attempts, late)
        _apply(db, plan, per_command)
        record_event_changes(db, runs, _asserted_statuses(plan, known, late), now)
        for c in known:
            if c.key in late:
                late_outcome_applied(db, c.run_id, c.event)
        lost = _mark_seen(db, known, now)
        for c in known:
            c.outcome.status = DUPLICATE if c.key in lost else ACCEPTED


def _asserted_statuses(plan: _Plan, candidates: list[_Candidate],
                       late: AbstractSet[tuple[str, str]]) -> dict[tuple[str, int], Asserted]:
    """(run, seq) -> what that event asserts, in the order the batch's status updates ran
    (`mappers._status` marks them `("runs", run, "status", target, attempt)`)."""
    by_seq = {(c.run_id, c.event["seq"]): c for c in candidates}
    asserted: dict[tuple[str, int], Asserted] = {}
    for update in plan.updates.get("runs", []):
        key = update.supersedes
        if key is None or key[2] != "status" or update.seq is None:
            continue
        c = by_seq.get((key[1], update.seq))
        what = f"{c.event['type']} {c.event['id']}" if c else "an event"
        asserted[(key[1], update.seq)] = Asserted(key[3], what, c is not None and c.key in late)
    return asserted


def updates_per_command(features: ServerFeatures) -> int:
    """How many guarded updates one command may carry on this server."""
    return FERRETDB_UPDATES_PER_COMMAND if features.is_ferretdb else UPDATES_PER_COMMAND


def fast_path_pays(features: ServerFeatures) -> bool:
    """Whether one `$in` query on events_seen is cheap. FerretDB v1 serves only equality filters
    from its indexes; `$in` and `$or` scan the collection (seen: 0.5 s at 20,000 records), and
    without TTL expiry events_seen only grows. There every batch would pay a full scan to save
    re-applying the rare resend, so the lookup is skipped."""
    return not features.is_ferretdb


def _validate(items: Iterable[Item]) -> tuple[list[Outcome], list[_Candidate]]:
    outcomes: list[Outcome] = []
    candidates: list[_Candidate] = []
    for item in items:
        raw = item.event if isinstance(item.event, dict) else {}
        outcome = Outcome(item.index, _text(raw.get("id")), INVALID, _text(raw.get("type")), item.errors, item.line)
        outcomes.append(outcome)
        if item.errors:
            continue
        try:
            event = validate_event(item.event)
        except EventError as exc:
            outcome.errors = exc.errors
            continue
        candidates.append(_Candidate(outcome, event))
    return outcomes, candidates


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _drop_duplicates(db: Database, candidates: list[_Candidate], seen_lookup: bool) -> list[_Candidate]:
    """Candidates neither repeated earlier in this batch nor (with `seen_lookup`) recorded in
    `events_seen`."""
    seen = _seen_before(db, candidates) if seen_lookup else set()
    fresh: list[_Candidate] = []
    for c in candidates:
        if c.key in seen:
            c.outcome.status = DUPLICATE
        else:
            seen.add(c.key)
            fresh.append(c)
    return fresh


def _seen_before(db: Database, candidates: list[_Candidate]) -> set[tuple[str, str]]:
    """The fast path: one query for every (source, id) of the batch."""
    if not candidates:
        return set()
    by_source: dict[str, set[str]] = defaultdict(set)
    for c in candidates:
        by_source[c.key[0]].add(c.key[1])
    query = {"$or": [{"source": source, "eventId": {"$in": sorted(ids)}} for source, ids in by_source.items()]}
    return {(doc["source"], doc["eventId"]) for doc in db.events_seen.find(query, {"_id": 0, "source": 1, "eventId": 1})}


def _load_runs(db: Database, run_ids: set[str]) -> dict[str, dict[str, Any]]:
    """One `_id` lookup per run. A batch normally holds one run's events (the worker batches per
    run); an equality is an index lookup on every server, where FerretDB evaluates `$in` in its
    Go code over every run."""
    found = (db.runs.find_one({"_id": run_id}, _RUN_FIELDS) for run_id in sorted(run_ids))
    return {run["_id"]: run for run in found if run is not None}


def _known_run(c: _Candidate, runs: dict[str, dict[str, Any]]) -> bool:
    if c.run_id in runs:
        return True
    c.outcome.errors = {"data.run_id": [f"Unknown run {c.run_id!r}: no run document has this id; create the run first."]}
    return False


def _plan(
    candidates: list[_Candidate], runs: dict[str, dict[str, Any]], now: datetime, bucket: str, default_max_attempts: int,
    late: AbstractSet[tuple[str, str]] = frozenset(),
) -> _Plan:
    """`late`: the (source, id) of outcomes ingest may apply to a requeued run."""
    plan = _Plan()
    last_seq: dict[str, int] = {}
    for c in candidates:
        for write in mappers.writes_for(
            c.event, runs[c.run_id], received_at=now, bucket=bucket, default_max_attempts=default_max_attempts,
            late_outcome=c.key in late,
        ):
            plan.add(write)
        last_seq[c.run_id] = max(last_seq.get(c.run_id, 0), c.event["seq"])
    for run_id, seq in last_seq.items():
        plan.add(mappers.touch_run(run_id, seq, now))
    return plan


def _apply(db: Database, plan: _Plan, per_command: int) -> None:
    """Creates first (all collections), then updates: an update must find what the batch creates."""
    for name in _COLLECTIONS:
        if plan.creates.get(name):
            insert_missing(db[name], plan.creates[name])
    for name in _COLLECTIONS:
        if plan.updates.get(name):
            _update_all(db, name, plan.updates[name], per_command)


def _update_all(db: Database, collection: str, updates: list[mappers.Update], per_command: int) -> None:
    """Ordered `bulk_write`s of at most `per_command` updates each.

    mongomock 4.3 (the embedded demo and the unit lane) cannot take pymongo 4.20's operation
    objects (`add_update() got an unexpected keyword argument 'sort'`), so there the same
    updates run one call each: same semantics, and no network to save."""
    coll = db[collection]
    if _is_mongomock(db):
        for u in updates:
            (coll.update_many if u.many else coll.update_one)(u.filter, u.update)
        return
    operations = [(UpdateMany if u.many else UpdateOne)(u.filter, u.update) for u in updates]
    for start in range(0, len(operations), per_command):
        coll.bulk_write(operations[start:start + per_command], ordered=True)


def _is_mongomock(db: Database) -> bool:
    return type(db.client).__module__.startswith("mongomock")


def _mark_seen(db: Database, candidates: list[_Candidate], now: datetime) -> set[tuple[str, str]]:
    """Write the dedup records, after the effects. Returns the pairs whose record another
    process wrote first: that process reports them accepted, so this one reports duplicate."""
    records = [
        {"source": c.key[0], "eventId": c.key[1], "runId": c.run_id, "processedAt": now,
         "bucket": seen_retention.bucket_of(now)} for c in candidates
    ]
    try:
        db.events_seen.insert_many(records, ordered=False)
    except BulkWriteError as exc:
        if errors_besides_duplicates(exc):
            raise
        return {candidates[e["index"]].key for e in exc.details["writeErrors"]}
    return set()
