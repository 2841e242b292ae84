"""A listing's pages read: which pass to walk, each page's items (or ids) with the listing's
mark after them, the pages still out, and what stops a listing: a page that cannot be read,
or one that failed."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scrapy import signals

from ingest.fetching.answers import NoItems, id_of, items_at, parse_json, refusal, text_of
from ingest.fetching.ids import check_id
from ingest.items import STORED, ListingMark, Outcome, Page
from ingest.listing.pagination import order_key, value_at, with_param
from ingest.listing.walk import PAGE, PageAnswer, Walk, first_page_problem
from ingest.stopping.endings import BAD_PAGE, BAD_SETTING, PAGE_FAILED

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.http import Response
    from scrapy.statscollectors import StatsCollector

    from ingest.listing.pagination import Pagination

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Stop:
    """Why a listing stops at a page: a reason of :mod:`ingest.stopping.endings`, told."""

    reason: str


@dataclass(frozen=True, slots=True)
class PageRead:
    """A page read: its item for storage, and the pages to ask for next."""

    page: Page
    requests: list[tuple[str, int | None]]


class PagesOut:
    """The listing pages this run asked for whose answer has not settled yet: committed,
    dropped, or failed for good. While one is out, more pages (and ids) may come."""

    def __init__(self) -> None:
        self.out = 0
        self.settled = 0

    @classmethod
    def of_crawl(cls, crawler: Crawler) -> PagesOut:
        """Told of each page's item as it settles, and of a page's callback that raised."""
        pages = cls()
        for signal in (signals.item_scraped, signals.item_dropped, signals.item_error):
            crawler.signals.connect(pages.item_settled, signal=signal)
        crawler.signals.connect(pages.callback_failed, signal=signals.spider_error)
        return pages

    def sent(self) -> None:
        self.out += 1

    def done(self) -> None:
        """A page's answer is settled: committed, dropped, or failed for good."""
        self.out -= 1
        self.settled += 1

    def item_settled(self, item: Any) -> None:
        if isinstance(item, Page):
            self.done()

    def callback_failed(self, failure: Any, response: Any) -> None:
        """A page's callback raised: no item will settle it, yet it is out no more."""
        if PAGE in response.meta:
            self.done()


class Listing:
    """One listing (``-a url=…``, ``-a pagination=…``), as the database says it stands.

    :meth:`begin` picks the pass to walk: the one a stop left unfinished, a new one, with
    ``since`` one from the highest value stored, or none. :meth:`read` turns each page's
    answer into a :class:`~ingest.items.Page` (its outcomes, or with ``details`` its ids,
    and the listing's position after them) and the pages due next; a page that cannot be
    read or that failed is a :class:`Stop`, told once in the log.
    """

    def __init__(
        self,
        url: str,
        pagination: Pagination,
        *,
        items_path: tuple[str, ...] | None,
        items_arg: str | None,
        id_field: str,
        since: tuple[tuple[str, ...], str] | None = None,
        refresh: bool = False,
        details: bool = False,
    ) -> None:
        self.url, self.pagination, self.since = url, pagination, since
        self.items_path, self.items_arg, self.id_field = items_path, items_arg, id_field
        self.refresh, self.details = refresh, details
        # Walked with details, a listing is another one: its pages commit ids, not items.
        self.key = f"{pagination} {url}" + (" details" if details else "")
        self.relisting = False  # a finished listing walked again: its ids fetched again
        self.answered = False
        self.high_water: Any = None
        self.walk: Walk | None = None
        self.begun = False  # this run read where the listing stands, and picked its pass

    # ------------------------------------------------------------ which pass

    def begin(self, mark: ListingMark | None) -> Walk | None:
        """The pass to walk: the one a stop left unfinished, or a new one; None if none is due."""
        self.begun = True
        if mark is not None and mark.high_water is not None:
            self.high_water = json.loads(mark.high_water)
        self.relisting = self.refresh or (self.since is not None and self.high_water is not None)
        if mark is not None and not mark.finished and mark.position is not None:
            logger.info("Resuming the listing %s where it stood", self.url)
            self.walk = Walk.resume(self.pagination, mark.position)
            return self.walk
        url = self.url
        if mark is not None and mark.finished:
            if self.since is not None and self.high_water is not None:
                value = self.high_water
                url = with_param(
                    url, self.since[1], value if isinstance(value, str) else json.dumps(value)
                )
                logger.info("Listing what changed since %s=%s", ".".join(self.since[0]), value)
            elif not self.refresh:
                return None
        self.walk = Walk(self.pagination, url)
        return self.walk

    def finished_before(self, stats: StatsCollector, requested: int = 0) -> None:
        """Tells that the listing was finished before this run, and what was left to do."""
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
        stats.set_value("list/finished_before", 1)

    # ------------------------------------------------------------ pages

    def read(self, response: Response, now: float, stats: StatsCollector) -> PageRead | Stop:
        """A page's answer read into its item and the pages due next, or why it stops."""
        walk = self.walk
        assert walk is not None
        if response.status >= 500 or response.status == 429:
            return self.failed(response.url, refusal(response))
        if not 200 <= response.status < 300:
            return self.stop(response.url, f"answered {refusal(response, with_text=True)}")
        try:
            text = text_of(response)
            document = parse_json(text)
            found = items_at(text, self.items_path)
        except NoItems as exc:
            return self.stop(response.url, f"has {exc}", setting=f"items={self.items_arg!r}")
        except ValueError as exc:  # NotJson, UnicodeDecodeError, JSONDecodeError
            kind = (response.headers.get("Content-Type") or b"?").decode("latin-1")
            return self.stop(response.url, f"is not JSON ({kind}): {exc}")
        if not self.answered:
            wrong = first_page_problem(self.pagination, document, found, self.id_field, self.since)
            if wrong is not None:
                return self.stop(response.url, wrong[0], setting=wrong[1])
        self.answered = True
        entries = list(self.entries(found, stats))
        url, status = response.url, response.status
        mark = ListingMark(self.key, None, False, None, now)
        if not self.details:
            outcomes = [
                Outcome(id_, STORED, url, status, data=raw, payload=value, fetched_at=now)
                for id_, value, raw in entries
            ]  # fmt: skip
        else:
            outcomes, mark.listed = [], [id_ for id_, _, _ in entries]
            mark.stale_before = now if self.relisting else 0.0
        answer = PageAnswer.read(
            self.pagination, document, len(found), response.headers.get("Link"), response.url
        )
        requests = walk.answered(response.meta.get(PAGE), answer)
        stats.inc_value("list/pages")
        stats.inc_value("list/items", len(found))
        mark.position, mark.finished = walk.position(), walk.finished
        mark.high_water = None if self.high_water is None else json.dumps(self.high_water)
        if walk.finished:
            logger.info("The listing %s is finished", self.url)
        return PageRead(Page(outcomes, mark), requests)

    def entries(
        self, found: list[tuple[Any, str]], stats: StatsCollector
    ) -> Iterator[tuple[str, Any, str]]:
        """(id, item, its text) of a page's items that name an id (with details, one that
        can be fetched); the highest `since` field so far noted."""
        for value, raw in found:
            id_ = id_of(value, self.id_field)
            if id_ is None or (self.details and check_id(id_) is not None):
                stats.inc_value("list/no_id")
                continue
            if self.since is not None:
                field = value_at(value, self.since[0])
                if field is not None and (
                    self.high_water is None or order_key(field) > order_key(self.high_water)
                ):
                    self.high_water = field
            yield id_, value, raw

    # ------------------------------------------------------------ stops

    def stop(self, url: str, problem: str, *, setting: str | None = None) -> Stop:
        """A page that cannot be read: the listing stands where it was committed. On the
        first page it is the arguments that are wrong: exit 2."""
        if not self.answered:
            where = f"{setting}: " if setting else "url: "
            logger.error("%sthe first page %s %s", where, url, problem)
            return Stop(BAD_SETTING)
        logger.error(
            "The listing page %s %s; the listing stands at the last page stored", url, problem
        )
        return Stop(BAD_PAGE)

    def failed(self, url: str, reason: str) -> Stop:
        """A page that failed after its retries: the same command resumes the listing."""
        logger.error(
            "The listing page %s failed: %s; the same command resumes the listing at the last "
            "page stored", url, reason,
        )  # fmt: skip
        return Stop(PAGE_FAILED)
