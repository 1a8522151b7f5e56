"""Outgoing run notifications (NOTIFY_URL): a POST when a run reaches a status in NOTIFY_ON
(by default AWAITING_HUMAN, FAILED and a review's HUMAN_VALIDATED or HUMAN_REJECTED), so a
reviewer need not watch a page.

An outbox that costs the hot path nothing: every status change already is a keyed document in
`status_history`, written by the status writer and by ingest. The notifier, a thread of the
dispatcher process, reads the recent entries of each notify status (one equality query per
status and an `at` bound, not `$in`: FerretDB runs equality filters in PostgreSQL and `$in` in
Go) and creates one document per entry in `notifications`, keyed by the entry's key: the unique
insert is the claim, so several dispatcher processes create it once. It then delivers the due
pending ones; each try is taken once across processes (`expiring.first_time` on the
notification and its try number, a unique insert) before it is sent, so a notification is
POSTed once however many notifiers run. Entries older than `Policy.lookback_s` are never
picked up, so a first deploy does not send old history.

Delivery: `requests`, a short timeout, no redirects followed. 2xx is sent; 408, 429, 5xx, a
timeout or a connection error is tried again after `Policy.first_retry_s` doubling (or the
receiver's Retry-After, when longer), up to `Policy.max_tries` tries; any other answer fails at
once, with the answer as the reason. A failed notification is logged as a warning naming the
run and the reason. The body is signed the Standard Webhooks way when NOTIFY_SECRET is set
(webhook-id is the notification's key, the same on every try; webhook-timestamp is each try's).

NOTIFY_URL is a credential (a Slack incoming webhook's path is its key): no log line or stored
error shows more of it than its host.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import requests
from prometheus_client import Counter
from pymongo import DESCENDING
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, PyMongoError

from orchestrator import credentials, expiring, retry, run_days, status_history, tracing
from orchestrator.redaction import url_host
from orchestrator.serialize import to_rfc3339
from orchestrator.settings import Settings
from orchestrator.utc import as_utc, utcnow

log = logging.getLogger(__name__)

COLLECTION = "notifications"
PENDING, SENT, FAILED = "pending", "sent", "failed"
STATES = (PENDING, SENT, FAILED)

NOTIFICATIONS_SENT = Counter("orchestrator_notifications_sent_total", "Run notifications the receiver accepted.")
NOTIFICATIONS_FAILED = Counter("orchestrator_notifications_failed_total", "Run notifications given up on.")

#: Longest text of a title or a reason in a body: a failure's message can be long.
MAX_TEXT = 1000
_RETRY_STATUSES = frozenset({408, 429})


@dataclass(frozen=True)
class Policy:
    """How notifications are picked up and delivered (tests shorten the times)."""

    #: History entries older than this are never notified.
    lookback_s: float = 3600.0
    #: The wait after the first failed try; each later wait is twice the one before.
    first_retry_s: float = 5.0
    #: Tries in all: 5 s doubling over 10 tries puts the last about 43 minutes after the first.
    max_tries: int = 10
    #: Connect and read timeout of one POST.
    timeout_s: float = 5.0
    #: Tries per pass; the next pass takes the rest.
    batch: int = 50
    #: The longest Retry-After honoured; a longer one waits this long.
    max_retry_after_s: float = 3600.0
    #: How long a try taken by a process is its alone: one that died mid-try is tried again after it.
    hold_s: float = 600.0

    def retry_in_s(self, tries: int) -> float:
        """The wait after the `tries`-th failed try."""
        return retry.doubling_s(self.first_retry_s, tries)


@dataclass(frozen=True)
class Outcome:
    """What one POST came to: sent, worth another try (after at least `retry_after_s`), or not."""

    sent: bool
    retry: bool = False
    error: str | None = None
    retry_after_s: float | None = None


def event_body(entry: dict[str, Any], title: str | None, console_url: str | None) -> dict[str, Any]:
    """The JSON body of the notification for one history entry."""
    status = str(entry["to"])
    return {
        "type": f"run.{status.lower()}",
        "runId": entry["runId"],
        "title": _clip(title),
        "status": status,
        "from": entry.get("from"),
        "by": entry.get("by"),
        "reason": _clip(entry.get("reason")),
        "attempt": entry.get("attempt"),
        "at": to_rfc3339(entry["at"]),
        "url": f"{console_url}/runs/{entry['runId']}" if console_url else None,
    }


_HEADLINES = {"AWAITING_HUMAN": "is waiting for your review", "FAILED": "failed",
              "HUMAN_VALIDATED": "was accepted", "HUMAN_REJECTED": "was rejected"}


def slack_message(event: dict[str, Any]) -> dict[str, Any]:
    """The event as a Slack incoming webhook's message: `text` (the notification's fallback)
    and `blocks` (a section with the title, a link and the reason; a context line)."""
    headline = _HEADLINES.get(event["status"], f"is now {event['status']}")
    title = event.get("title") or "(untitled)"
    run = f"<{event['url']}|{_mrkdwn(event['runId'])}>" if event.get("url") else f"`{_mrkdwn(event['runId'])}`"
    section = f"*{_mrkdwn(title)}*\nRun {run} {headline} ({event['status']})."
    if event.get("reason"):
        section += "\n>" + _mrkdwn(str(event["reason"])).replace("\n", "\n>")
    context = " · ".join(_mrkdwn(str(part)) for part in (
        f"from {event.get('from')}", f"by {event.get('by')}", f"attempt {event.get('attempt')}", event["at"]))
    return {
        "text": f"Run {event['runId']} ({title}) {headline}: {event['status']}",
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": section[:3000]}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]},
        ],
    }


def render(event: dict[str, Any], fmt: str) -> str:
    """The body as sent: the event itself (json) or its Slack message (slack)."""
    return json.dumps(slack_message(event) if fmt == "slack" else event, separators=(",", ":"), ensure_ascii=False)


def post(session: requests.Session, url: str, body: str, msg_id: str, signer: Any, timeout_s: float,
         max_retry_after_s: float = 3600.0) -> Outcome:
    """One signed POST and what it came to. Never raises for the receiver's faults."""
    at = datetime.now(UTC)
    headers = {"Content-Type": "application/json", "User-Agent": "ai-scientist-orchestrator-notify",
               "webhook-id": msg_id, "webhook-timestamp": str(int(at.timestamp()))}
    if signer is not None:
        headers["webhook-signature"] = signer.sign(msg_id, at, body)
    try:
        with tracing.untraced():  # the URL is a credential (a Slack webhook's path): no span may record it
            answer = session.post(url, data=body.encode(), headers=headers, timeout=timeout_s, allow_redirects=False)
    except requests.Timeout:
        return Outcome(False, retry=True, error=f"no answer within {timeout_s:g}s")
    except requests.RequestException as exc:
        return Outcome(False, retry=True, error=_without_url(f"{type(exc).__name__}: {exc}", url))
    with answer:
        if 200 <= answer.status_code < 300:
            return Outcome(True)
        said = " ".join(answer.text[:200].split())
        error = f"HTTP {answer.status_code}" + (f": {said}" if said else "")
        if answer.status_code in _RETRY_STATUSES or answer.status_code >= 500:
            wait = retry.retry_after_s(answer.headers.get("Retry-After"))
            return Outcome(False, retry=True, error=error,
                           retry_after_s=None if wait is None else min(wait, max_retry_after_s))
        if 300 <= answer.status_code < 400:
            error += "; redirects are not followed: set NOTIFY_URL to the address it names"
        return Outcome(False, error=error)


class Notifier:
    """Creates and delivers the notifications of one database (NOTIFY_URL must be set)."""

    def __init__(self, db: Database, settings: Settings, *, policy: Policy | None = None,
                 session: requests.Session | None = None):
        if not settings.notify_url:
            raise ValueError("NOTIFY_URL is not set: there is nowhere to notify")
        self.db, self.settings = db, settings
        self.url: str = settings.notify_url
        self.policy = policy or Policy()
        self.session = session or requests.Session()
        self.signer = credentials.webhook("NOTIFY_SECRET", settings.notify_secret) if settings.notify_secret else None
        #: History keys this process has seen claimed, with their `at`: not inserted again each pass.
        self._known: dict[str, datetime] = {}

    @property
    def receiver(self) -> str:
        """NOTIFY_URL as logs show it: the host alone."""
        return url_host(self.url)

    def collect(self, now: datetime | None = None) -> int:
        """Create the notification of every recent history entry of a notify status; how many
        this call created (another notifier may have created the rest)."""
        now = now or utcnow()
        since = now - timedelta(seconds=self.policy.lookback_s)
        self._known = {key: at for key, at in self._known.items() if at >= since}
        created = 0
        for status, day in ((s, d) for s in self.settings.notify_on for d in status_history.days_between(since, now)):
            for entry in self.db[status_history.COLLECTION].find({"to": status, "day": day, "at": {"$gte": since}}):
                if entry["_id"] in self._known:
                    continue
                created += self._create(entry, now)
                self._known[entry["_id"]] = as_utc(entry["at"])
        return created

    def _create(self, entry: dict[str, Any], now: datetime) -> bool:
        if self.db[COLLECTION].find_one({"_id": entry["_id"]}, {"_id": 1}) is not None:
            return False  # created before (by another notifier, or before this process started)
        run = self.db.runs.find_one({"_id": entry["runId"]}, {"hypothesisId": 1}) or {}
        hypothesis = self.db.hypotheses.find_one({"_id": run.get("hypothesisId")}, {"title": 1}) or {}
        event = event_body(entry, hypothesis.get("title"), self.settings.console_url)
        try:
            self.db[COLLECTION].insert_one({
                "_id": entry["_id"], "runId": entry["runId"], "status": entry["to"], "event": event, "state": PENDING,
                "attempts": 0, "nextAttemptAt": now, "lastError": None, "sentAt": None, "createdAt": now,
                "createdDay": run_days.day_of(now),
            })
        except DuplicateKeyError:
            return False  # another notifier created it
        return True

    def deliver_due(self, stop: threading.Event | None = None) -> dict[str, int]:
        """Try each due pending notification once (at most `Policy.batch`); counts by outcome."""
        found = {"sent": 0, "retrying": 0, "failed": 0}
        due = self.db[COLLECTION].find({"state": PENDING, "nextAttemptAt": {"$lte": utcnow()}})
        for doc in list(due.sort("nextAttemptAt", 1).limit(self.policy.batch)):
            if stop is not None and stop.is_set():
                break
            result = self.deliver(doc)
            if result is not None:
                found[result] += 1
        return found

    def deliver(self, doc: dict[str, Any]) -> str | None:
        """One try of one notification: "sent", "retrying" or "failed"; None when the try is
        not this process's to make (another took it, or the notification moved on)."""
        tries = int(doc.get("attempts") or 0)
        if not expiring.first_time(self.db, f"notify:{doc['_id']}#{tries + 1}", self.policy.hold_s):
            return None
        current = self.db[COLLECTION].find_one({"_id": doc["_id"]})
        if current is None or current["state"] != PENDING or int(current.get("attempts") or 0) != tries:
            return None
        body = render(current["event"], self.settings.notify_format)
        outcome = post(self.session, self.url, body, str(doc["_id"]), self.signer, self.policy.timeout_s,
                       self.policy.max_retry_after_s)
        tries += 1
        now = utcnow()
        update: dict[str, Any] = {"attempts": tries, "lastError": outcome.error}
        if outcome.sent:
            update.update(state=SENT, sentAt=now)
            NOTIFICATIONS_SENT.inc()
            result = "sent"
        elif outcome.retry and tries < self.policy.max_tries:
            wait = max(self.policy.retry_in_s(tries), outcome.retry_after_s or 0.0)
            update["nextAttemptAt"] = now + timedelta(seconds=wait)
            log.info("notification %s for run %s: try %d to %s failed (%s); next in %.0fs", doc["_id"], doc["runId"],
                     tries, self.receiver, outcome.error, wait)
            result = "retrying"
        else:
            update["state"] = FAILED
            NOTIFICATIONS_FAILED.inc()
            log.warning("notification of run %s (%s) to %s failed after %d tr%s: %s", doc["runId"], doc["status"],
                        self.receiver, tries, "y" if tries == 1 else "ies", outcome.error)
            result = "failed"
        self.db[COLLECTION].update_one({"_id": doc["_id"], "attempts": tries - 1}, {"$set": update})
        return result

    def run_once(self, stop: threading.Event | None = None) -> dict[str, int]:
        created = self.collect()
        return {"created": created, **self.deliver_due(stop)}

    def run_forever(self, stop: threading.Event, interval_s: float) -> None:
        """Collect and deliver every `interval_s` until `stop` is set; a database outage or a
        fault of its own is logged and the next pass tries again (the thread never dies)."""
        log.info("notifier started: %s to %s every %.1fs", "/".join(self.settings.notify_on), self.receiver, interval_s)
        while not stop.is_set():
            try:
                self.run_once(stop)
            except PyMongoError as exc:
                log.warning("notifier cannot reach MongoDB (%s); retrying in %.1fs", exc, interval_s)
            except Exception:  # noqa: BLE001 - a bug must not end notifications for the process's lifetime
                log.exception("notifier pass failed; retrying in %.1fs", interval_s)
            stop.wait(interval_s)
        log.info("notifier stopped")


#: The operations overview shows the notifications of this many days (today included).
SHOWN_DAYS = 7


def recent(db: Database, limit: int = 20, now: datetime | None = None) -> list[dict[str, Any]]:
    """The latest notifications of the last `SHOWN_DAYS`, newest first (for an operations page):
    a day at a time, an indexed equality, never a sort of every notification ever sent."""
    found: list[dict[str, Any]] = []
    for day in _shown_days(now):
        cursor = db[COLLECTION].find({"createdDay": day}).sort([("createdAt", DESCENDING), ("_id", DESCENDING)])
        found.extend(cursor.limit(limit - len(found)))
        if len(found) >= limit:
            break
    return found


def counts(db: Database, now: datetime | None = None) -> dict[str, int]:
    """How many notifications of the last `SHOWN_DAYS` are in each state."""
    days = _shown_days(now)
    return {state: sum(db[COLLECTION].count_documents({"state": state, "createdDay": day}) for day in days)
            for state in STATES}


def _shown_days(now: datetime | None) -> list[str]:
    now = now or utcnow()
    return status_history.days_between(now - timedelta(days=SHOWN_DAYS - 1), now)


def _without_url(text: str, url: str) -> str:
    """`text` with the URL's path and query masked (requests' messages name the URL)."""
    parts = urlsplit(url)
    for secret in (url, parts.path, parts.query):
        if secret and secret != "/":
            text = text.replace(secret, "***")
    return text[:500]


def _clip(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def _mrkdwn(text: str) -> str:
    """Slack's three control characters escaped, as its message formatting asks."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
