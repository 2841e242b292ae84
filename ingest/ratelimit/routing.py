"""Which key a request goes on: the one that can send it soonest, each with its own bucket."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

from ingest.ratelimit.pacing.bucket import TokenBucket
from ingest.stopping.waiting import Stopping

if TYPE_CHECKING:
    from scrapy.statscollectors import StatsCollector

    from ingest.config.keys import Key
    from ingest.ratelimit.backends import Backend
    from ingest.ratelimit.feedback import Pauses
    from ingest.ratelimit.pacing.bucket import Reservation
    from ingest.stopping.waiting import Waiter

logger = logging.getLogger(__name__)

# When an allowance is spent, the crawl stops once the last slot booked within it went (a
# stop lets that request finish), looked at up to LAST_SENT_CHECKS times, then LAST_SENT
# seconds later: by then it has left the middlewares that follow.
LAST_SENT_CHECKS, LAST_SENT = 100, 0.1


@dataclass(frozen=True, slots=True)
class Route:
    """A request's slot: the bucket it was booked in, the key's fingerprint (None without
    a key) and when it goes."""

    bucket: str
    fingerprint: str | None
    at: float


def soonest(slots: Mapping[str, tuple[float, float]]) -> str | None:
    """The key whose slot (the first of each pair) comes first; of several at the same
    time, the one idle longest (the second: when its bucket was next ready), then the
    first listed. So keys that all could send share the work, even when something else
    (a shared rate) sets the pace."""
    return min(slots, key=slots.__getitem__, default=None)


def key_stats(fingerprint: str) -> str:
    """The prefix of one key's stats."""
    return f"ratelimit/key/{fingerprint}"


class Router:
    """Books each request's slot in the bucket of the key that can send it soonest.

    With one key (or none) the API has one bucket, named by its origin. With several,
    each key has its own, ``<origin>#<fingerprint>``, with its own pace, pauses and
    adopted quotas; a key the API refused is retired in its bucket's state, so that
    every worker sharing the buckets leaves it. ``shared``: a bucket that every request
    passes through as well, whatever its key (RATELIMIT_SHARED_RATE).
    """

    def __init__(
        self,
        keys: Sequence[Key],
        backend: Backend,
        *,
        pauses: Pauses,
        waiter: Waiter,
        stats: StatsCollector,
        on_all_rejected: Callable[[str], None],
        shared: Backend | None = None,
    ) -> None:
        self.keys = tuple(keys)
        self.keyed = len(self.keys) > 1
        self.by_fingerprint = {key.fingerprint: key for key in self.keys}
        self.backend, self.shared = backend, shared
        self.pauses, self.waiter, self.stats = pauses, waiter, stats
        self.on_all_rejected = on_all_rejected
        self.rejected: set[str] = set()
        self.started: float | None = None  # on the buckets' clock: older retirements are stale
        self._turn = asyncio.Lock()
        self._retiring: set[asyncio.Future[None]] = set()

    def bucket(self, api: str, fingerprint: str | None) -> str:
        return f"{api}#{fingerprint}" if self.keyed and fingerprint is not None else api

    async def send_slot(self, api: str) -> Route:
        """Wait for a slot on the key that can send soonest; returns it as the request goes.
        Raises :class:`Stopping` when the crawl stops meanwhile, or should: a pause the
        server imposed, or an allowance of RATELIMIT_RATE spent, for longer than
        RATELIMIT_MAX_PAUSE."""
        while True:
            fingerprint, slot, shared = await self._book(api)
            bucket = self.bucket(api, fingerprint)
            if slot.held:
                await self._allowance_spent(api, bucket, slot)
            imposed = max(slot.imposed, shared.imposed if shared else 0.0)
            why = "every key is paused" if self.keyed else "the shared bucket is paused"
            if self.pauses.too_long(bucket, imposed, why):
                # Paused by an answer another worker got, or a quota spent for longer
                # than anyone should wait: the crawl is stopping.
                raise Stopping(imposed)
            if slot.delay > 0:
                await self.waiter.sleep(slot.delay, precise=slot.precise)
            if (
                shared is not None
                and await self._confirm(self.shared, f"{api}#shared", shared) is None
            ):
                continue
            at = await self._confirm(self.backend, bucket, slot)
            if at is None or (fingerprint is not None and fingerprint in self.rejected):
                continue  # a pause, a new quota or a refused key came meanwhile: book again
            if self.keyed and fingerprint is not None:
                self.stats.inc_value(f"{key_stats(fingerprint)}/requests")
            return Route(bucket, fingerprint, at)

    async def _allowance_spent(self, api: str, bucket: str, slot: Reservation) -> NoReturn:
        """The allowance of a long rate is spent until further than RATELIMIT_MAX_PAUSE: the
        slots booked within it go first, then the crawl stops, saying when it may go on."""
        began = self.pauses.clock()
        buckets = (
            [self.bucket(api, key.fingerprint) for key in self.keys] if self.keyed else [bucket]
        )
        for _ in range(LAST_SENT_CHECKS):
            ahead = max([await self.backend.run(b, TokenBucket.last_booked) for b in buckets])
            if ahead <= 0:
                break
            await self.waiter.sleep(ahead)
        await self.waiter.sleep(LAST_SENT)
        held = slot.held - (self.pauses.clock() - began)
        self.pauses.spent(bucket, held, str(slot.held_by))
        raise Stopping(held)

    async def _confirm(
        self, backend: Backend | None, bucket: str, slot: Reservation
    ) -> float | None:
        assert backend is not None
        confirmed = await backend.run(bucket, TokenBucket.confirm, slot)
        while confirmed.wait:
            await self.waiter.sleep(confirmed.wait, precise=slot.precise)
            confirmed = await backend.run(bucket, TokenBucket.confirm, slot)
        return None if confirmed.wait is None else confirmed.at

    async def _book(self, api: str) -> tuple[str | None, Reservation, Reservation | None]:
        longest = self.pauses.max_pause
        if not self.keyed and self.shared is None:
            fingerprint = self.keys[0].fingerprint if self.keys else None
            slot = await self.backend.run(api, TokenBucket.reserve, -math.inf, longest)
            return fingerprint, slot, None
        # One booking at a time in this worker: two requests looking at the same slots
        # would both pick the same key.
        async with self._turn:
            shared, not_before = None, -math.inf
            if self.shared is not None:
                shared = await self.shared.run(f"{api}#shared", TokenBucket.reserve)
                not_before = shared.at
            fingerprint = await self._choose(api, not_before)
            bucket = self.bucket(api, fingerprint)
            slot = await self.backend.run(bucket, TokenBucket.reserve, not_before, longest)
        return fingerprint, slot, shared

    async def _choose(self, api: str, not_before: float) -> str | None:
        if not self.keyed:
            return self.keys[0].fingerprint if self.keys else None
        slots = {}
        for key in self.keys:
            if key.fingerprint in self.rejected:
                continue
            peek = await self.backend.run(
                self.bucket(api, key.fingerprint), TokenBucket.peek, not_before
            )
            if self.started is None:
                self.started = peek.now
            if peek.retired_at >= self.started:
                self._retired(key, "rejected by the API, as another worker found: not used")
                continue
            slots[key.fingerprint] = (peek.at, peek.ready)
        chosen = soonest(slots)
        if chosen is None:
            self.on_all_rejected(api)
            raise Stopping(0.0)
        return chosen

    def reject(self, api: str, fingerprint: str) -> None:
        """The API refused this key: no request goes on it again, in any worker."""
        key = self.by_fingerprint.get(fingerprint)
        if not self.keyed or key is None or fingerprint in self.rejected:
            return
        self._retired(key)
        retiring = asyncio.ensure_future(
            self.backend.run(self.bucket(api, fingerprint), TokenBucket.retire)
        )
        self._retiring.add(retiring)
        retiring.add_done_callback(self._retiring.discard)

    def _retired(self, key: Key, warning: str | None = None) -> None:
        self.rejected.add(key.fingerprint)
        self.stats.set_value(f"{key_stats(key.fingerprint)}/rejected", 1)
        if warning:
            logger.warning("%s %s", key, warning)

    async def close(self) -> None:
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
