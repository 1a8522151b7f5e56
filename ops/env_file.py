"""Filling the empty credentials of a `.env` file, so the newcomer's path from `.env.example` to
`honcho start` is one command (`manage-runs token --fill .env`) instead of pasting four tokens.

Only a line that assigns nothing (`OPERATOR_TOKEN=`) is filled: a value someone set is never
replaced, and a commented line (`#METRICS_TOKEN=`) stays off. The file is rewritten through a
temporary file in its folder and renamed over it, so a crash never leaves half a file, and left
readable and writable by its owner alone (it holds secrets now, whatever its mode was). A `.env`
that is a symlink has its target rewritten, and stays a symlink.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

from orchestrator.credentials import VARIABLES

#: What `--fill` writes: each role's token variable and the console's cookie key.
FILLABLE: tuple[str, ...] = (*VARIABLES.values(), "SECRET_KEY")

_EMPTY = re.compile(r"^(?P<name>[A-Z_][A-Z0-9_]*)=[ \t]*$")


def fill_empty(path: Path, fresh: Callable[[], str]) -> list[str]:
    """Give each `FILLABLE` variable that `path` assigns nothing a `fresh()` value; return the
    names filled, in file order (none: the file is left untouched). Raises OSError or
    UnicodeDecodeError for a file it cannot read or write."""
    path = path.resolve()
    with open(path, encoding="utf-8", newline="") as given:  # newline="": its line endings kept as they are
        lines = given.read().splitlines(keepends=True)
    filled: list[str] = []
    for i, line in enumerate(lines):
        found = _EMPTY.match(line.rstrip("\r\n"))
        if found and found["name"] in FILLABLE:
            ending = line[len(line.rstrip("\r\n")):] or "\n"
            lines[i] = f"{found['name']}={fresh()}{ending}"
            filled.append(found["name"])
    if filled:
        _replace(path, "".join(lines))
    return filled


def _replace(path: Path, text: str) -> None:
    mode = stat.S_IMODE(path.stat().st_mode) & ~(stat.S_IRWXG | stat.S_IRWXO)  # secrets: the owner's alone
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
            out.write(text)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
