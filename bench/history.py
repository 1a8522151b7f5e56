"""History of finished runs, for `python -m bench --history N`: a year's worth of past runs in
the database before anything is measured, so the figures say what the system costs after
months of use and not on an empty database.

The shape is real: one `manage-runs demo` run is made against a scratch database on the same
server (its run, hypothesis, stages, events, dedup records, artifacts, claim, dispatch decision,
validation and status history), and each past run is a copy of it with fresh ids, its times
moved back to a point of the past year and its status one of the ends a run reaches.
"""

from __future__ import annotations

import re
import subprocess
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import ulid
from bson import ObjectId, json_util
from pymongo.database import Database

from bench.procs import BenchError, process_env
from orchestrator import run_days, seen_retention

#: The collections a run's history is made of, in the order they are written.
PER_RUN = ("hypotheses", "runs", "stages", "claims", "dispatches", "status_history", "events", "events_seen",
           "artifacts", "validations")
#: Where past runs ended, in proportions a team reviewing its runs would see.
ENDINGS = (("HUMAN_VALIDATED", 5), ("HUMAN_REJECTED", 2), ("FAILED", 2), ("CANCELED", 1))
#: How far back the history reaches.
SPAN = timedelta(days=365)
#: Runs written per round of inserts (about 240 documents each).
CHUNK = 50
#: A ULID (event ids) or a UUID (run, hypothesis and task ids): the ids a copy replaces.
_IDS = re.compile(r"\b[0-9A-HJKMNP-TV-Z]{26}\b|\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")

Template = dict[str, list[dict[str, Any]]]


def capture(url: str, output: Path, timeout_s: float = 300) -> Template:
    """The documents of one real run: `manage-runs demo` against the (empty) database at `url`,
    its files under `output`."""
    result = subprocess.run(["manage-runs", "demo", "--timeout", "240", "--output", str(output)],
                            env={**process_env(), "MONGODB_URL": url},
                            capture_output=True, text=True, timeout=timeout_s, check=False)
    if result.returncode != 0:
        raise BenchError(f"the demo run for the history's template failed ({result.returncode}):\n{result.stderr[-2000:]}")
    import pymongo

    client: pymongo.MongoClient[dict[str, Any]]
    with pymongo.MongoClient(url, tz_aware=True) as client:
        db = client.get_default_database()
        runs = list(db.runs.find())
        if len(runs) != 1:
            raise BenchError(f"the template database holds {len(runs)} runs, expected the demo's one")
        run_id = runs[0]["_id"]
        template = {name: list(db[name].find({"runId": run_id})) for name in PER_RUN}
        template["runs"] = runs
        template["hypotheses"] = list(db.hypotheses.find({"_id": runs[0]["hypothesisId"]}))
    return template


class Copier:
    """Makes the past runs from a template: the template's documents as one Extended JSON text,
    in which each copy replaces every id by a fresh one in a single regex pass (cheap enough
    for 10,000 copies), then moves every date back by the copy's age."""

    def __init__(self, template: Template, now: datetime):
        self.text = json_util.dumps({name: template.get(name, []) for name in PER_RUN})
        run = template["runs"][0]
        self.created: datetime = run["createdAt"]
        self.now = now

    def copy(self, index: int, total: int) -> dict[str, list[dict[str, Any]]]:
        """Past run `index` of `total`: older for a higher index, spread evenly over `SPAN`."""
        fresh: dict[str, str] = {}
        text = _IDS.sub(lambda m: fresh.setdefault(m.group(0), _new_like(m.group(0))), self.text)
        docs: dict[str, list[dict[str, Any]]] = json_util.loads(text, json_options=json_util.JSONOptions(tz_aware=True))
        shift = (self.now - SPAN * (index + 1) / (total + 1)) - self.created
        for name, found in docs.items():
            for doc in found:
                _move_dates(doc, shift)
                if name == "events_seen":
                    doc["_id"] = ObjectId()  # the template's own, which a regex for ids does not match
                    doc["bucket"] = seen_retention.bucket_of(doc["processedAt"])
        run = docs["runs"][0]
        run["status"] = ending(index)
        run[run_days.FIELD] = run_days.day_of(run["createdAt"])
        return docs


def ending(index: int) -> str:
    """The status past run `index` ended in (`ENDINGS`' proportions, interleaved)."""
    slots = [status for status, weight in ENDINGS for _ in range(weight)]
    return slots[index % len(slots)]


def _new_like(old: str) -> str:
    return str(ulid.ULID()) if len(old) == 26 else str(uuid.uuid4())


def _move_dates(value: Any, shift: timedelta) -> None:
    items: Iterator[tuple[Any, Any]] = iter(value.items()) if isinstance(value, dict) else iter(enumerate(value))
    for key, item in items:
        if isinstance(item, datetime):
            value[key] = item + shift
        elif isinstance(item, (dict, list)):
            _move_dates(item, shift)


def prefill(db: Database, template: Template, count: int, now: datetime,
            progress: Callable[[int], None] | None = None) -> dict[str, int]:
    """Write `count` past runs into `db`; documents written per collection."""
    copier = Copier(template, now)
    written = dict.fromkeys(PER_RUN, 0)
    for start in range(0, count, CHUNK):
        batch: dict[str, list[dict[str, Any]]] = {name: [] for name in PER_RUN}
        for index in range(start, min(start + CHUNK, count)):
            for name, docs in copier.copy(index, count).items():
                batch[name].extend(docs)
        for day in {run[run_days.FIELD] for run in batch["runs"]}:
            run_days.register(db, day)
        for name in PER_RUN:
            if batch[name]:
                db[name].insert_many(batch[name], ordered=False)
                written[name] += len(batch[name])
        if progress is not None:
            progress(min(start + CHUNK, count))
    return written


def per_run(template: Template) -> int:
    """Documents one past run adds."""
    return sum(len(template.get(name, [])) for name in PER_RUN)

