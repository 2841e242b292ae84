"""Requests restored from an earlier run's queue: sent only if their id is still not done."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from scrapy import signals
from scrapy.exceptions import IgnoreRequest

from ingest.ledger import Ledger

if TYPE_CHECKING:
    from typing import Self

    from scrapy import Request, Spider
    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)


class AlreadyDone(IgnoreRequest):
    """The id has an outcome already; fetching it again would waste quota."""


class SkipDoneMiddleware:
    """Checks the database before sending a request that this run did not create.

    After a forced stop, JOBDIR's queue may still hold requests whose ids were
    stored before the process died. Requests made by this run were checked when
    they were made; the others are checked here, one indexed lookup each.
    """

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.ledger: Ledger | None = None

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        middleware = cls(crawler)
        crawler.signals.connect(middleware.spider_closed, signal=signals.spider_closed)
        return middleware

    @property
    def spider(self) -> Any:
        return self.crawler.spider

    async def process_request(self, request: Request) -> None:
        spider = self.spider
        id_ = request.meta.get("id")
        if id_ is None or request.meta.get("run") == getattr(spider, "run", None):
            return
        if self.ledger is None:
            self.ledger = Ledger.from_url(spider.database_url)
            await self.ledger.open()
        # Through an outage, the spider's lookup waits for the database to be back.
        state, fetched_at = (await spider.states_of(self.ledger, [id_])).get(id_, (None, 0.0))
        if not spider.needs_fetch(state, fetched_at):
            assert self.crawler.stats is not None
            self.crawler.stats.inc_value("ids/skipped_queued")
            raise AlreadyDone(f"id {id_} is {state} already")
        request.meta["run"] = spider.run

    async def spider_closed(self, spider: Spider) -> None:
        if self.ledger is not None:
            await self.ledger.close()
