"""The ``list`` spider: a listing walked page by page, each page stored with its position
(with details, its ids, each then fetched by ``API_URL``)."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

from scrapy import signals
from scrapy.exceptions import IgnoreRequest
from scrapy.http import JsonRequest

from ingest.answers import (
    NoItems,
    check_path,
    failure_reason,
    id_of,
    items_at,
    parse_json,
    refusal,
    text_of,
)
from ingest.config import parse_flag
from ingest.details import DetailsFeed, ListedIds
from ingest.endings import BAD_PAGE, BAD_SETTING, PAGE_FAILED, end_crawl
from ingest.ids import check_id
from ingest.items import STORED, ListingMark, Outcome, Page
from ingest.listings import PAGE, PageAnswer, Walk, first_page_problem
from ingest.pagination import (
    check_listing_url,
    order_key,
    parse_pagination,
    parse_since,
    value_at,
    with_param,
)
from ingest.spiders.fetching import IdFetching
from ingest.stopping import RequestReturned, Stopping, Waiter, crawl_is_stopping
from ingest.storage.ledger import Ledger
from ingest.worklist import ReadOutage

if TYPE_CHECKING:
    from typing import Self

    from scrapy.crawler import Crawler
    from scrapy.http import Response
    from twisted.python.failure import Failure

logger = logging.getLogger(__name__)

# Listing pages go before the details queued meanwhile: the next page is never held back
# by the ids of the pages before it.
PAGE_PRIORITY = 100


class ListSpider(IdFetching):
    """Walks the listing at ``-a url=…`` (``-a pagination=…``, see :mod:`ingest.pagination`)
    and yields each page's items as a :class:`Page`: their outcomes, and the listing's
    position after them, which storage commits in the same transaction. The database
    says where a listing stands: the same command resumes it at the page after the last
    one committed; a finished listing is listed again only with ``-a refresh=1``, or,
    with ``-a since=FIELD:PARAM``, for what changed since the highest FIELD stored.

    With ``-a details=1`` a page's items are only its ids, committed with the position
    (:mod:`ingest.details`), then each fetched by ``API_URL`` as the ``api`` spider does
    (:class:`~ingest.spiders.fetching.IdFetching`).
    """

    name = "list"
    custom_settings = {"HTTPERROR_ALLOW_ALL": True}

    items_path: tuple[str, ...] | None
    id_field: str
    ledger: Ledger
    worklist: ListedIds | None = None
    details: DetailsFeed | None = None
    # Requests an earlier run left in JOBDIR are not sent: the stored position and the
    # listed ids say what is next (see SkipDoneMiddleware).
    requests_of_earlier_runs = False

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
        self.relisting = False  # a finished listing walked again: its ids fetched again
        # Walked with details, a listing is another one: its pages commit ids, not items.
        self.key = f"{self.pagination} {self.url}" + (" details" if self.with_details else "")
        self.run = uuid.uuid4().hex[:12]
        self.clock: Callable[[], float] = time.time
        self.answered = False
        self.high_water: Any = None
        self.walk: Walk | None = None

    @classmethod
    def from_crawler(cls, crawler: Crawler, *args: Any, **kwargs: Any) -> Self:
        spider = super().from_crawler(crawler, *args, **kwargs)
        s = crawler.settings
        path = spider.items_arg if spider.items_arg is not None else s.get("API_BATCH_ITEMS")
        spider.items_path = check_path("items", path)
        spider.id_field = str(s.get("API_ITEM_ID") or "id")
        spider.ledger = Ledger.from_url(
            s.get("DATABASE_URL"),
            sleep=Waiter(lambda: crawl_is_stopping(crawler)).sleep,
            listener=ReadOutage(),
        )
        crawler.signals.connect(spider.ledger.close, signal=signals.spider_closed)
        if spider.with_details:
            feed = DetailsFeed.of_crawl(crawler, spider.key, spider.ledger, spider.requests_for)
            spider.details, spider.worklist = feed, feed.listed
        return spider

    # ------------------------------------------------------------ start

    async def start(self) -> AsyncIterator[Any]:
        try:
            await self.ledger.open()
            mark = await self.ledger.listing(self.key)
        except Stopping:
            return
        self.walk = self.begin(mark)
        if self.walk is not None:
            for url, number in self.walk.start():
                yield self.page_request(url, number)
        if self.details is None:
            return
        async for request in self.details.requests(self.crawler):
            yield request
        if self.walk is None and not crawl_is_stopping(self.crawler):
            self.finished_before(self.details.fed)

    def finished_before(self, requested: int = 0) -> None:
        if requested:
            logger.info(
                "The listing %s was finished already; %d ids it listed had no outcome: "
                "requested", self.url, requested,
            )  # fmt: skip
            return
        logger.info(
            "The listing %s was finished already: nothing to do (-a refresh=1 lists it "
            "again; -a since=FIELD:PARAM lists what changed)", self.url,
        )  # fmt: skip
        self.crawler.stats.set_value("list/finished_before", 1)

    def begin(self, mark: ListingMark | None) -> Walk | None:
        """The pass to walk: the one a stop left unfinished, or a new one; None if none is due."""
        if mark is not None and mark.high_water is not None:
            self.high_water = json.loads(mark.high_water)
        self.relisting = self.refresh or (self.since is not None and self.high_water is not None)
        if mark is not None and not mark.finished and mark.position is not None:
            logger.info("Resuming the listing %s where it stood", self.url)
            return Walk.resume(self.pagination, mark.position)
        url = self.url
        if mark is not None and mark.finished:
            if self.since is not None and self.high_water is not None:
                value = self.high_water
                url = with_param(
                    url, self.since[1], value if isinstance(value, str) else json.dumps(value)
                )
                logger.info("Listing what changed since %s=%s", ".".join(self.since[0]), value)
            elif not self.refresh:
                if self.details is None:
                    self.finished_before()
                return None
        return Walk(self.pagination, url)

    def page_request(self, url: str, number: int | None) -> JsonRequest:
        if self.details is not None:
            self.details.page_sent()
        return JsonRequest(
            url,
            callback=self.parse_page,
            errback=self.page_failed,
            meta={PAGE: number, "run": self.run},
            priority=PAGE_PRIORITY,
            dont_filter=True,
        )

    # ------------------------------------------------------------ pages

    def parse_page(self, response: Response) -> Iterator[Page | JsonRequest]:
        walk, now = self.walk, self.clock()
        assert walk is not None
        if response.status >= 500 or response.status == 429:
            self.failed_page(response.url, refusal(response))
            return
        if not 200 <= response.status < 300:
            self.stop(response.url, f"answered {refusal(response, with_text=True)}")
            return
        try:
            text = text_of(response)
            document = parse_json(text)
            found = items_at(text, self.items_path)
        except NoItems as exc:
            self.stop(response.url, f"has {exc}", setting=f"items={self.items_arg!r}")
            return
        except ValueError as exc:  # NotJson, UnicodeDecodeError, JSONDecodeError
            kind = (response.headers.get("Content-Type") or b"?").decode("latin-1")
            self.stop(response.url, f"is not JSON ({kind}): {exc}")
            return
        if not self.answered:
            wrong = first_page_problem(self.pagination, document, found, self.id_field, self.since)
            if wrong is not None:
                self.stop(response.url, wrong[0], setting=wrong[1])
                return
        self.answered = True
        entries = list(self.entries(found))
        url, status = response.url, response.status
        mark = ListingMark(self.key, None, False, None, now)
        if self.details is None:
            outcomes = [
                Outcome(id_, STORED, url, status, data=raw, payload=value, fetched_at=now)
                for id_, value, raw in entries
            ]  # fmt: skip
        else:
            outcomes, mark.listed = [], [id_ for id_, _, _ in entries]
            mark.stale_before = now if self.relisting else 0.0
        page = PageAnswer.read(
            self.pagination, document, len(found), response.headers.get("Link"), response.url
        )
        requests = walk.answered(response.meta.get(PAGE), page)
        for url, number in requests:
            yield self.page_request(url, number)
        stats = self.crawler.stats
        stats.inc_value("list/pages")
        stats.inc_value("list/items", len(found))
        mark.position, mark.finished = walk.position(), walk.finished
        mark.high_water = None if self.high_water is None else json.dumps(self.high_water)
        yield Page(outcomes, mark)
        if walk.finished:
            logger.info("The listing %s is finished", self.url)

    def entries(self, found: list[tuple[Any, str]]) -> Iterator[tuple[str, Any, str]]:
        """(id, item, its text) of a page's items that name an id (with details, one that
        can be fetched); the highest `since` field so far noted."""
        for value, raw in found:
            id_ = id_of(value, self.id_field)
            if id_ is None or (self.details is not None and check_id(id_) is not None):
                self.crawler.stats.inc_value("list/no_id")
                continue
            if self.since is not None:
                field = value_at(value, self.since[0])
                if field is not None and (
                    self.high_water is None or order_key(field) > order_key(self.high_water)
                ):
                    self.high_water = field
            yield id_, value, raw

    def stop(self, url: str, problem: str, *, setting: str | None = None) -> None:
        """Stop the crawl for a page that cannot be read: the listing stands where it was
        committed. On the first page it is the arguments that are wrong: exit 2."""
        if not self.answered:
            where = f"{setting}: " if setting else "url: "
            logger.error("%sthe first page %s %s", where, url, problem)
            end_crawl(self.crawler, BAD_SETTING)
        else:
            logger.error(
                "The listing page %s %s; the listing stands at the last page stored", url, problem
            )
            end_crawl(self.crawler, BAD_PAGE)

    def page_failed(self, failure: Failure) -> None:
        request = failure.request  # type: ignore[attr-defined]
        # A page given back to the queue is still out.
        mine = request.meta.get("run") == self.run and not failure.check(RequestReturned)
        if self.details is not None and mine:
            self.details.page_done()
        if failure.check(IgnoreRequest):
            return
        self.failed_page(request.url, failure_reason(failure))

    def failed_page(self, url: str, reason: str) -> None:
        logger.error(
            "The listing page %s failed: %s; the same command resumes the listing at the last "
            "page stored", url, reason,
        )  # fmt: skip
        end_crawl(self.crawler, PAGE_FAILED)
