"""JSON as it enters from outside, and what the database can store: the one place for both.

Every JSON text a client sends (an event, a batch, an NDJSON line, a write API body, a page
cursor) is parsed by `loads` or `load_array`, and everything stored from it is checked by
`storage_errors`. Python's `json` takes what is not JSON (NaN, Infinity, 1e400 as inf, lone
surrogates) and recurses per nesting level (about 1,000 levels raise RecursionError); BSON and
FerretDB then refuse more (NUL in keys or text, `$`/`.` in keys, arrays inside arrays, integers
past int64). A refusal here is the client's error (4xx) naming the field; past here it was a
500, and a worker retried the same event forever.
"""

from __future__ import annotations

import json
import math
import operator
import re
from itertools import accumulate, repeat
from typing import Any

from orchestrator.errors import OrchestratorError

#: Deepest nesting of arrays and objects accepted. An event is 3-4 levels deep and a free-form
#: field (ideaJson, summary, kv) a few more; BSON nests at most 100 documents, and Python's
#: parser recurses per level. 64 leaves room for honest documents and refuses the rest early.
MAX_DEPTH = 64
#: Largest serialized size of a free-form field of the write API (ideaJson): a document is at
#: most 16 MiB, and the frontend shows the field whole.
MAX_FREE_FORM_BYTES = 256 * 1024
#: Integers BSON can store (int64).
MIN_INT, MAX_INT = -(2**63), 2**63 - 1

#: Bytes `depth` deletes: all but brackets and quotes.
_NOT_STRUCTURE = bytes(range(256)).translate(None, b'[]{}"')
#: Per byte left: 1 for a quote (toggles "inside a string"), else 0 ...
_QUOTES = bytes.maketrans(b'[{]}"', b"\x00\x00\x00\x00\x01")
#: ... and the nesting step + 1: opening brackets 2, closing 0, quotes 1.
_STEPS = bytes.maketrans(b'[{]}"', b"\x02\x02\x00\x00\x01")
#: What BSON or FerretDB cannot store in text: NUL (a C string's end; PostgreSQL text refuses
#: it) and lone surrogates (not encodable as UTF-8).
_UNSTORABLE_TEXT = re.compile("[\x00\ud800-\udfff]")
_WHITESPACE = re.compile(r"[ \t\n\r]*")
#: What `_extent` looks at: escapes (skipped whole), quotes, brackets and commas.
_TOKENS = re.compile(r'\\.|["\[\]{},]', re.S)


class JsonInputError(OrchestratorError, ValueError):
    """A text that is not JSON we accept. `line` and `column` (1-based) when a position is known."""

    def __init__(self, reason: str, line: int | None = None, column: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.line = line
        self.column = column


class TooManyItems(OrchestratorError, ValueError):
    """A JSON array with more than the allowed items; `load_array` stops reading at the first extra one."""

    def __init__(self, limit: int):
        super().__init__(f"more than {limit} items")
        self.limit = limit


def _reject_constant(name: str) -> None:
    """NaN and Infinity are not JSON, though Python's parser takes them."""
    raise JsonInputError(f"{name} is not valid JSON")


def _finite(text: str) -> float:
    """1e400 parses to inf, which JSON cannot carry back out: refuse it as the number it is."""
    value = float(text)
    if not math.isfinite(value):
        raise JsonInputError(f"the number {text[:40]} is out of range")
    return value


_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite)


def depth(text: str | bytes) -> int:
    """How deep arrays and objects nest in `text`, without recursing and without a Python loop
    per character (a 5 MB body takes a fraction of a second, a few copies of it at most).

    Escaped backslashes and quotes are cut first, so every quote left opens or closes a string;
    then only brackets and quotes are kept, a running XOR over the quotes says which brackets
    lie inside strings, and the running sum of the others' steps is the depth. A text that is
    not JSON gets a number too; the parser then says what is wrong with it. UTF-8 bytes are
    scanned as they are (no multi-byte sequence holds an ASCII byte), which copies nothing."""
    raw = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
    skeleton = raw.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _NOT_STRUCTURE)
    outside = map(operator.xor, accumulate(skeleton.translate(_QUOTES), operator.xor), repeat(1))
    steps = map(operator.sub, skeleton.translate(_STEPS), repeat(1))
    return max(accumulate(map(operator.mul, steps, outside)), default=0)


def _brackets(text: str | bytes) -> int:
    return text.count("[") + text.count("{") if isinstance(text, str) else text.count(b"[") + text.count(b"{")


def _check_depth(text: str | bytes) -> None:
    if _brackets(text) <= MAX_DEPTH:
        return  # too few brackets to nest deeper, whatever the strings hold
    found = depth(text)
    if found > MAX_DEPTH:
        raise JsonInputError(f"nested {found} levels deep; at most {MAX_DEPTH} levels of arrays and objects are accepted")


def _position(text: str, index: int) -> tuple[int, int]:
    line = text.count("\n", 0, index) + 1
    return line, index - text.rfind("\n", 0, index)


def _decode(text: str, start: int) -> tuple[Any, int]:
    """One JSON value of `text` from `start`: (value, index after it); JsonInputError otherwise."""
    try:
        return _DECODER.raw_decode(text, start)
    except json.JSONDecodeError as exc:
        raise JsonInputError(exc.msg, exc.lineno, exc.colno) from None
    except JsonInputError:
        raise
    except (ValueError, RecursionError) as exc:  # e.g. an integer of more than 4,300 digits
        raise JsonInputError(str(exc)) from None


def loads(data: str | bytes) -> Any:
    """The JSON value of `data`, whole; JsonInputError (a ValueError) naming why and where, or
    UnicodeDecodeError when bytes are not UTF-8. Bytes are checked before they are decoded."""
    _check_depth(data)
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    value, end = _decode(text, _WHITESPACE.match(text).end())  # type: ignore[union-attr]
    end = _WHITESPACE.match(text, end).end()  # type: ignore[union-attr]
    if end != len(text):
        raise JsonInputError("Extra data", *_position(text, end))
    return value


def load_array(data: str | bytes, max_items: int) -> list[Any]:
    """The items of a JSON array, built one at a time: TooManyItems as soon as there are more
    than `max_items`, before the rest cost any memory. An item nested too deep comes back as its
    JsonInputError, in its place, so a batch can refuse that item alone. JsonInputError when
    `data` is not JSON; ValueError("not an array") when it is JSON but no array; UnicodeDecodeError
    when bytes are not UTF-8."""
    shallow = _brackets(data) <= MAX_DEPTH or depth(data) <= MAX_DEPTH
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    at = _WHITESPACE.match(text).end()  # type: ignore[union-attr]
    if not text.startswith("[", at):
        loads(text)  # a JSON error names its position; valid JSON is just not an array
        raise ValueError("not an array")
    decode = _decode if shallow else _decode_item
    items: list[Any] = []
    at = _WHITESPACE.match(text, at + 1).end()  # type: ignore[union-attr]
    if text.startswith("]", at):
        return _after_array(text, at + 1, items)
    while True:
        if len(items) == max_items:
            raise TooManyItems(max_items)
        item, at = decode(text, at)
        items.append(item)
        at = _WHITESPACE.match(text, at).end()  # type: ignore[union-attr]
        if text.startswith("]", at):
            return _after_array(text, at + 1, items)
        if not text.startswith(",", at):
            raise JsonInputError("Expecting ',' delimiter", *_position(text, at))
        at = _WHITESPACE.match(text, at + 1).end()  # type: ignore[union-attr]


def _decode_item(text: str, start: int) -> tuple[Any, int]:
    """`_decode` for an array some item of which nests too deep: each item's extent is found
    first, and one too deep is returned as its error instead of being parsed."""
    end, deepest = _extent(text, start)
    if deepest > MAX_DEPTH - 1:  # the array itself is one level
        return JsonInputError(f"nested {deepest} levels deep; at most {MAX_DEPTH - 1} levels are accepted "
                              "in an item of an array"), end
    return _decode(text, start)


def _extent(text: str, start: int) -> tuple[int, int]:
    """Where the value at `start` ends and how deep it nests: a scan of its brackets, quotes and
    escapes that neither recurses nor builds anything (slow, so only for an array found too deep)."""
    level = deepest = 0
    inside = False
    for match in _TOKENS.finditer(text, start):
        token = match.group()
        if inside:
            inside = token != '"'
        elif token == '"':
            inside = True
        elif token in "[{":
            level += 1
            deepest = max(deepest, level)
        elif level == 0 and token in "]},":
            return match.start(), deepest
        elif token in "]}":
            level -= 1
            if level == 0:
                return match.end(), deepest
    return len(text), deepest


def _after_array(text: str, end: int, items: list[Any]) -> list[Any]:
    end = _WHITESPACE.match(text, end).end()  # type: ignore[union-attr]
    if end != len(text):
        raise JsonInputError("Extra data", *_position(text, end))
    return items


def text_errors(value: str) -> str | None:
    """Why a string cannot be stored, or None."""
    bad = _UNSTORABLE_TEXT.search(value)
    if bad is None:
        return None
    what = "NUL" if bad.group() == "\x00" else "a lone surrogate"
    return f"Text must not contain {what} (character {bad.start()}): the database cannot store it."


def _key_error(key: Any) -> str | None:
    if not isinstance(key, str) or "." in key or key.startswith("$") or _UNSTORABLE_TEXT.search(key):
        return f"Key {key!r} must be a string with no '.', no leading '$', no NUL and no lone surrogate."
    return None


def storage_errors(value: Any, path: str) -> dict[str, list[str]]:
    """Reasons `value` cannot be stored as is, by path: what FerretDB v1 refuses (seen), so a
    value every supported server can store is valid and one that would fail half-way through a
    bulk write is rejected up front instead (MongoDB 5+ would take dotted keys; FerretDB answers
    "invalid key", refuses arrays directly inside arrays, and drops the connection on NaN; BSON
    refuses NUL in keys and integers past int64; PostgreSQL refuses NUL in text)."""
    errors: dict[str, list[str]] = {}
    if isinstance(value, dict):
        for key, item in value.items():
            reason = _key_error(key)
            if reason:
                errors.setdefault(path or "body", []).append(reason)
                continue
            errors.update(storage_errors(item, f"{path}.{key}" if path else key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            if isinstance(item, (list, tuple)):
                errors.setdefault(f"{path}.{index}", []).append(
                    "Arrays directly inside arrays cannot be stored; wrap the inner one in an object.")
            else:
                errors.update(storage_errors(item, f"{path}.{index}"))
    elif isinstance(value, str):
        reason = text_errors(value)
        if reason:
            errors[path] = [reason]
    elif isinstance(value, float) and not math.isfinite(value):
        errors[path] = ["Must be a finite number."]
    elif isinstance(value, int) and not isinstance(value, bool) and not MIN_INT <= value <= MAX_INT:
        errors[path] = ["Integers must fit in 64 bits (BSON's int64)."]
    return errors


def free_form_errors(value: Any, path: str) -> dict[str, list[str]]:
    """A free-form JSON field of the write API: storable, and at most MAX_FREE_FORM_BYTES serialized."""
    errors = storage_errors(value, path)
    if not errors:
        size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
        if size > MAX_FREE_FORM_BYTES:
            errors[path] = [f"Is {size} bytes as JSON; at most {MAX_FREE_FORM_BYTES} are accepted."]
    return errors
