"""What becomes of one id: the `Outcome` the spider yields, validation checks and storage writes;
and a listing `Page`: its outcomes with the `ListingMark` committed along with them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

STORED, NOT_FOUND, INVALID, FAILED = "stored", "not_found", "invalid", "failed"
STATES = (STORED, NOT_FOUND, INVALID, FAILED)
# A 304 to a conditional request: the stored row stands; only its fetched_at moves.
UNCHANGED = "unchanged"


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
    etag: str | None = None  # the answer's validators, sent back by a conditional refresh
    last_modified: str | None = None
    schema: str | None = None  # invalid: the digest of the schema the payload failed


@dataclass(slots=True)
class ListingMark:
    """Where a listing stands once the outcomes written before it are committed: written
    in the same transaction as they are, so that a stop never separates the two."""

    listing: str  # the listing's key: its pagination and URL
    position: str | None  # JSON (see ingest.listing.walk.Walk.position); None once finished
    finished: bool
    high_water: str | None  # JSON: the highest `since` field among its items so far
    at: float
    # With details: the page's ids, kept in the listed ids of the listing; each needs its
    # details fetched unless it has an outcome from `stale_before` on (0: any outcome).
    listed: list[str] = field(default_factory=list)
    stale_before: float = 0.0


@dataclass(slots=True)
class Page:
    """A listing page's outcomes, and the mark of the listing after them."""

    outcomes: list[Outcome]
    mark: ListingMark
