"""What becomes of one id: the `Outcome` the spider yields, validation checks and storage writes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

STORED, NOT_FOUND, INVALID, FAILED = "stored", "not_found", "invalid", "failed"
STATES = (STORED, NOT_FOUND, INVALID, FAILED)


def as_json(data: str | None) -> Any:
    """The payload as the JSON value it is, for feed exports (``-O items.jsonl``)."""
    if data is None:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return data


@dataclass(slots=True)
class Outcome:
    """The terminal state of one id, with the payload as received when there was one.

    ``payload`` is the parsed JSON of ``data``, for validation only: storage keeps
    ``data``, the text exactly as the API sent it, and exports leave ``payload`` out
    (``FEED_EXPORT_FIELDS``).
    """

    id: str
    state: str
    url: str
    status: int | None = None
    data: str | None = field(default=None, metadata={"serializer": as_json})
    reason: str | None = None
    fetched_at: float = 0.0
    payload: Any = field(default=None, repr=False)
