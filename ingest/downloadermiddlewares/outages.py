"""Outages mid-crawl: while the API cannot be reached or the database is down, requests wait."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from scrapy.exceptions import CannotResolveHostError, DownloadConnectionRefusedError
from twisted.internet.error import ConnectError, DNSLookupError

from ingest import signals as ingest_signals
from ingest.backoff import exponential
from ingest.fetching.urls import origin
from ingest.progress.humanize import duration
from ingest.stopping.waiting import Stopping, Waiter, crawl_is_stopping, give_back

if TYPE_CHECKING:
    from typing import Self

    from scrapy import Request
    from scrapy.crawler import Crawler
    from scrapy.http import Response
    from scrapy.statscollectors import StatsCollector

logger = logging.getLogger(__name__)

# Failures to open a connection at all (refused, no route, name not found, connect
# timed out): nothing reached the API, so they say nothing about the id. Failures once
# connected (a reset, a timeout waiting for the answer) stay ordinary retries: they
# may be the id's own doing.
# Scrapy wraps some of Twisted's errors in its own; others come through as they are.
UNREACHABLE = (
    DownloadConnectionRefusedError,
    CannotResolveHostError,
    ConnectError,
    DNSLookupError,
)


# Probing costs no quota (nothing reaches the API), so it goes on more often than the
# database's retries: an API back up is noticed within this many seconds.
PROBE_EVERY = 10.0


@dataclass(slots=True)
class Outage:
    """One API's outage: since when, failed probes so far, when the next may go."""

    since: float
    failures: int = 1
    next_probe: float = 0.0
    probing: bool = False


class OutagesMiddleware:
    """Turns a network outage into a wait, not into thousands of ``failed`` ids; and
    holds every request while the database is down (the storage pipeline says when),
    so that no quota is spent on outcomes that could not be written.

    When a request cannot connect to the API, the API is taken to be down: that
    request goes back to the queue without spending one of its retries, and every
    request to the API waits. One request at a time probes, after 0.5 s, 1 s, 2 s …
    then every 10 s; the first answer of any kind ends the outage and the others go
    on, paced as before. A graceful stop gives the waiting requests back.
    """

    def __init__(
        self,
        crawler: Crawler,
        stats: StatsCollector,
        waiter: Waiter,
        *,
        clock: Callable[[], float] = time.monotonic,
        backoff: Callable[[int], float] | None = None,
    ) -> None:
        self.crawler, self.stats, self.waiter, self.clock = crawler, stats, waiter, clock
        self.backoff = backoff or partial(exponential, base=0.5, cap=PROBE_EVERY)
        self.outages: dict[str, Outage] = {}
        self.down_seconds = 0.0
        self.storage_down = False

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        assert crawler.stats is not None
        middleware = cls(crawler, crawler.stats, Waiter(lambda: crawl_is_stopping(crawler)))
        connect = crawler.signals.connect
        connect(middleware.storage_unavailable, signal=ingest_signals.storage_unavailable)
        connect(middleware.storage_available, signal=ingest_signals.storage_available)
        return middleware

    def storage_unavailable(self) -> None:
        self.storage_down = True

    def storage_available(self) -> None:
        self.storage_down = False

    async def process_request(self, request: Request) -> None:
        key = origin(request)
        try:
            while (wait := self._wait(key)) is not None:
                await self.waiter.sleep(wait)
        except Stopping:
            raise give_back(self.crawler, request) from None

    def _wait(self, key: str) -> float | None:
        """How long to wait before looking again; None: go (perhaps as the probe)."""
        if self.storage_down:
            return self.waiter.step
        outage = self.outages.get(key)
        if outage is None:
            return None
        now = self.clock()
        if outage.probing:
            return self.waiter.step
        if now >= outage.next_probe:
            outage.probing = True
            return None
        return min(self.waiter.step, outage.next_probe - now)

    def process_response(self, request: Request, response: Response) -> Response:
        outage = self.outages.pop(origin(request), None)
        if outage is not None:
            seconds = self.clock() - outage.since
            self.down_seconds += seconds
            self.stats.set_value("api/unreachable_seconds", round(self.down_seconds, 3))
            logger.info(
                "%s answers again after %s unreachable; requests go on",
                origin(request), duration(seconds),
            )  # fmt: skip
        return response

    def process_exception(self, request: Request, exception: Exception) -> Request | None:
        """A request that could not connect goes back to the queue, its retries unspent."""
        key, now = origin(request), self.clock()
        outage = self.outages.get(key)
        if not isinstance(exception, UNREACHABLE):
            if outage is not None:
                outage.probing = False  # whatever it was, another may probe now
            return None
        if outage is None:
            outage = self.outages[key] = Outage(since=now)
            self.stats.inc_value("api/outages")
            logger.warning(
                "%s cannot be reached (%s): requests wait, one tries again now and then, "
                "until it answers; no id is marked failed meanwhile",
                key, exception,
            )  # fmt: skip
        elif outage.probing:
            outage.failures += 1
        else:
            # Sent before the outage began: its failure tells nothing new.
            return request.replace(dont_filter=True)
        outage.probing = False
        outage.next_probe = now + self.backoff(outage.failures)
        self.stats.inc_value("api/unreachable")
        return request.replace(dont_filter=True)
