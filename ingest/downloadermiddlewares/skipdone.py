"""Requests restored from an earlier run's queue: sent only if their id is still not done."""

from __future__ import annotations

from typing import TYPE_CHECKING

from scrapy.exceptions import IgnoreRequest

if TYPE_CHECKING:
    from typing import Self

    from scrapy import Request
    from scrapy.crawler import Crawler
    from scrapy.statscollectors import StatsCollector


class AlreadyDone(IgnoreRequest):
    """The id has an outcome already; fetching it again would waste quota."""


class SkipDoneMiddleware:
    """Checks the database before sending a request that this run did not create.

    After a forced stop, JOBDIR's queue may still hold requests whose ids were stored
    before the process died. Requests made by this run were checked when they were
    made; the others are checked here, one indexed lookup each (which waits out a
    database outage, as every lookup does).
    """

    def __init__(self, crawler: Crawler, stats: StatsCollector) -> None:
        self.crawler, self.stats = crawler, stats

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        assert crawler.stats is not None
        return cls(crawler, crawler.stats)

    async def process_request(self, request: Request) -> None:
        spider = self.crawler.spider
        id_ = request.meta.get("id")
        run = getattr(spider, "run", None)
        if id_ is None or run is None or request.meta.get("run") == run:
            return
        worklist = spider.worklist  # type: ignore[union-attr]
        state, fetched_at = await worklist.state_of(id_)
        if not worklist.needs_fetch(state, fetched_at):
            self.stats.inc_value("ids/skipped_queued")
            raise AlreadyDone(f"id {id_} is {state} already")
        request.meta["run"] = run
