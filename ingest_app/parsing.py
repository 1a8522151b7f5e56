"""HTTP modes and limits of the ingest routes: request bytes in, a list of `Item`s out.

Modes (CloudEvents HTTP binding 1.0, plus one batch format of our own):

- structured: `application/cloudevents+json`, or `application/json` with no `ce-specversion`
  header (the body is the whole event);
- binary: `ce-*` headers carry the attributes and the `application/json` body is `data`; the
  W3C `traceparent`/`tracestate` headers are the tracing extension's attributes;
- batch: `application/cloudevents-batch+json` (a JSON array, the spec's batch format) or
  `application/x-ndjson` (one structured event a line; NDJSON is not a CloudEvents format).

Limits (settings, each with its own status):

- `max_body_bytes`: a larger body is 413, read no further than one byte past the limit;
- `max_batch_events`: more events in one batch is 413 and nothing is applied (the client must
  split the batch; applying a prefix would leave it guessing which part to resend);
- `max_line_bytes`: an NDJSON line longer than that is that line's `invalid` result, and the
  other lines are still applied.

Bad JSON: NDJSON frames each record by its newline, so one unparseable line cannot hide where
the others start; it becomes that line's `invalid` result naming the line, and the rest are
applied. A JSON body (a single event or a JSON array batch) that does not parse has no
trustworthy boundaries at all: 400 naming the line and column, and nothing is applied.
"""

from __future__ import annotations

import re
from itertools import islice
from typing import Any
from urllib.parse import unquote

from flask import g, request

from orchestrator import safe_json
from orchestrator.errors import OrchestratorError
from orchestrator.ingest import Item
from orchestrator.settings import Settings

STRUCTURED = "application/cloudevents+json"
JSON = "application/json"
BATCH_JSON = "application/cloudevents-batch+json"
NDJSON = "application/x-ndjson"

_SINGLE_TYPES = (STRUCTURED, JSON)
_BATCH_TYPES = (NDJSON, BATCH_JSON)
_CE_PREFIX = "ce-"
#: Tracing extension attributes travel as plain W3C headers in binary mode.
_TRACE_HEADERS = ("traceparent", "tracestate")
_INTEGER = re.compile(r"^-?\d{1,19}$")
#: Bytes per read of the body: large enough for few calls, small next to the body limit.
_READ_CHUNK = 256 * 1024
#: A line with something on it: NDJSON blank lines are not events.
_NON_BLANK_LINE = re.compile(rb"^[ \t\r\x0b\x0c]*[^ \t\r\n\x0b\x0c]", re.M)


class RequestRejected(OrchestratorError):
    """The request as a whole cannot be ingested; becomes a problem+json response."""

    def __init__(self, status: int, title: str, detail: str, **extra: Any):
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.extra = extra


def read_body(settings: Settings) -> bytes:
    """The raw body, read once per request (auth verifies signatures over these same bytes)."""
    cached = g.get("_ingest_body")
    if cached is not None:
        return cached
    limit = settings.max_body_bytes
    declared = request.content_length
    if declared is not None and declared > limit:
        raise _too_large(f"the body is {declared} bytes", limit)
    body = _read_at_most(limit + 1 if declared is None else declared + 1)
    if len(body) > limit:
        raise _too_large("the body is larger", limit)
    g._ingest_body = body
    return body


def _read_at_most(size: int) -> bytes:
    """Up to `size` bytes of the body, in chunks: one `read(size)` allocates `size` bytes up front
    (werkzeug's stream is an `io.RawIOBase`), 5 MB for every request however small its body."""
    chunks: list[bytes] = []
    left = size
    while left > 0:
        chunk = request.stream.read(min(left, _READ_CHUNK))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def parse_single(settings: Settings) -> Item:
    """The one event of a POST /api/ingest/event, structured or binary."""
    mimetype = _content_type(_SINGLE_TYPES, "POST batches to /api/ingest/events.")
    body = read_body(settings)
    if mimetype == JSON and _CE_PREFIX + "specversion" in request.headers:
        return Item(0, _binary_event(body, mimetype))
    return Item(0, _parse_json(body, "the event"))


def parse_batch(settings: Settings) -> list[Item]:
    """The events of a POST /api/ingest/events, NDJSON or a JSON array."""
    mimetype = _content_type(_BATCH_TYPES, "POST a single event to /api/ingest/event.")
    body = read_body(settings)
    if mimetype == NDJSON:
        return _ndjson_items(body, settings)
    try:
        values = safe_json.load_array(body, settings.max_batch_events)
    except UnicodeDecodeError as exc:
        raise _not_utf8("the batch", exc) from None
    except safe_json.TooManyItems:
        raise _too_many(f"more than {settings.max_batch_events}", settings) from None
    except safe_json.JsonInputError as exc:
        raise _not_json("the batch", exc) from None
    except ValueError:
        raise RequestRejected(400, "Bad Request", f"{BATCH_JSON} must be a JSON array of events.") from None
    return [_array_item(index, value) for index, value in enumerate(values)]


def _array_item(index: int, value: Any) -> Item:
    """An item of a JSON array batch: its event, or invalid when it alone could not be parsed
    (nested too deep; its neighbours are still applied)."""
    if isinstance(value, safe_json.JsonInputError):
        return Item(index, errors={"event": [f"Item {index} is not valid JSON: {value.reason}."]})
    return Item(index, value)


def _content_type(accepted: tuple[str, ...], hint: str) -> str:
    mimetype = request.mimetype
    charset = request.mimetype_params.get("charset", "utf-8").lower()
    if mimetype not in accepted:
        raise RequestRejected(
            415, "Unsupported Media Type",
            f"Content-Type {mimetype or '(none)'!r} is not accepted here; use {' or '.join(accepted)}. {hint}",
        )
    if charset not in ("utf-8", "utf8"):
        raise RequestRejected(415, "Unsupported Media Type", f"charset {charset!r} is not accepted; send UTF-8.")
    return mimetype


def _too_large(what: str, limit: int) -> RequestRejected:
    return RequestRejected(
        413, "Content Too Large", f"{what}; the limit is {limit} bytes (INGEST_MAX_BODY_BYTES). Send smaller batches.",
    )


def _too_many(count: str, settings: Settings) -> RequestRejected:
    return RequestRejected(
        413, "Content Too Large",
        f"the batch holds {count} events; the limit is {settings.max_batch_events} "
        "(INGEST_MAX_BATCH_EVENTS). Split it; nothing of this batch was applied.",
    )


def _not_utf8(what: str, exc: UnicodeDecodeError) -> RequestRejected:
    return RequestRejected(400, "Bad Request", f"{what} is not UTF-8: byte {exc.start} is invalid.")


def _not_json(what: str, exc: safe_json.JsonInputError) -> RequestRejected:
    """A 400 naming the line and column when the parser knows them."""
    if exc.line is None:
        return RequestRejected(400, "Bad Request", f"{what} is not valid JSON: {exc.reason}.")
    return RequestRejected(
        400, "Bad Request", f"{what} is not valid JSON: line {exc.line} column {exc.column}: {exc.reason}.",
        line=exc.line, column=exc.column,
    )


def _parse_json(body: bytes, what: str) -> Any:
    """Decode a whole JSON body or raise a 400 naming the line and column."""
    try:
        return safe_json.loads(body)
    except UnicodeDecodeError as exc:
        raise _not_utf8(what, exc) from None
    except safe_json.JsonInputError as exc:
        raise _not_json(what, exc) from None


def _ndjson_items(body: bytes, settings: Settings) -> list[Item]:
    """Counted before any line is decoded: a body of many small lines over the limit is refused
    at the cost of one scan, not of a parsed object per line."""
    limit = settings.max_batch_events
    if sum(1 for _ in islice(_NON_BLANK_LINE.finditer(body), limit + 1)) > limit:
        raise _too_many(f"more than {limit}", settings)
    items: list[Item] = []
    line, counted_to = 1, 0
    for match in _NON_BLANK_LINE.finditer(body):
        start = match.start()
        line += body.count(b"\n", counted_to, start)
        counted_to = start
        end = body.find(b"\n", start)
        raw = body[start:end if end >= 0 else len(body)]
        items.append(_ndjson_item(len(items), line, raw, settings.max_line_bytes))
    return items


def _ndjson_item(index: int, line: int, raw: bytes, max_line_bytes: int) -> Item:
    """One NDJSON line: its event, or an item that is invalid with the reason naming the line."""
    if len(raw) > max_line_bytes:
        reason = f"Line {line} is {len(raw)} bytes; the limit is {max_line_bytes} (INGEST_MAX_LINE_BYTES)."
        return Item(index, errors={"event": [reason]}, line=line)
    try:
        return Item(index, safe_json.loads(raw), line=line)
    except UnicodeDecodeError as exc:
        reason = f"Line {line} is not UTF-8: byte {exc.start} is invalid."
    except safe_json.JsonInputError as exc:
        where = f"column {exc.column}: " if exc.column is not None else ""
        reason = f"Line {line} is not valid JSON: {where}{exc.reason}."
    return Item(index, errors={"event": [reason]}, line=line)


def _binary_event(body: bytes, mimetype: str) -> dict[str, Any]:
    """Rebuild a structured event from binary mode: attributes from headers, body as `data`."""
    event: dict[str, Any] = {}
    for name, value in request.headers.items():
        lowered = name.lower()
        if lowered.startswith(_CE_PREFIX) and len(lowered) > len(_CE_PREFIX):
            event[lowered[len(_CE_PREFIX):]] = unquote(value)
        elif lowered in _TRACE_HEADERS:
            event.setdefault(lowered, value)
    seq = event.get("seq")
    if isinstance(seq, str) and _INTEGER.match(seq.strip()):
        # The binding carries an Integer attribute as its decimal string.
        event["seq"] = int(seq)
    event["datacontenttype"] = mimetype
    event["data"] = _parse_json(body, "the event data")
    return event
