"""The one way a value the CLI did not write itself reaches the terminal.

Run titles, metric and stage names, messages, pod ids, event data and errors come from
hypotheses people typed, from pipelines (LLM-written code in AI-Scientist-v2) and from any
client of the ingest API. Printed as rich markup, `[/bold]` crashes the CLI (MarkupError) and
`[red]` restyles it; printed raw, an ANSI sequence (`\\x1b[2J`) or a carriage return rewrites
the operator's screen. `shown` returns a rich `Text`, which rich never parses as markup, with
every control character replaced by its visible escape (`\\x1b`, `\\r`, `\\u202e`).
"""

from __future__ import annotations

import unicodedata

from rich.text import Text

#: Not controls (category Cc) but still able to reorder or break what follows on screen: the
#: bidirectional overrides and isolates ("Trojan Source"), and the Unicode line separators.
_INVISIBLE_FORMATTING = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u2028\u2029")


def visible(value: object) -> str:
    """`value` as text with control characters written as escapes; a newline too (`\\n`), so
    a value cannot fake a table row or a line of output."""
    text = value if isinstance(value, str) else str(value)
    return "".join(_escape(ch) if _is_control(ch) else ch for ch in text)


def shown(value: object, style: str = "") -> Text:
    """`value` ready for a rich table cell or `print`: no markup parsed, no control character
    raw. Every value from the database, an event, an error or the environment goes through here."""
    return Text(visible(value), style=style)


def _is_control(ch: str) -> bool:
    return unicodedata.category(ch) == "Cc" or ch in _INVISIBLE_FORMATTING


def _escape(ch: str) -> str:
    """The repr-style escape: \\x1b, \\r, \\t, \\u202e."""
    return ch.encode("unicode_escape").decode("ascii")
