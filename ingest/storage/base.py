"""The storage contract: the Store protocol, its errors, and how a batch of outcomes is written."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ingest.fetching.answers import parse_json
from ingest.items import FAILED, STATES, STORED, UNCHANGED, ListingMark, Outcome

# What a write takes: outcomes, and marks of listings committed with them.
Record = Outcome | ListingMark


@dataclass(frozen=True, slots=True)
class Kept:
    """An invalid id's payload, kept with the reason a schema refused it: checked again
    when the schema changes."""

    id: str
    data: str
    url: str | None
    status: int | None
    fetched_at: float


@dataclass(frozen=True, slots=True)
class Listed:
    """An id listed with details: its place in the listing's order (a later listing of it
    moves it to the end), and the time its outcome must be from, at least, to count."""

    place: int
    id: str
    stale_before: float


@dataclass(frozen=True, slots=True)
class KeptQuota:
    """A quota of a long period as last seen, for ingest-plan and the next run: one the
    server announced (``source`` "server": its name, limit, period and what remained), or
    an allowance of RATELIMIT_RATE spent (``source`` "configured", named by the rate,
    nothing remaining until ``reset_at``). ``bucket``: the API's origin, or with several
    keys ``origin#fingerprint``; times are epoch seconds."""

    bucket: str
    name: str
    source: str
    limit: int | None
    period: float | None
    remaining: int | None
    reset_at: float | None
    seen_at: float


SERVER, CONFIGURED = "server", "configured"


class StorageError(Exception):
    """A store could not do what it was asked; the message names the masked URL."""


class StorageUnavailable(StorageError):
    """The database cannot be reached or cannot work now (connection refused or lost,
    shutdown, disk full, locked, timed out, not connected): the same call succeeds once
    it is back, after connecting again."""


class StorageRefused(StorageError):
    """The database refused what the outcomes hold (a value a column refuses, a broken
    constraint, a limit a value exceeds): as they are, they would fail forever."""


class Store(Protocol):
    """One database holding the `items` and `failures` tables; used from one thread.

    A store sorts its driver's errors as it raises them: `StorageUnavailable` or
    `StorageRefused`; a plain `StorageError` when the database is not one of ours.
    """

    url: str  # masked: safe to log

    def connect(self, *, create: bool = True) -> None:
        """Connect (again, if the connection was lost), creating the tables. With
        ``create=False`` nothing is created: the database must exist and hold them."""

    def write(self, outcomes: Sequence[Record]) -> None:
        """Apply the outcomes (and listing marks) in one transaction, in turn (see `plan_write`)."""

    def states(self, ids: Sequence[str]) -> dict[str, tuple[str, float]]:
        """id -> (state, fetched_at) for the ids that have an outcome."""

    def validators(self, ids: Sequence[str]) -> dict[str, tuple[str | None, str | None]]:
        """id -> (ETag, Last-Modified) for the stored ids whose answer had either."""

    def listing(self, key: str) -> ListingMark | None:
        """Where the listing ``key`` stands, if it was ever walked."""

    def listed(self, key: str, after: int, limit: int) -> list[Listed]:
        """The ids listed with details in ``key`` after the place ``after``, in the order
        they were listed: at most ``limit``."""

    def counts(self) -> dict[str, int]:
        """How many ids stand in each state, every state named."""

    def keep_quota(self, quota: KeptQuota) -> None:
        """Keep ``quota`` in the table ``quotas``, in place of the one of its bucket and name."""

    def kept_quotas(self, api: str) -> list[KeptQuota]:
        """The quotas kept for the API at the origin ``api``, its keys' buckets included."""

    def kept_invalid(self, schema: str, after: str, limit: int) -> list[Kept]:
        """The ids a schema other than ``schema`` (by its digest) found invalid, with their
        payloads, after the id ``after`` in order: at most ``limit``."""

    def checked(self, schema: str, reasons: Sequence[tuple[str, str]]) -> None:
        """The invalid ids of ``reasons`` (id, reason) were checked against ``schema``
        again and are still invalid: their reasons and schema digest updated."""

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Failure:
    """A failure row to upsert: the outcome, and how many failures it adds to `attempts`."""

    outcome: Outcome
    attempts: int


@dataclass(slots=True)
class Plan:
    """What one `write` does, in this order, so that the result is that of the outcomes in turn.

    1. delete the `failures` rows of `clear_failures` (stored, or stored earlier in the batch);
    2. delete the `items` rows of `clear_items` (not_found or invalid);
    3. upsert `items` with `stored`;
    4. upsert `failures` with `failures`, each only where the id has no `items` row,
       so that a transient `failed` never replaces stored data;
    5. move `fetched_at` of the `items` rows of `unchanged` (answered 304);
    6. upsert `listings` with `marks`, the last of each listing;
    7. upsert `listed` with the ids the marks list: (listing, id, listed at, stale before).
    """

    clear_failures: list[str]
    clear_items: list[str]
    stored: list[Outcome]
    failures: list[Failure]
    unchanged: list[Outcome] = field(default_factory=list)
    marks: list[ListingMark] = field(default_factory=list)
    listed: list[tuple[str, str, float, float]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Standing:
    """Where one id stands after some of a batch's outcomes, applied in turn."""

    outcome: Outcome
    attempts: int  # failures added to the row's count
    reset: bool  # the failures row goes first: the id was stored earlier in the batch
    drop: bool  # the items row goes first: not_found or invalid


def _then(previous: _Standing | None, outcome: Outcome) -> _Standing:
    if outcome.state == STORED:
        return _Standing(outcome, 0, reset=True, drop=False)
    if previous is None:
        return _Standing(outcome, 1, reset=False, drop=outcome.state != FAILED)
    if previous.outcome.state == STORED:
        if outcome.state == FAILED:
            return previous
        return _Standing(outcome, 1, reset=True, drop=True)
    drop = previous.drop or outcome.state != FAILED
    return _Standing(outcome, previous.attempts + 1, previous.reset, drop)


def plan_write(outcomes: Sequence[Record]) -> Plan:
    """Fold a batch into one operation per id, as if its outcomes were applied one after another."""
    standings: dict[str, _Standing] = {}
    unchanged: dict[str, Outcome] = {}
    marks: dict[str, ListingMark] = {}
    listed: list[tuple[str, str, float, float]] = []
    for outcome in outcomes:
        if isinstance(outcome, ListingMark):
            marks.pop(outcome.listing, None)
            marks[outcome.listing] = outcome
            at, stale = outcome.at, outcome.stale_before
            listed += [(outcome.listing, id_, at, stale) for id_ in outcome.listed]
            continue
        if outcome.state == UNCHANGED:
            unchanged[outcome.id] = outcome
            continue
        if outcome.state not in STATES:
            raise ValueError(f"outcome {outcome.id!r} has an unknown state: {outcome.state!r}")
        if outcome.state == STORED and outcome.data is None:
            raise ValueError(f"outcome {outcome.id!r} is stored but has no data")
        standings[outcome.id] = _then(standings.get(outcome.id), outcome)
    plan = Plan([], [], [], [])
    for id_, standing in standings.items():
        if standing.reset:
            plan.clear_failures.append(id_)
        if standing.drop:
            plan.clear_items.append(id_)
        if standing.outcome.state == STORED:
            plan.stored.append(standing.outcome)
        else:
            plan.failures.append(Failure(standing.outcome, standing.attempts))
    # An id fetched again in the same batch has its row written anyway.
    plan.unchanged = [o for id_, o in unchanged.items() if id_ not in standings]
    plan.marks = list(marks.values())
    plan.listed = listed
    return plan


def failure_row(failure: Failure) -> dict[str, object]:
    """The parameters of one failure upsert, named as in both stores' statements."""
    outcome = failure.outcome
    return {
        "id": outcome.id,
        "state": outcome.state,
        "reason": outcome.reason,
        "data": failure_payload(outcome.data),
        "url": outcome.url,
        "status": outcome.status,
        "fetched_at": outcome.fetched_at,
        "attempts": failure.attempts,
        "schema_digest": outcome.schema,
    }


def listed_row(listing: str, id_: str, listed_at: float, stale_before: float) -> dict[str, object]:
    """The parameters of one upsert of a listed id, named as in both stores' statements."""
    return {"listing": listing, "id": id_, "listed_at": listed_at, "stale_before": stale_before}


def failure_payload(data: str | None) -> str | None:
    """A failure's payload as JSON both databases accept: non-JSON text becomes a JSON string.

    An `invalid` payload may not be JSON at all; refusing it would fail the whole batch.
    """
    if data is None:
        return None
    try:
        parse_json(data)
    except ValueError:
        return json.dumps(data)
    # PostgreSQL's jsonb cannot hold U+0000, which the JSON text may spell as an escape.
    return json.dumps(data) if "\\u0000" in data else data
