"""The storage contract: records, the Store protocol, DATABASE_URL parsing."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from ingest.masking import mask_url

STATES = ("stored", "not_found", "invalid", "failed")


class StorageError(Exception):
    """The database cannot be reached or refused a write; the message names the masked URL."""


@dataclass(frozen=True, slots=True)
class Record:
    """The outcome of fetching one id: what `Store.write` stores."""

    id: str
    state: str
    data: str | None = None
    reason: str | None = None
    url: str | None = None
    status: int | None = None
    fetched_at: float = 0.0


class Store(Protocol):
    """One database holding the `items` and `failures` tables; used from one thread."""

    url: str

    def connect(self, *, create: bool = True) -> None: ...

    def write(self, records: Sequence[Record]) -> None: ...

    def states(self, ids: Sequence[str]) -> dict[str, tuple[str, float]]: ...

    def counts(self) -> dict[str, int]: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Failure:
    """A failure row to upsert: the record, and how many failures it adds to `attempts`."""

    record: Record
    attempts: int


@dataclass(slots=True)
class Plan:
    """What one `write` does, in this order, so that the outcome is that of the records in turn.

    1. delete the `failures` rows of `clear_failures` (stored, or stored earlier in the batch);
    2. delete the `items` rows of `clear_items` (not_found or invalid);
    3. upsert `items` with `stored`;
    4. upsert `failures` with `failures`, each only where the id has no `items` row,
       so that a transient `failed` never replaces stored data.
    """

    clear_failures: list[str]
    clear_items: list[str]
    stored: list[Record]
    failures: list[Failure]


@dataclass(frozen=True, slots=True)
class _Outcome:
    """Where one id stands after some of a batch's records, applied in turn."""

    record: Record
    attempts: int  # failures added to the row's count
    reset: bool  # the failures row goes first: the id was stored earlier in the batch
    drop: bool  # the items row goes first: not_found or invalid


def _then(previous: _Outcome | None, record: Record) -> _Outcome:
    if record.state == "stored":
        return _Outcome(record, 0, reset=True, drop=False)
    if previous is None:
        return _Outcome(record, 1, reset=False, drop=record.state != "failed")
    if previous.record.state == "stored":
        if record.state == "failed":
            return previous
        return _Outcome(record, 1, reset=True, drop=True)
    drop = previous.drop or record.state != "failed"
    return _Outcome(record, previous.attempts + 1, previous.reset, drop)


def plan_write(records: Sequence[Record]) -> Plan:
    """Fold a batch into one operation per id, as if its records were applied one after another."""
    outcomes: dict[str, _Outcome] = {}
    for record in records:
        if record.state not in STATES:
            raise ValueError(f"record {record.id!r} has an unknown state: {record.state!r}")
        if record.state == "stored" and record.data is None:
            raise ValueError(f"record {record.id!r} is stored but has no data")
        outcomes[record.id] = _then(outcomes.get(record.id), record)
    plan = Plan([], [], [], [])
    for id_, outcome in outcomes.items():
        if outcome.reset:
            plan.clear_failures.append(id_)
        if outcome.drop:
            plan.clear_items.append(id_)
        if outcome.record.state == "stored":
            plan.stored.append(outcome.record)
        else:
            plan.failures.append(Failure(outcome.record, outcome.attempts))
    return plan


def failure_row(failure: Failure) -> dict[str, object]:
    """The parameters of one failure upsert, named as in both stores' statements."""
    record = failure.record
    return {
        "id": record.id,
        "state": record.state,
        "reason": record.reason,
        "data": failure_payload(record.data),
        "url": record.url,
        "status": record.status,
        "fetched_at": record.fetched_at,
        "attempts": failure.attempts,
    }


def failure_payload(data: str | None) -> str | None:
    """A failure's payload as JSON both databases accept: non-JSON text becomes a JSON string.

    An `invalid` payload may not be JSON at all; refusing it would fail the whole batch.
    """
    if data is None:
        return None
    try:
        json.loads(data, parse_constant=_reject_constant)
    except ValueError:
        return json.dumps(data)
    # PostgreSQL's jsonb cannot hold U+0000, which the JSON text may spell as an escape.
    return json.dumps(data) if "\\u0000" in data else data


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def open_store(url: str) -> Store:
    """The store for a DATABASE_URL; only parses it (`connect()` does the I/O)."""
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:
        scheme = ""
    if scheme == "sqlite":
        from ingest.stores.sqlite import SQLiteStore

        prefix = "sqlite:///"
        path = url[len(prefix) :].split("?", 1)[0] if url.lower().startswith(prefix) else ""
        if not path:
            raise ValueError(
                f"DATABASE_URL has no SQLite file path: {mask_url(url)!r} "
                "(use sqlite:///relative.db or sqlite:////absolute/path.db)"
            )
        return SQLiteStore(os.path.abspath(path), url=mask_url(url))
    if scheme in ("postgresql", "postgres"):
        from ingest.stores.postgres import PostgresStore

        return PostgresStore(url)
    raise ValueError(
        f"DATABASE_URL has an unknown scheme: {mask_url(url)!r} "
        "(use sqlite:///path or postgresql://…)"
    )
