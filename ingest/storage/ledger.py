"""The ledger: a store driven from a thread of its own, every call retried through outages."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from scrapy.utils.asyncio import sleep as scrapy_sleep

from ingest.backoff import exponential
from ingest.items import ListingMark
from ingest.storage import open_store
from ingest.storage.base import Kept, KeptQuota, Listed, Record, StorageUnavailable, Store

T = TypeVar("T")

logger = logging.getLogger(__name__)

OUTAGE_BACKOFF_BASE = 0.5  # seconds before the first retry of a call the database did not take
OUTAGE_BACKOFF_MAX = 30.0


def outage_backoff(
    attempt: int, *, base: float = OUTAGE_BACKOFF_BASE, cap: float = OUTAGE_BACKOFF_MAX
) -> float:
    """Seconds before retry ``attempt`` (1, 2, …) of a call the database did not take."""
    return exponential(attempt, base=base, cap=cap)


class OutageListener(Protocol):
    """What a `Ledger` tells of a database outage: its beginning and its end, once each,
    whichever call noticed them."""

    def outage_began(self, error: StorageUnavailable) -> None:
        """A call failed for want of the database; calls are retried until it is back."""

    def outage_ended(self, seconds: float) -> None:
        """A call went through again, ``seconds`` after the outage began."""


class Ledger:
    """A store whose blocking calls run one at a time in a thread of their own.

    The reactor only awaits: a slow disk or a distant database never stalls it.

    A call (`write`, `states`, `counts`) that fails with `StorageUnavailable` is tried
    again at once on a new connection (a restart of the database leaves the old one
    broken, the database back); if that fails too, the database is down: the call is
    retried, reconnecting first, after ``backoff(attempt)`` seconds, until it goes
    through. An outage loses nothing and fails nothing. ``sleep`` raising
    :class:`~ingest.stopping.waiting.Stopping` ends the retries; the Stopping propagates.
    Any other error is the caller's at once.
    """

    def __init__(
        self,
        store: Store,
        *,
        sleep: Callable[[float], Awaitable[None]] = scrapy_sleep,
        clock: Callable[[], float] = time.monotonic,
        backoff: Callable[[int], float] = outage_backoff,
        listener: OutageListener | None = None,
    ) -> None:
        self.store, self.listener = store, listener
        self.sleep, self.clock, self.backoff = sleep, clock, backoff
        self._down_since: float | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-db")

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Ledger:
        """The ledger of a DATABASE_URL; ``options`` as for the constructor. No I/O."""
        return cls(open_store(url), **options)

    @property
    def url(self) -> str:
        """The database's URL, masked."""
        return self.store.url

    async def open(self) -> None:
        """Connect, creating the tables. Not retried: a database that cannot be used
        when the work begins is said at once. (A call connects by itself if need be.)"""
        await self._run(self.store.connect)

    async def write(self, outcomes: Sequence[Record]) -> None:
        await self._retried(self.store.write, outcomes)

    async def states(self, ids: Sequence[str]) -> dict[str, tuple[str, float]]:
        return await self._retried(self.store.states, ids)

    async def validators(self, ids: Sequence[str]) -> dict[str, tuple[str | None, str | None]]:
        return await self._retried(self.store.validators, ids)

    async def listing(self, key: str) -> ListingMark | None:
        return await self._retried(self.store.listing, key)

    async def listed(self, key: str, after: int, limit: int) -> list[Listed]:
        return await self._retried(self.store.listed, key, after, limit)

    async def counts(self) -> dict[str, int]:
        return await self._retried(self.store.counts)

    async def keep_quota(self, quota: KeptQuota) -> None:
        await self._retried(self.store.keep_quota, quota)

    async def kept_quotas(self, api: str) -> list[KeptQuota]:
        return await self._retried(self.store.kept_quotas, api)

    async def kept_invalid(self, schema: str, after: str, limit: int) -> list[Kept]:
        return await self._retried(self.store.kept_invalid, schema, after, limit)

    async def checked(self, schema: str, reasons: Sequence[tuple[str, str]]) -> None:
        await self._retried(self.store.checked, schema, reasons)

    async def close(self) -> None:
        try:
            await self._run(self.store.close)
        finally:
            self._executor.shutdown(wait=False)

    async def _retried(self, call: Callable[..., T], *args: Any) -> T:
        attempt, fresh = 0, False
        while True:
            try:
                result = await self._run(self._attempt, attempt > 0 or fresh, call, *args)
            except StorageUnavailable as exc:
                if not fresh and attempt == 0 and self._down_since is None:
                    fresh = True  # the connection may be all that broke
                    continue
                attempt += 1
                self._failed(exc)
                delay = self.backoff(attempt)
                logger.debug(
                    "%s: attempt %d failed, next in %.1fs: %s", call.__name__, attempt, delay, exc
                )
                await self.sleep(delay)
            else:
                self._answered()
                return result

    def _attempt(self, reconnect: bool, call: Callable[..., T], *args: Any) -> T:
        """One try, in the database's thread: connect (afresh after a failure), then call."""
        if reconnect:
            # The old connection may look open yet be broken (a half-closed socket).
            self.store.close()
        self.store.connect()
        return call(*args)

    def _failed(self, error: StorageUnavailable) -> None:
        if self._down_since is not None:
            return
        self._down_since = self.clock()
        if self.listener is not None:
            self.listener.outage_began(error)

    def _answered(self) -> None:
        """The database answered: an outage, if there was one, is over."""
        if self._down_since is None:
            return
        seconds = self.clock() - self._down_since
        self._down_since = None
        if self.listener is not None:
            self.listener.outage_ended(seconds)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
