"""The items: their deterministic payloads, and the changes that move their `updated_at`."""

from __future__ import annotations

import bisect
import functools
import hashlib
import json
import math
import random
import zlib
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SECOND = 1_000_000
# Unchanged items were last updated at some second of 2024, fixed by their id.
BASE = 1_704_067_200 * SECOND
YEAR = 31_536_000
# (updated_at in microseconds since the epoch, id as a number): the listing order.
Key = tuple[int, int]


def base_updated_at(item_id: str) -> int:
    return BASE + zlib.crc32(item_id.encode()) % YEAR * SECOND


def format_timestamp(micros: int) -> str:
    """ISO 8601 in UTC: whole seconds, or milliseconds for a change made while running."""
    seconds, fraction = divmod(micros, SECOND)
    text = (EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{fraction // 1000:03d}Z" if fraction else f"{text}Z"


def parse_timestamp(text: str) -> int:
    """ISO 8601 (UTC unless an offset says otherwise) → microseconds since the epoch."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(
            f"updated_since must be an ISO 8601 time like 2024-05-01T00:00:00Z, got {text!r}"
        ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // timedelta(microseconds=1)


@functools.lru_cache(maxsize=65536)
def item_payload(
    item_id: str, size: int, valid: bool = True, updated_at: int | None = None, version: int = 1
) -> bytes:
    """A deterministic item of about `size` bytes; an invalid one breaks the bundled schema."""
    digest = zlib.crc32(item_id.encode())
    item: dict[str, Any] = {
        "id": int(item_id) if item_id.isascii() and item_id.isdecimal() else item_id,
        "name": f"Item {item_id}",
        "price": digest % 100_000 / 100,
        "currency": "EUR",
        "tags": ["red", "green", "blue", "large"][digest % 3 : digest % 3 + 2],
        "updated_at": format_timestamp(
            base_updated_at(item_id) if updated_at is None else updated_at
        ),
        "version": version,
        "description": "",
    }
    if not valid:
        del item["name"]
        item["price"] = "free"
    padding = max(0, size - len(json.dumps(item, separators=(",", ":"))))
    item["description"] = ("A thing of some use. " * (padding // 21 + 1))[:padding]
    return json.dumps(item, separators=(",", ":")).encode()


def entity_tag(payload: bytes) -> str:
    return '"' + hashlib.blake2b(payload, digest_size=8).hexdigest() + '"'


class Catalog:
    """Items 1..`size` for listings, and every item's changes: by request, or `rate` a second.

    Changes at a rate are made lazily, each at the time it was due, whenever the catalogue
    is consulted: the same seed and clock give the same changes, with no task running.
    """

    def __init__(
        self,
        size: int,
        rate: float = 0.0,
        seed: int = 0,
        start: float = 0.0,
        listed: Callable[[str], bool] = lambda item_id: True,
    ) -> None:
        self.size, self.rate, self.seed, self.listed = size, rate, seed, listed
        self.reset(start)

    def reset(self, start: float) -> None:
        """Undo every change; changes at the rate start again from `start`."""
        self.changes: dict[str, tuple[int, int]] = {}
        self.start, self.made = start, 0
        self.random = random.Random(self.seed)
        self._order: list[Key] | None = None

    def state(self, item_id: str) -> tuple[int, int]:
        """(updated_at in microseconds, version)."""
        return self.changes.get(item_id) or (base_updated_at(item_id), 1)

    def key(self, item_id: str) -> Key:
        return self.state(item_id)[0], int(item_id)

    def payload(self, item_id: str, size: int, valid: bool = True) -> bytes:
        return item_payload(item_id, size, valid, *self.state(item_id))

    def advance(self, now: float) -> None:
        """Make the changes at the rate that are due by `now`."""
        if self.rate <= 0 or self.size == 0:
            return
        due = math.floor((now - self.start) * self.rate + 1e-9)
        while self.made < due:
            self.made += 1
            self._change(str(self.random.randint(1, self.size)), self.start + self.made / self.rate)

    def change(self, ids: Iterable[str], now: float) -> None:
        """Change these items now: a later `updated_at`, the next version."""
        self.advance(now)
        for item_id in ids:
            self._change(item_id, now)

    def _change(self, item_id: str, when: float) -> None:
        # Milliseconds: what the payload shows is exactly what listings compare.
        self.changes[item_id] = (math.floor(when * 1000) * 1000, self.state(item_id)[1] + 1)
        if item_id.isascii() and item_id.isdecimal() and 1 <= int(item_id) <= self.size:
            self._order = None

    def listing(self, since: int | None = None, after: Key | None = None) -> list[str]:
        """Listed ids in ascending (updated_at, id) order: updated after `since`, after `after`."""
        if self._order is None:
            numbers = range(1, self.size + 1)
            self._order = sorted(self.key(str(n)) for n in numbers if self.listed(str(n)))
        start = 0
        if since is not None:
            start = bisect.bisect_right(self._order, (since, self.size + 1))
        if after is not None:
            start = max(start, bisect.bisect_right(self._order, after))
        return [str(number) for _, number in self._order[start:]]

    def changed(self) -> dict[str, dict[str, Any]]:
        """Every changed item's `updated_at` and version."""
        return {
            item_id: {"updated_at": format_timestamp(updated_at), "version": version}
            for item_id, (updated_at, version) in self.changes.items()
        }
