"""The index plan: which index serves each hot query, on MongoDB and on FerretDB over PostgreSQL.

Every hot query starts with an equality on a top-level field that leaves few documents (docs/
queries.md lists each query, its filter and its index). On MongoDB the B-tree indexes of
`mongodb_indexes` serve them. FerretDB v1 keeps its own indexes as B-trees on `_jsonb -> 'field'`
but pushes an equality down as `_jsonb -> 'field' @> value`, which a B-tree cannot serve, so
there every query scans its whole table (the `_id` lookup of one stage took 240 ms among 80,000
stages). A GIN index on the same expression serves `@>`: `postgresql_sql` writes one for each of
`EQUALITY_KEYS` (and `_id`) of every collection, which made that lookup 1.1 ms. FerretDB never
sees these indexes (its `listIndexes` reads its own catalogue) and drops them with their table.
"""

from __future__ import annotations

from pymongo import ASCENDING, DESCENDING, IndexModel


def _events_indexes() -> list[IndexModel]:
    """A run's history, in `events` and, once archived, in `events_archive` (`event_history`)."""
    return [
        IndexModel([("runId", ASCENDING), ("seq", ASCENDING)], name="runId_seq"),
        IndexModel([("type", ASCENDING), ("receivedAt", DESCENDING)], name="type_receivedAt"),
        IndexModel([("eventId", ASCENDING)], name="eventId"),
        # Only a pod's dead-letter notices carry the field (`events.is_dead_letter_notice`).
        IndexModel([("deadLetter", ASCENDING), ("receivedAt", DESCENDING)], name="deadLetter_receivedAt", sparse=True),
    ]


def mongodb_indexes() -> dict[str, list[IndexModel]]:
    """The indexes every process creates at start (`db.ensure_indexes`), per collection."""
    return {
        "hypotheses": [IndexModel([("createdAt", DESCENDING)], name="createdAt")],
        "runs": [
            IndexModel([("status", ASCENDING), ("priority", DESCENDING), ("createdAt", ASCENDING)],
                       name="status_priority_createdAt"),
            IndexModel([("createdAt", DESCENDING)], name="createdAt"),
            IndexModel([("hypothesisId", ASCENDING)], name="hypothesisId"),
            # The run list, a day at a time (`run_list`), and the counts per day (`run_counts`).
            IndexModel([("createdDay", ASCENDING), ("createdAt", DESCENDING), ("_id", DESCENDING)],
                       name="createdDay_createdAt"),
        ],
        "claims": [IndexModel([("runId", ASCENDING), ("attempt", ASCENDING)], name="runId_attempt")],
        "stages": [IndexModel([("runId", ASCENDING), ("index", ASCENDING)], name="runId_index")],
        "events": _events_indexes(),
        "events_archive": _events_indexes(),
        "events_seen": [
            IndexModel([("source", ASCENDING), ("eventId", ASCENDING)], name="source_eventId", unique=True),
        ],
        "artifacts": [
            IndexModel([("runId", ASCENDING), ("createdAt", ASCENDING)], name="runId_createdAt"),
        ],
        "validations": [IndexModel([("runId", ASCENDING), ("createdAt", DESCENDING)], name="runId_createdAt")],
        "status_history": [
            IndexModel([("runId", ASCENDING), ("at", ASCENDING)], name="runId_at"),
            # The notifier's query: one status, the entries since its lookback (orchestrator.notify).
            IndexModel([("to", ASCENDING), ("day", ASCENDING), ("at", ASCENDING)], name="to_day_at"),
        ],
        "notifications": [
            IndexModel([("state", ASCENDING), ("nextAttemptAt", ASCENDING)], name="state_nextAttemptAt"),
            IndexModel([("createdDay", ASCENDING), ("createdAt", DESCENDING)], name="createdDay_createdAt"),
        ],
        "dispatches": [IndexModel([("runId", ASCENDING)], name="runId")],
        "rate_counters": [IndexModel([("key", ASCENDING), ("expiresAt", DESCENDING)], name="key_expiresAt")],
        "seen_once": [IndexModel([("expiresAt", ASCENDING)], name="expiresAt")],
    }


#: The top-level fields hot queries filter by equality, per collection (`_id` is indexed in
#: every collection besides these). kombu's broker collections are here too: each idle pod
#: polls `messages` by queue ten times a second.
EQUALITY_KEYS: dict[str, tuple[str, ...]] = {
    "runs": ("status", "hypothesisId", "createdDay"),
    "stages": ("runId",),
    "events": ("runId", "deadLetter"),
    "events_archive": ("runId", "deadLetter"),
    "events_seen": ("bucket",),
    "artifacts": ("runId",),
    "validations": ("runId",),
    "status_history": ("runId", "to", "day"),
    "claims": ("runId",),
    "dispatches": ("runId",),
    "notifications": ("state", "createdDay"),
    "rate_counters": ("key",),
    "messages": ("queue",),
    "messages.routing": ("exchange", "queue"),
}

#: Collections whose size is set by the work in flight, not by history, so a scan of them stays
#: small: kombu's broker collections (messages wait seconds), pod presence (one per live worker
#: process, pruned after an hour), the day registry (one tiny document a day), rate-limit and
#: once-only records (pruned as they expire), per-minute ingest counts (a day's worth), and the
#: few control documents in `meta` and `dispatcher_state`.
BOUNDED = frozenset({"messages", "messages.routing", "messages.broadcast", "pods", "run_days", "rate_counters",
                     "seen_once", "ingest_stats", "meta", "dispatcher_state"})

#: Names of the SQL objects `postgresql_sql` creates (one prefix, so an operator can find them).
_PREFIX = "ai_orchestrator"


def _plan_rows() -> str:
    """The plan as SQL VALUES rows: (table name stem FerretDB gives the collection, fields)."""
    rows = []
    for collection, keys in sorted(EQUALITY_KEYS.items()):
        stem = collection.replace(".", "_")
        fields = ", ".join(f"'{key}'" for key in keys)
        rows.append(f"        ('{stem}', ARRAY[{fields}]::text[])")
    return ",\n".join(rows)


def postgresql_sql() -> str:
    """SQL that gives FerretDB's tables the GIN indexes its equality pushdown can use: for every
    table it has made and every table it makes later (an event trigger on CREATE TABLE). Run it
    once per PostgreSQL cluster, as a superuser (event triggers need one):
    `manage-runs postgresql-indexes | psql "postgres://postgres@host:5432/ferretdb"`.

    Idempotent. A table that is not FerretDB's (no `_jsonb` column) is left alone, and any error
    is only a warning: a missing index must never fail the creation of a collection."""
    return f"""-- GIN indexes for FerretDB v1 on PostgreSQL, made by `manage-runs postgresql-indexes`.
-- FerretDB pushes an equality down as `_jsonb -> 'field' @> value`; only a GIN index serves it.
CREATE OR REPLACE FUNCTION {_PREFIX}_index_table(target regclass) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    rel text := (SELECT relname FROM pg_class WHERE oid = target);
    table_stem text := regexp_replace(rel, '_[0-9a-f]{{8}}$', '');
    fields text[];
    field text;
BEGIN
    IF table_stem = rel OR NOT EXISTS (
        SELECT 1 FROM pg_attribute WHERE attrelid = target AND attname = '_jsonb' AND NOT attisdropped) THEN
        RETURN;
    END IF;
    SELECT plan.keys INTO fields FROM (VALUES
{_plan_rows()}
    ) AS plan(stem, keys) WHERE plan.stem = table_stem;
    FOREACH field IN ARRAY ARRAY['_id'] || COALESCE(fields, ARRAY[]::text[]) LOOP
        EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %s USING gin ((_jsonb -> %L) jsonb_path_ops)',
                       left(rel, 40) || '_' || left(field, 16) || '_gin', target, field);
    END LOOP;
EXCEPTION WHEN OTHERS THEN
    RAISE WARNING '{_PREFIX}: no GIN indexes on %: %', target, SQLERRM;
END $$;

CREATE OR REPLACE FUNCTION {_PREFIX}_on_create_table() RETURNS event_trigger
LANGUAGE plpgsql AS $$
DECLARE
    created record;
BEGIN
    FOR created IN SELECT objid FROM pg_event_trigger_ddl_commands()
                   WHERE command_tag = 'CREATE TABLE' AND object_type = 'table' LOOP
        PERFORM {_PREFIX}_index_table(created.objid::regclass);
    END LOOP;
END $$;

DROP EVENT TRIGGER IF EXISTS {_PREFIX}_gin;
CREATE EVENT TRIGGER {_PREFIX}_gin ON ddl_command_end WHEN TAG IN ('CREATE TABLE')
    EXECUTE FUNCTION {_PREFIX}_on_create_table();

-- The tables FerretDB has made already (this may take a while on large collections).
DO $$
DECLARE
    existing record;
BEGIN
    FOR existing IN SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') LOOP
        PERFORM {_PREFIX}_index_table(existing.oid::regclass);
    END LOOP;
END $$;
"""
