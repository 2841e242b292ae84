"""Batches no larger than the API takes: cut before they spend a token, probed one at a time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from scrapy.exceptions import IgnoreRequest, NotConfigured

from ingest.batch.spec import IDS
from ingest.job import Job
from ingest.ratelimit.feedback import RETRIES_META
from ingest.run import Run
from ingest.stopping.waiting import Stopping, Waiter, crawl_is_stopping, give_back

if TYPE_CHECKING:
    from typing import Self

    from scrapy import Request
    from scrapy.crawler import Crawler
    from scrapy.http import Response
    from scrapy.statscollectors import StatsCollector

    from ingest.batch.feed import Batches

POLL = 0.02  # seconds between looks at the probe, while a batch waits for its answer


class BatchCut(IgnoreRequest):
    """The batch's ids went back to the run's batches, to go in batches of another size."""


class BatchSizeMiddleware:
    """Before the rate limiter: a batch larger than the size the API takes now, or smaller
    once that size is settled (while the job's ids are still fed), gives its ids back to
    the run's :class:`~ingest.batch.feed.Batches`, which sends them in full batches (no
    token spent on it); a batch larger than any answered so far waits while another such
    batch, the probe, is out.

    After the rate limiter, on the way back: each answer teaches the sizer (the spider
    gives a refused batch's ids back; a 429 never gets here, and its batch, requeued,
    probes again).
    """

    def __init__(
        self,
        crawler: Crawler,
        stats: StatsCollector,
        waiter: Waiter,
        *,
        timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.crawler, self.stats, self.waiter = crawler, stats, waiter
        self.timeout, self.clock = timeout, clock

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        job = Job.of(crawler)
        if job.batching is None:
            raise NotConfigured("API_BATCH_SIZE is 1")
        assert crawler.stats is not None
        # A probe whose answer never comes through here (the crawl stopped while it
        # was requeued) is given up on after the longest a download may take.
        timeout = job.download_timeout + 5.0
        waiter = Waiter(lambda: crawl_is_stopping(crawler))
        return cls(crawler, crawler.stats, waiter, timeout=timeout)

    @property
    def batches(self) -> Batches:
        """The run's batches, with the sizer that knows the size the API takes."""
        run = Run.of(self.crawler)
        assert run is not None and run.batches is not None
        return run.batches

    async def process_request(self, request: Request) -> None:
        ids = request.meta.get(IDS)
        if ids is None:
            return
        sizer = self.batches.sizer
        key, since = tuple(ids), self.clock()
        try:
            while True:
                if len(ids) > sizer.size or (len(ids) < sizer.size and self.joins(request)):
                    self.cut(request, ids, sizer.size)
                if sizer.may_send(key):
                    return
                if self.clock() - since > self.timeout:
                    sizer.released(sizer.probe or ())
                    since = self.clock()
                    continue
                await self.waiter.sleep(POLL)
        except Stopping:
            raise give_back(self.crawler, request) from None

    def joins(self, request: Request) -> bool:
        """Whether a batch cut at a size since outgrown gives its ids to those waiting, to
        go in full batches: while the job's ids are fed, unless it is a retry (whose count
        a new request would lose)."""
        retried = request.meta.get("retry_times") or request.meta.get(RETRIES_META)
        return self.batches.feeding and not retried

    def cut(self, request: Request, ids: list[str], size: int) -> None:
        assert self.crawler.engine is not None
        for part in self.batches.give_back(ids, like=request):
            self.crawler.engine.crawl(part)
        self.stats.inc_value("batch/cut")
        raise BatchCut(f"{len(ids)} ids asked for again in batches of {size}")

    def process_response(self, request: Request, response: Response) -> Response:
        ids = request.meta.get(IDS)
        if ids is not None:
            self.batches.sizer.answered(tuple(ids), response.status)
        return response

    def process_exception(self, request: Request, exception: Exception) -> None:
        ids = request.meta.get(IDS)
        if ids is not None:
            self.batches.sizer.released(tuple(ids))
