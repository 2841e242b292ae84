"""When the queue runs dry: look for ids still without an outcome, and fetch them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from typing import TYPE_CHECKING

from scrapy import signals
from scrapy.exceptions import DontCloseSpider, NotConfigured

from ingest.fetching.ids import CHUNK
from ingest.job import Job
from ingest.run import Run

if TYPE_CHECKING:
    from typing import Self

    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)

MAX_PASSES = 3  # looks for ids left without an outcome, per run


async def queue_lost(
    crawler: Crawler, run: Run, room: Callable[[], Awaitable[bool]] | None = None
) -> int:
    """Queue again every id of the job that has no outcome; returns how many. ``room``,
    awaited before each chunk is queued, may wait for the queue to shorten; should it
    answer False (the look's turn is over), the look stops there."""
    assert crawler.stats is not None and run.worklist is not None
    scheduled, lost = 0, []
    async with aclosing(run.worklist.todo(lost_only=True)) as todo:
        async for id_, _ in todo:
            lost.append(id_)
            if len(lost) == CHUNK:
                if room is not None and not await room():
                    lost = []
                    break
                scheduled += queue(crawler, run, lost)
                lost = []
    if lost and (room is None or await room()):
        scheduled += queue(crawler, run, lost)
    if scheduled:
        crawler.stats.inc_value("ids/recovered", scheduled)
        logger.info("Fetching %d ids that have no outcome yet", scheduled)
    return scheduled


def queue(crawler: Crawler, run: Run, ids: list[str]) -> int:
    assert crawler.engine is not None
    for request in run.requests.requests_for(ids):
        crawler.engine.crawl(request)
    return len(ids)


class IdleLook:
    """Keeps the spider open while a look for lost ids runs at idle, and closes it as
    soon as a look ends the job (rather than at the engine's next idle check). A look
    that failed is told and made again: it never ends the crawl."""

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self._look: asyncio.Future[int] | None = None
        crawler.signals.connect(self.spider_idle, signal=signals.spider_idle)

    async def look(self) -> int:
        """Look for lost ids; returns how many were queued again."""
        raise NotImplementedError

    def finished(self, scheduled: int | None) -> bool:
        """Whether the job is done, after a look that queued ``scheduled`` ids."""
        raise NotImplementedError

    @property
    def run(self) -> Run:
        run = Run.of(self.crawler)
        assert run is not None
        return run

    def spider_idle(self) -> None:
        run = Run.of(self.crawler)
        if run is None or run.worklist is None:
            return  # a spider that fetches no ids
        if self._look is not None and not self._look.done():
            raise DontCloseSpider
        if self._look is not None:
            look, self._look = self._look, None
            if (error := look.exception()) is not None:
                # Never a reason to end the crawl: the next idle looks again.
                logger.error("The look for ids without an outcome failed", exc_info=error)
            elif self.finished(look.result()):
                return
        self._look = asyncio.ensure_future(self._then_close())
        raise DontCloseSpider

    async def _then_close(self) -> int:
        scheduled = await self.look()
        engine = self.crawler.engine
        if self.finished(scheduled) and engine is not None and engine.spider_is_idle():
            await engine.close_spider_async(reason="finished")
        return scheduled


class Reconcile(IdleLook):
    """Each time the queue runs dry, look in the database for ids of the job that still
    have no outcome (lost with a forced stop, or a write that never happened) and fetch
    them; the job is done when a look finds none, or after ``MAX_PASSES`` looks.

    This is what makes a rerun complete whatever stopped the last one. With
    ``DISTRIBUTED``, :class:`ingest.distributed.worker.Worker` does this for all workers.
    """

    def __init__(self, crawler: Crawler, max_passes: int = MAX_PASSES) -> None:
        super().__init__(crawler)
        self.max_passes, self.passes = max_passes, 0

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        if Job.of(crawler).distributed:
            raise NotConfigured("DISTRIBUTED: the workers reconcile together")
        return cls(crawler)

    async def look(self) -> int:
        self.passes += 1
        return await queue_lost(self.crawler, self.run)

    def finished(self, scheduled: int | None) -> bool:
        return scheduled == 0 or self.passes >= self.max_passes
