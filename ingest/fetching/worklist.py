"""Which ids need a request: the database, not the queue, is the record of what is done."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from scrapy import signals

from ingest.fetching.ids import chunks
from ingest.items import FAILED
from ingest.progress.humanize import duration
from ingest.stopping.waiting import Stopping
from ingest.storage.ledger import Ledger

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

    from ingest.fetching.ids import IdSource
    from ingest.storage.base import StorageUnavailable

logger = logging.getLogger(__name__)
T = TypeVar("T")


async def as_taken(crawler: Crawler, source: AsyncIterator[T]) -> AsyncIterator[T]:
    """The entries of ``source``, each once the downloader can take more: the queue stays
    short. Ends quietly when the crawl stops while ``source`` waits for the database."""
    try:
        async for entry in source:
            engine = crawler.engine
            while engine is not None and engine.running and engine.needs_backout():
                await crawler.signals.wait_for(signals.scheduler_empty)
            yield entry
    except Stopping:
        return


class ReadOutage:
    """Tells, once each, when lookups of what is done begin and stop waiting for the database."""

    def outage_began(self, error: StorageUnavailable) -> None:
        logger.warning("Cannot read outcomes, retrying until the database is back: %s", error)

    def outage_ended(self, seconds: float) -> None:
        logger.info("Reading outcomes again after %s", duration(seconds))


class Worklist:
    """The ids of the job that still need a request, looked up a chunk at a time.

    Stored and not_found ids are done; failed ids are tried again; invalid ones, and
    every id, only with ``refresh``. A refresh fetches what was fetched before it
    began; with JOBDIR that moment survives a stop (``job_state``), so a resumed
    refresh does not fetch again what it already refreshed. Lookups wait out a
    database outage, as writes do.
    """

    def __init__(
        self,
        ids: IdSource,
        ledger: Ledger,
        count: Callable[..., object],
        *,
        refresh: bool = False,
        job_state: Callable[[], dict[str, Any] | None] = lambda: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ids, self.ledger, self.count = ids, ledger, count
        self.refresh, self.job_state = refresh, job_state
        self.started_at = clock()
        self._opened = False

    @property
    def refresh_since(self) -> float:
        state = self.job_state()
        if state is None:
            return self.started_at
        return float(state.setdefault("refresh_since", self.started_at))

    def needs_fetch(self, state: str | None, fetched_at: float = 0.0) -> bool:
        if state is None:
            return True
        if self.refresh:
            return fetched_at < self.refresh_since
        return state == FAILED

    def lost(self, state: str | None, fetched_at: float = 0.0) -> bool:
        """No outcome at all (or, with refresh, not refreshed yet): what a stop, a dead
        worker or an unwritten outcome leaves. Failed ids of this run are not lost."""
        return state is None or (self.refresh and fetched_at < self.refresh_since)

    async def states(self, ids: list[str]) -> dict[str, tuple[str, float]]:
        if not self._opened:
            await self.ledger.open()
            self._opened = True
        return await self.ledger.states(ids)

    async def state_of(self, id_: str) -> tuple[str | None, float]:
        return (await self.states([id_])).get(id_, (None, 0.0))

    async def todo(
        self, ids: Iterable[str] | None = None, *, lost_only: bool = False
    ) -> AsyncGenerator[tuple[str, str | None], None]:
        """(id, state) for the ids (of the job, by default) that need a request."""
        wanted = self.lost if lost_only else self.needs_fetch
        for chunk in chunks(self.ids if ids is None else ids):
            states = await self.states(chunk)
            for id_ in chunk:
                state, fetched_at = states.get(id_, (None, 0.0))
                if wanted(state, fetched_at):
                    yield id_, state
                elif not lost_only:
                    self.count("ids/skipped")

    async def groups(self, size: int) -> AsyncIterator[tuple[int, list[tuple[str, str | None]]]]:
        """The job's ids cut in groups of ``size`` by their place in it, each group
        numbered and holding only the ids that need a request (empty ones left out)."""
        for number, group in enumerate(chunks(self.ids, size)):
            todo = [pair async for pair in self.todo(group)]
            if todo:
                yield number, todo

    async def feed(self, crawler: Crawler) -> AsyncIterator[tuple[str, str | None]]:
        """The ids to request, as the downloader takes them: the queue stays short, and
        a million ids never become a million requests in memory."""
        async for id_, state in as_taken(crawler, self.todo()):
            self.count("ids/scheduled")
            yield id_, state

    async def feed_groups(
        self, crawler: Crawler, size: int
    ) -> AsyncIterator[tuple[int, list[tuple[str, str | None]]]]:
        """:meth:`groups`, as the downloader takes them (see :meth:`feed`)."""
        async for number, todo in as_taken(crawler, self.groups(size)):
            self.count("ids/scheduled", len(todo))
            yield number, todo

    async def close(self) -> None:
        if self._opened:
            await self.ledger.close()
