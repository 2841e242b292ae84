"""The ``list`` spider: a listing walked page by page, each page stored with its position."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

from scrapy import Spider, signals
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
from ingest.endings import BAD_PAGE, BAD_SETTING, PAGE_FAILED, end_crawl
from ingest.items import STORED, ListingMark, Outcome, Page
from ingest.listings import PAGE, PageAnswer, Walk
from ingest.pagination import (
    check_listing_url,
    cursor_value,
    next_url,
    parse_link_header,
    parse_pagination,
    parse_since,
    total_of,
    value_at,
    with_param,
)
from ingest.stopping import Stopping, Waiter, crawl_is_stopping
from ingest.storage.ledger import Ledger
from ingest.worklist import ReadOutage

if TYPE_CHECKING:
    from typing import Self

    from scrapy.crawler import Crawler
    from scrapy.http import Response
    from twisted.python.failure import Failure

logger = logging.getLogger(__name__)

_ABSENT = object()


def order_key(value: Any) -> tuple[int, Any]:
    """How `since` values compare: numbers as numbers, anything else as its text."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, value)
    return (1, value if isinstance(value, str) else json.dumps(value, sort_keys=True))


class ListSpider(Spider):
    """Walks the listing at ``-a url=…`` (``-a pagination=…``, see :mod:`ingest.pagination`)
    and yields each page's items as a :class:`Page`: their outcomes, and the listing's
    position after them, which storage commits in the same transaction. The database
    says where a listing stands: the same command resumes it at the page after the last
    one committed; a finished listing is listed again only with ``-a refresh=1``, or,
    with ``-a since=FIELD:PARAM``, for what changed since the highest FIELD stored.
    """

    name = "list"
    custom_settings = {"HTTPERROR_ALLOW_ALL": True}

    items_path: tuple[str, ...] | None
    id_field: str
    ledger: Ledger

    def __init__(
        self,
        url: str | None = None,
        pagination: str | None = None,
        items: str | None = None,
        since: str | None = None,
        refresh: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.url = check_listing_url(url)
        self.pagination = parse_pagination(pagination)
        self.items_arg = items
        self.since = parse_since(since)
        self.refresh = parse_flag("refresh", refresh)
        self.key = f"{self.pagination} {self.url}"
        # Page requests left in JOBDIR by an earlier run are not sent: the stored
        # position says where the listing goes on.
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

    def begin(self, mark: ListingMark | None) -> Walk | None:
        """The pass to walk: the one a stop left unfinished, or a new one; None if none is due."""
        if mark is not None and mark.high_water is not None:
            self.high_water = json.loads(mark.high_water)
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
                logger.info(
                    "The listing %s was finished already: nothing to do (-a refresh=1 lists it "
                    "again; -a since=FIELD:PARAM lists what changed)", self.url,
                )  # fmt: skip
                self.crawler.stats.set_value("list/finished_before", 1)
                return None
        return Walk(self.pagination, url)

    def page_request(self, url: str, number: int | None) -> JsonRequest:
        return JsonRequest(
            url,
            callback=self.parse_page,
            errback=self.page_failed,
            meta={PAGE: number, "run": self.run},
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
        if not self.answered and not self.first_page_fits(document, found, response.url):
            return
        self.answered = True
        outcomes = list(self.outcomes(found, response, now))
        links = parse_link_header(response.headers.get("Link"), response.url)
        page = PageAnswer(len(found), total=total_of(document), last_url=links.get("last"))
        if self.pagination.style == "cursor":
            assert self.pagination.path is not None
            page.cursor = cursor_value(value_at(document, self.pagination.path))
        elif not self.pagination.numbered:
            page.next_url = next_url(self.pagination, document, links, response.url)
        requests = walk.answered(response.meta.get(PAGE), page)
        for url, number in requests:
            yield self.page_request(url, number)
        stats = self.crawler.stats
        stats.inc_value("list/pages")
        stats.inc_value("list/items", len(found))
        high = None if self.high_water is None else json.dumps(self.high_water)
        yield Page(outcomes, ListingMark(self.key, walk.position(), walk.finished, high, now))
        if walk.finished:
            logger.info("The listing %s is finished", self.url)

    def outcomes(
        self, found: list[tuple[Any, str]], response: Response, now: float
    ) -> Iterator[Outcome]:
        url, status = response.url, response.status
        for value, raw in found:
            id_ = id_of(value, self.id_field)
            if id_ is None:
                self.crawler.stats.inc_value("list/no_id")
                continue
            if self.since is not None:
                field = value_at(value, self.since[0])
                if field is not None and (
                    self.high_water is None or order_key(field) > order_key(self.high_water)
                ):
                    self.high_water = field
            yield Outcome(id_, STORED, url, status, data=raw, payload=value, fetched_at=now)

    def first_page_fits(self, document: Any, found: list[tuple[Any, str]], url: str) -> bool:
        """Whether the paths the arguments name are in the first answer (else the crawl stops:
        they are wrong, not the page)."""
        p = self.pagination
        if p.path is not None and not _present(document, p.path):
            self.stop(url, f"has nothing at {'.'.join(p.path)}", setting=f"pagination={p}")
            return False
        if found and all(id_of(value, self.id_field) is None for value, _ in found):
            self.stop(
                url, f"has no item with {self.id_field!r}", setting=f"API_ITEM_ID={self.id_field!r}"
            )
            return False
        if (
            self.since is not None
            and found
            and all(value_at(value, self.since[0]) is None for value, _ in found)
        ):
            field = ".".join(self.since[0])
            self.stop(url, f"has no item with {field!r}", setting=f"since={field}:{self.since[1]}")
            return False
        return True

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
        if failure.check(IgnoreRequest):
            return
        self.failed_page(failure.request.url, failure_reason(failure))  # type: ignore[attr-defined]

    def failed_page(self, url: str, reason: str) -> None:
        logger.error(
            "The listing page %s failed: %s; the same command resumes the listing at the last "
            "page stored", url, reason,
        )  # fmt: skip
        end_crawl(self.crawler, PAGE_FAILED)


def _present(document: Any, path: tuple[str, ...]) -> bool:
    """Whether the key path exists in the document (its value may be null)."""
    for key in path:
        if not isinstance(document, dict) or key not in document:
            return False
        document = document[key]
    return True
