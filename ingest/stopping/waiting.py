"""Waiting that a graceful stop can cut short, and giving waiting requests back."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from scrapy.exceptions import IgnoreRequest
from scrapy.utils.asyncio import sleep as scrapy_sleep

from ingest.stopping.endings import ENDING

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.crawler import Crawler


class Stopping(Exception):
    """The crawl began to stop while a request was waiting."""


class RequestReturned(IgnoreRequest):
    """The request went back to the scheduler (and to JOBDIR) instead of being sent."""


def crawl_is_stopping(crawler: Crawler) -> bool:
    """True once a graceful stop (Ctrl-C, scrapyd cancel, CloseSpider) has begun."""
    engine = crawler.engine
    if engine is None or not crawler.crawling or not engine.running or crawler in ENDING:
        return True
    # A close started by Scrapy's CloseSpider extension (CLOSESPIDER_* settings) shows
    # only on the engine's slot: there is no public flag or signal for it until every
    # request in progress has finished, which those waiting here would hold up.
    slot = getattr(engine, "_slot", None)
    return slot is None or slot.closing is not None


class Waiter:
    """Sleeps in short steps, giving up as soon as the crawl is stopping.

    A graceful stop waits for every request in progress, including those asleep in a
    middleware; checking every ``step`` seconds bounds how long a stop can take.
    """

    def __init__(
        self,
        is_stopping: Callable[[], bool],
        *,
        step: float = 0.25,
        spin: float = 0.001,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = scrapy_sleep,
    ) -> None:
        self.is_stopping, self.step, self.spin = is_stopping, step, spin
        self.clock, self._sleep = clock, sleep

    async def sleep(self, seconds: float, *, precise: bool = False) -> None:
        """Sleep ``seconds``; raise :class:`Stopping` (with the time left) if the crawl stops.

        The event loop's timers wake up to a millisecond late (epoll rounds up). A
        ``precise`` sleep waits its last ``spin`` seconds by yielding to the loop
        instead: the wake-up is then on time to a few tens of microseconds, for the
        CPU of those spins.
        """
        deadline = self.clock() + seconds
        spin = self.spin if precise else 0.0
        while True:
            left = deadline - self.clock()
            if self.is_stopping():
                raise Stopping(max(0.0, left))
            if left <= 0:
                return
            if left > spin:
                await self._sleep(min(left - spin, self.step))
                continue
            while self.clock() < deadline:  # less than a millisecond: no stop check
                await self._sleep(0)
            return


def give_back(crawler: Crawler, request: Request, **meta: object) -> RequestReturned:
    """Put ``request`` back in the scheduler, to be sent by this run or the next."""
    assert crawler.engine is not None
    returned = request.replace(dont_filter=True)
    returned.meta.update(meta)
    crawler.engine.crawl(returned)
    if crawler.stats:
        crawler.stats.inc_value("scheduler/returned")
    return RequestReturned(f"returned to the scheduler: {request.url}")
