"""The ``list`` spider: a listing walked page by page, each page stored with its position
(with details, its ids, each then fetched by ``API_URL``)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from scrapy import signals
from scrapy.exceptions import IgnoreRequest
from scrapy.http import JsonRequest

from ingest.config.values import check_path, parse_flag
from ingest.fetching.answers import failure_reason
from ingest.fetching.requests import RUN
from ingest.fetching.worklist import ReadOutage
from ingest.listing.details import DetailsFeed, ListedIds
from ingest.listing.pages import Listing, PagesOut, Stop
from ingest.listing.pagination import check_listing_url, parse_pagination, parse_since
from ingest.listing.walk import PAGE
from ingest.spiders.fetching import IdFetching
from ingest.stopping.endings import end_crawl
from ingest.stopping.waiting import RequestReturned, Stopping, Waiter, crawl_is_stopping
from ingest.storage.ledger import Ledger

if TYPE_CHECKING:
    from typing import Self

    from scrapy.crawler import Crawler
    from scrapy.http import Response
    from twisted.python.failure import Failure

    from ingest.distributed.listing import SharedListing
    from ingest.items import Page

logger = logging.getLogger(__name__)

# Listing pages go before the details queued meanwhile: the next page is never held back
# by the ids of the pages before it.
PAGE_PRIORITY = 100


class ListSpider(IdFetching):
    """Walks the listing at ``-a url=…`` (``-a pagination=…``, see
    :mod:`ingest.listing.pagination`) and yields each page's items as a :class:`Page`: their
    outcomes, and the listing's position after them, which storage commits in the same
    transaction (:class:`~ingest.listing.pages.Listing`). The database says where a listing
    stands: the same command resumes it at the page after the last one committed; a
    finished listing is listed again only with ``-a refresh=1``, or, with
    ``-a since=FIELD:PARAM``, for what changed since the highest FIELD stored.

    With ``-a details=1`` a page's items are only its ids, committed with the position
    (:mod:`ingest.listing.details`), then each fetched by ``API_URL`` as the ``api`` spider
    does (:class:`~ingest.spiders.fetching.IdFetching`).
    """

    name = "list"
    custom_settings = {"HTTPERROR_ALLOW_ALL": True}

    listing: Listing
    ledger: Ledger
    pages: PagesOut
    details: DetailsFeed | None = None
    shared: SharedListing | None = None  # DISTRIBUTED: the listing walked by one worker at a time

    def __init__(
        self,
        *,
        url: str | None = None,
        pagination: str | None = None,
        items: str | None = None,
        since: str | None = None,
        refresh: str | None = None,
        details: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.url = check_listing_url(url)
        self.pagination = parse_pagination(pagination)
        self.items_arg = items
        self.since = parse_since(since)
        self.refresh = parse_flag("refresh", refresh)
        self.with_details = parse_flag("details", details)

    @classmethod
    def from_crawler(cls, crawler: Crawler, *args: Any, **kwargs: Any) -> Self:
        spider = super().from_crawler(crawler, *args, **kwargs)
        job = spider.job
        given = check_path("items", spider.items_arg)
        spider.listing = Listing(
            spider.url,
            spider.pagination,
            items_path=given if spider.items_arg is not None else job.items_path,
            items_arg=spider.items_arg,
            id_field=job.item_id,
            since=spider.since,
            refresh=spider.refresh,
            details=spider.with_details,
        )
        spider.ledger = Ledger.from_url(
            job.storing.database_url,
            sleep=Waiter(lambda: crawl_is_stopping(crawler)).sleep,
            listener=ReadOutage(),
        )
        crawler.signals.connect(spider.ledger.close, signal=signals.spider_closed)
        spider.pages = PagesOut.of_crawl(crawler)
        run = spider.run
        run.refresh, run.earlier_requests = spider.refresh, False
        if spider.with_details:

            def count(stat: str, by: int = 1) -> None:
                # Through the crawler: its stats exist once the crawl starts, not yet here.
                crawler.stats.inc_value(stat, by)

            relisting = spider.refresh or spider.since is not None
            listed = ListedIds(spider.listing.key, spider.ledger, count, relisting=relisting)
            requests_for = run.requests.requests_for
            spider.details = DetailsFeed.of_crawl(crawler, listed, requests_for, spider.pages)
            run.worklist = listed
        if job.distributed:
            from ingest.distributed.listing import SharedListing

            spider.shared = SharedListing.from_crawler(run, job, spider.listing.key)
            # The shared queue holds the job's requests: other workers' go (each checked).
            run.coordinator, run.earlier_requests = spider.shared.coordinator, True
        return spider

    async def start(self) -> AsyncIterator[Any]:
        details = self.details
        if self.shared is not None:
            async for request in self.shared.requests(self.walk, details, self.pages):
                yield request
        else:
            async for request in self.walk():
                yield request
            if details is not None:
                async for request in details.requests(self.crawler):
                    yield request
        if (
            details is not None
            and self.listing.begun
            and self.listing.walk is None
            and not crawl_is_stopping(self.crawler)
        ):
            self.listing.finished_before(self.crawler.stats, details.fed)

    async def walk(self) -> AsyncIterator[JsonRequest]:
        """The first pages of the pass due, from where the database says the listing stands
        (the others come from their answers)."""
        try:
            await self.ledger.open()
            mark = await self.ledger.listing(self.listing.key)
        except Stopping:
            return
        walk = self.listing.begin(mark)
        if walk is not None:
            for url, number in walk.start():
                yield self.page_request(url, number)
        elif self.details is None:
            self.listing.finished_before(self.crawler.stats)

    def page_request(self, url: str, number: int | None) -> JsonRequest:
        self.pages.sent()
        return JsonRequest(
            url,
            callback=self.parse_page,
            errback=self.page_failed,
            meta={PAGE: number, RUN: self.run.id},
            priority=PAGE_PRIORITY,
            dont_filter=True,
        )

    def parse_page(self, response: Response) -> Iterator[Page | JsonRequest]:
        if self.shared is not None and not self.shared.walking:
            # The lease ran out: another worker walks the listing, from where it is committed.
            self.pages.done()
            return
        read = self.listing.read(response, self.clock(), self.crawler.stats)
        if isinstance(read, Stop):
            end_crawl(self.crawler, read.reason)
            return
        for url, number in read.requests:
            yield self.page_request(url, number)
        yield read.page

    def page_failed(self, failure: Failure) -> None:
        request = failure.request  # type: ignore[attr-defined]
        # A page given back to the queue is still out.
        mine = request.meta.get(RUN) == self.run.id and not failure.check(RequestReturned)
        if mine:
            self.pages.done()
        if failure.check(IgnoreRequest):
            return
        end_crawl(self.crawler, self.listing.failed(request.url, failure_reason(failure)).reason)
