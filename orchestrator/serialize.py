"""JSON shaping of stored documents, shared by the read API and the `manage-runs` CLI.

Documents keep their stored camelCase names (and `_id`), so the frontend, the API and the CLI
all speak the field names of the design. Only the value types BSON has and JSON lacks change:

- datetimes become RFC 3339 UTC strings with milliseconds (`2026-01-02T03:04:05.678Z`): BSON
  stores milliseconds, so nothing is lost, and `Z` strings sort and parse alike in every
  language. Flask's default would be an RFC 822 HTTP date, which drops the milliseconds.
- ObjectId, UUID and Decimal128 become strings.

Nothing here imports Flask, so the CLI can use it without the web stack.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from bson import Decimal128, ObjectId

from orchestrator.utc import as_utc


def to_rfc3339(value: datetime) -> str:
    """An RFC 3339 UTC string with milliseconds. A naive datetime is taken as UTC, because that is
    what pymongo returns for BSON dates when the client is not `tz_aware`."""
    return as_utc(value).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def jsonable(value: Any) -> Any:
    """`value` with every BSON-only type replaced by its JSON form, recursively.

    Mappings become dicts and tuples become lists; anything JSON already knows passes through.
    """
    if isinstance(value, Mapping):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if isinstance(value, datetime):
        return to_rfc3339(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (ObjectId, uuid.UUID, Decimal128)):
        return str(value)
    return value
