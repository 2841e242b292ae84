"""The ``api`` spider: ids in, one outcome per id out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from scrapy import signals

from ingest.batch.feed import batch_requests
from ingest.config.values import parse_flag
from ingest.fetching.ids import IdSource, id_source
from ingest.fetching.worklist import ReadOutage, Worklist
from ingest.spiders.fetching import IdFetching
from ingest.stopping.waiting import Waiter, crawl_is_stopping
from ingest.storage.ledger import Ledger

if TYPE_CHECKING:
    from typing import Self

    from scrapy.crawler import Crawler


class ApiSpider(IdFetching):
    """Fetches ``API_URL`` for every id of ``-a ids=…`` or ``-a ids_file=…`` that
    needs it (see :class:`ingest.fetching.worklist.Worklist`; ``-a refresh=1`` fetches
    every id again), and yields one :class:`Outcome` per answer.

    With ``API_BATCH_SIZE`` above 1, many ids go in one request to ``API_BATCH_URL``
    (:mod:`ingest.batch`), and each id of the answer still gets its own outcome.

    With ``DISTRIBUTED``, the ids come from the job's shared queue, seeded by one
    worker at a time (:mod:`ingest.distributed`).
    """

    name = "api"
    custom_settings = {"HTTPERROR_ALLOW_ALL": True}

    worklist: Worklist

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

    @classmethod
    def from_crawler(cls, crawler: Crawler, *args: Any, **kwargs: Any) -> Self:
        spider = super().from_crawler(crawler, *args, **kwargs)

        def count(key: str, by: int = 1) -> None:
            # Through the crawler: its stats exist once the crawl starts, not yet here.
            crawler.stats.inc_value(key, by)

        ledger = Ledger.from_url(
            spider.job.storing.database_url,
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
        run = spider.run
        run.ids, run.worklist, run.refresh = spider.ids, spider.worklist, spider.refresh
        if spider.job.distributed:
            from ingest.distributed.seeding import SharedSeeding

            run.shared = SharedSeeding.from_crawler(crawler, run, spider.job)
            run.coordinator = run.shared.coordinator
        return spider

    async def start(self) -> AsyncIterator[Any]:
        run = self.run
        if self.job.batching is not None:
            state = getattr(self, "state", None)
            if state and state.get("batch_size"):
                run.requests.sizer.settle(int(state["batch_size"]))
            async for request in batch_requests(run, self.worklist, self.crawler):
                yield request
            return
        feed = run.shared.feed() if run.shared else self.worklist.feed(self.crawler)
        async for id_, state in feed:
            # Ids with no row yet go through the duplicate filter: with JOBDIR, those
            # already queued by an earlier run are not queued twice.
            yield run.requests.request_for(id_, dont_filter=state is not None)
