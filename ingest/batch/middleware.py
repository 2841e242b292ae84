"""Batches no larger than the API takes: cut before they spend a token, probed one at a time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from scrapy.exceptions import IgnoreRequest, NotConfigured

from ingest.batch.spec import IDS
from ingest.job import Job
from ingest.run import Run
from ingest.stopping.waiting import Stopping, Waiter, crawl_is_stopping, give_back

if TYPE_CHECKING:
    from typing import Self

    from scrapy import Request
    from scrapy.crawler import Crawler
    from scrapy.http import Response
    from scrapy.statscollectors import StatsCollector

    from ingest.fetching.requests import IdRequests

POLL = 0.02  # seconds between looks at the probe, while a batch waits for its answer


class BatchCut(IgnoreRequest):
    """The batch went back to the queue as smaller ones."""


class BatchSizeMiddleware:
    """Before the rate limiter: a batch larger than the size the API takes now is cut
    into batches that size, queued in its place (no token spent on it); a batch larger
    than any answered so far waits while another such batch, the probe, is out.

    After the rate limiter, on the way back: each answer teaches the sizer (the spider
    splits a refused batch; a 429 never gets here, and its batch, requeued, probes again).
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
    def requests(self) -> IdRequests:
        """The run's requests for ids, with the sizer that knows the size the API takes."""
        run = Run.of(self.crawler)
        assert run is not None
        return run.requests

    async def process_request(self, request: Request) -> None:
        ids = request.meta.get(IDS)
        if ids is None:
            return
        sizer = self.requests.sizer
        key, since = tuple(ids), self.clock()
        try:
            while True:
                if len(ids) > sizer.size:
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

    def cut(self, request: Request, ids: list[str], size: int) -> None:
        assert self.crawler.engine is not None
        requests = self.requests
        assert requests.batching is not None
        for part in requests.batching.parts(ids, size):
            self.crawler.engine.crawl(requests.batch_request(part, like=request))
        self.stats.inc_value("batch/cut")
        raise BatchCut(f"{len(ids)} ids cut into batches of at most {size}")

    def process_response(self, request: Request, response: Response) -> Response:
        ids = request.meta.get(IDS)
        if ids is not None:
            self.requests.sizer.answered(tuple(ids), response.status)
        return response

    def process_exception(self, request: Request, exception: Exception) -> None:
        ids = request.meta.get(IDS)
        if ids is not None:
            self.requests.sizer.released(tuple(ids))
