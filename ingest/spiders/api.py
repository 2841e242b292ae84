"""The ``api`` spider: ids in, one outcome per id out."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from scrapy import signals
from scrapy.http import JsonRequest

from ingest.config import parse_flag
from ingest.ids import IdSource, id_source
from ingest.spiders.fetching import IdFetching
from ingest.stopping import Waiter, crawl_is_stopping
from ingest.storage.ledger import Ledger
from ingest.worklist import ReadOutage, Worklist

if TYPE_CHECKING:
    from typing import Self

    from scrapy.crawler import Crawler


class ApiSpider(IdFetching):
    """Fetches ``API_URL`` for every id of ``-a ids=…`` or ``-a ids_file=…`` that
    needs it (see :class:`ingest.worklist.Worklist`; ``-a refresh=1`` fetches every
    id again), and yields one :class:`Outcome` per answer.

    With ``API_BATCH_SIZE`` above 1, many ids go in one request to ``API_BATCH_URL``
    (:mod:`ingest.batches`), and each id of the answer still gets its own outcome.

    With ``DISTRIBUTED``, the ids come from the job's shared queue, seeded by one
    worker at a time (:mod:`ingest.distributed`).
    """

    name = "api"
    custom_settings = {"HTTPERROR_ALLOW_ALL": True}

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

        def count(key: str, by: int = 1) -> None:
            # Through the crawler: its stats exist once the crawl starts, not yet here.
            crawler.stats.inc_value(key, by)

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
        if self.batching is not None:
            async for request in self.batch_requests():
                yield request
            return
        feed = self.shared.feed() if self.shared else self.worklist.feed(self.crawler)
        async for id_, state in feed:
            # Ids with no row yet go through the duplicate filter: with JOBDIR, those
            # already queued by an earlier run are not queued twice.
            yield self.request_for(id_, dont_filter=state is not None)

    async def batch_requests(self) -> AsyncIterator[JsonRequest]:
        assert self.batching is not None
        size = self.batching.size
        state = getattr(self, "state", None)
        if state and state.get("batch_size"):
            self.sizer.settle(int(state["batch_size"]))
        if self.shared:
            group: list[str] = []
            async for id_, _ in self.shared.feed():
                group.append(id_)
                if len(group) == size:
                    yield self.batch_request(group)
                    group = []
            if group:
                yield self.batch_request(group)
            return
        again: list[str] = []
        async for number, todo in self.worklist.feed_groups(self.crawler, size):
            # As single ids do, ids with no row yet go through the duplicate filter: in
            # a batch named by its place in the job (BatchFingerprinter), so that with
            # JOBDIR a rerun does not queue again what the queue holds.
            fresh = [id_ for id_, state in todo if state is None]
            for place, part in enumerate(self.batching.parts(fresh, self.sizer.size)):
                yield self.batch_request(part, chunk=f"{size}:{number}.{place}")
            # Ids tried before (failed, or refreshed) are scattered: gathered into full batches.
            again += [id_ for id_, state in todo if state is not None]
            while len(again) >= self.sizer.size:
                full, again = again[: self.sizer.size], again[self.sizer.size :]
                for part in self.batching.parts(full, self.sizer.size):
                    yield self.batch_request(part)
        for part in self.batching.parts(again, self.sizer.size):
            yield self.batch_request(part)
