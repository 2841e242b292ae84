"""The ``api`` spider: ids in, one outcome per id out."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

from scrapy import Spider, signals
from scrapy.exceptions import IgnoreRequest
from scrapy.http import JsonRequest, TextResponse
from scrapy.utils.response import response_status_message

from ingest.api import check_api_url, url_for
from ingest.config import parse_flag
from ingest.ids import IdSource, id_source
from ingest.items import FAILED, NOT_FOUND, STORED, Outcome
from ingest.stopping import Waiter, crawl_is_stopping
from ingest.storage.ledger import Ledger
from ingest.worklist import ReadOutage, Worklist

if TYPE_CHECKING:
    from typing import Self

    from scrapy.crawler import Crawler
    from scrapy.http import Response
    from twisted.python.failure import Failure

GONE = frozenset({404, 410})


def reject_constant(name: str) -> Any:
    """NaN and Infinity are not JSON (RFC 8259), whatever Python's json accepts."""
    raise ValueError(f"{name} is not JSON")


class ApiSpider(Spider):
    """Fetches ``API_URL`` for every id of ``-a ids=…`` or ``-a ids_file=…`` that
    needs it (see :class:`ingest.worklist.Worklist`; ``-a refresh=1`` fetches every
    id again), and yields one :class:`Outcome` per answer.

    With ``DISTRIBUTED``, the ids come from the job's shared queue, seeded by one
    worker at a time (:mod:`ingest.distributed`).
    """

    name = "api"
    custom_settings = {"HTTPERROR_ALLOW_ALL": True}

    url_template: str
    worklist: Worklist
    shared: Any = None  # the distributed seeding, with DISTRIBUTED

    def __init__(
        self,
        ids: str | None = None,
        ids_file: str | None = None,
        refresh: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.ids: IdSource = id_source({"ids": ids, "ids_file": ids_file})
        self.refresh = parse_flag("refresh", refresh)
        # Requests made by this run carry it: a request from an earlier run's queue
        # is checked against the database before it goes (SkipDoneMiddleware).
        self.run = uuid.uuid4().hex[:12]
        self.clock: Callable[[], float] = time.time

    @classmethod
    def from_crawler(cls, crawler: Crawler, *args: Any, **kwargs: Any) -> Self:
        spider = super().from_crawler(crawler, *args, **kwargs)
        s = crawler.settings
        spider.url_template = check_api_url(s.get("API_URL"))

        def count(key: str) -> None:
            # Through the crawler: its stats exist once the crawl starts, not yet here.
            crawler.stats.inc_value(key)

        ledger = Ledger.from_url(
            s.get("DATABASE_URL"),
            sleep=Waiter(lambda: crawl_is_stopping(crawler)).sleep,
            listener=ReadOutage(),
        )
        spider.worklist = Worklist(
            spider.ids,
            ledger,
            count,
            refresh=spider.refresh,
            job_state=lambda: getattr(spider, "state", None),
        )
        crawler.signals.connect(spider.worklist.close, signal=signals.spider_closed)
        if s.getbool("DISTRIBUTED"):
            from ingest.distributed.seeding import SharedSeeding

            spider.shared = SharedSeeding.from_crawler(crawler, spider)
        return spider

    async def start(self) -> AsyncIterator[Any]:
        feed = self.shared.feed() if self.shared else self.worklist.feed(self.crawler)
        async for id_, state in feed:
            # Ids with no row yet go through the duplicate filter: with JOBDIR, those
            # already queued by an earlier run are not queued twice.
            yield self.request_for(id_, dont_filter=state is not None)

    def request_for(self, id_: str, *, dont_filter: bool = False) -> JsonRequest:
        return JsonRequest(
            url_for(self.url_template, id_),
            callback=self.parse,
            errback=self.failed,
            meta={"id": id_, "run": self.run},
            dont_filter=dont_filter,
        )

    def parse(self, response: Response) -> Iterator[Outcome]:
        outcome = Outcome(
            response.meta["id"], FAILED, response.url, response.status, fetched_at=self.clock()
        )
        if response.status in GONE:
            outcome.state, outcome.reason = NOT_FOUND, response_status_message(response.status)
        elif 200 <= response.status < 300:
            try:
                outcome.data = response.body.decode(
                    response.encoding if isinstance(response, TextResponse) else "utf-8"
                )
                outcome.payload = json.loads(outcome.data, parse_constant=reject_constant)
            except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError included
                kind = (response.headers.get("Content-Type") or b"?").decode("latin-1")
                outcome.data, outcome.reason = None, f"not JSON ({kind}): {exc}"
            else:
                outcome.state = STORED
        else:
            outcome.reason = response_status_message(response.status)
            if retries := response.meta.get("retry_times"):
                outcome.reason += f" (after {retries} retries)"
        yield outcome

    def failed(self, failure: Failure) -> Iterator[Outcome]:
        if failure.check(IgnoreRequest):
            return
        request = failure.request  # type: ignore[attr-defined]
        exc = failure.value
        reason = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
        if retries := request.meta.get("retry_times"):
            reason += f" (after {retries} retries)"
        yield Outcome(
            request.meta["id"], FAILED, request.url, None, reason=reason, fetched_at=self.clock()
        )
