"""A spider that fetches ids by ``API_URL``, one a request or many (``API_BATCH_SIZE``): its
run, and each answer read into one outcome per id. Shared by the ``api`` and ``list`` spiders."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from scrapy import Spider
from scrapy.exceptions import IgnoreRequest

from ingest.batch import answers as batch_answers
from ingest.batch.feed import Batches
from ingest.batch.sizer import TOO_BIG, Sizer
from ingest.batch.spec import IDS, batch_size
from ingest.fetching.answers import NoItems, describe
from ingest.fetching.outcomes import failed_outcomes, outcome_of
from ingest.fetching.requests import IdRequests
from ingest.items import INVALID
from ingest.job import Job
from ingest.run import Run
from ingest.stopping.endings import BAD_SETTING, end_crawl

if TYPE_CHECKING:
    from typing import Self

    from scrapy.crawler import Crawler
    from scrapy.http import JsonRequest, Response
    from twisted.python.failure import Failure

    from ingest.items import Outcome

logger = logging.getLogger(__name__)


class IdFetching(Spider):
    """A spider that fetches ids: its :class:`~ingest.run.Run` (the requests for ids, by
    ``API_URL`` or in batches by ``API_BATCH_URL``), and the callbacks that read their
    answers into one :class:`~ingest.items.Outcome` per id."""

    job: Job
    run: Run
    clock: Callable[[], float] = time.time
    batch_answered = False
    misread = False

    @classmethod
    def update_settings(cls, settings: Any) -> None:
        super().update_settings(settings)
        try:
            size = batch_size(settings)
        except ValueError:
            return  # refused, by name, before the crawl starts
        # The items of one answer are processed concurrently, up to CONCURRENT_ITEMS:
        # the outcomes of a batch then join the same transaction.
        settings.set("CONCURRENT_ITEMS", size, priority="spider")

    @classmethod
    def from_crawler(cls, crawler: Crawler, *args: Any, **kwargs: Any) -> Self:
        spider = super().from_crawler(crawler, *args, **kwargs)
        spider.job = job = Job.of(crawler)
        # Requests made by this run carry its id: a request from an earlier run's queue
        # is checked against the database before it goes (SkipDoneMiddleware).
        run_id = uuid.uuid4().hex[:12]
        sizer = Sizer(job.batch_size, on_settled=spider.settled)
        requests = IdRequests(
            job.api_url,
            job.batching,
            sizer,
            run_id,
            parse=spider.parse,
            parse_batch=spider.parse_batch,
            failed=spider.failed,
        )
        spider.run = Run(run_id, requests, Batches(requests) if job.batching else None)
        spider.run.attach(crawler)
        return spider

    def settled(self, size: int) -> None:
        self.crawler.stats.set_value("batch/size", size)
        state = getattr(self, "state", None)
        if state is not None:
            state["batch_size"] = size
        if size < self.job.batch_size:
            logger.info("Batches of %d ids from now on: the API refused larger ones", size)

    def parse(self, response: Response) -> Iterator[Outcome]:
        outcome = outcome_of(response, self.clock(), self.job.item_id)
        if outcome.state == INVALID:  # the answer names another id
            self.crawler.stats.inc_value("items/id_mismatch")
        yield outcome

    def parse_batch(self, response: Response) -> Iterator[Outcome | JsonRequest]:
        """One outcome per id asked for; a batch refused as too big is asked for in halves."""
        ids, spec = response.meta[IDS], self.job.batching
        assert spec is not None
        if response.status in TOO_BIG and len(ids) > 1:
            # Asked for again in batches of the size the API takes now (the middleware
            # lowered it on this answer), what is left waiting for more ids.
            self.crawler.stats.inc_value("batch/split")
            assert self.run.batches is not None
            yield from self.run.batches.give_back(ids, like=response.request)
            return
        try:
            answer = batch_answers.read_answer(response, ids, spec)
        except NoItems as exc:
            if not self.batch_answered:
                # The setting is wrong, not this answer: stop before every id fails.
                setting = ".".join(spec.items) if spec.items else None
                logger.error("API_BATCH_ITEMS=%r: the first batch's answer has %s", setting, exc)
                end_crawl(self.crawler, BAD_SETTING)
                return
            answer = f"no items in the answer at {describe(spec.items)}"
        if isinstance(answer, batch_answers.BatchAnswer):
            if (wrong := batch_answers.misread(answer, ids, spec)) is not None:
                # Read with a wrong setting, every id would end not_found: stop, none marked.
                if not self.misread:
                    self.misread = True
                    logger.error("%s; stopping: no id was marked", wrong)
                end_crawl(self.crawler, BAD_SETTING)
                return
            self.batch_answered = True
            batch_answers.count(self.crawler.stats, answer, len(ids))
        yield from batch_answers.outcomes(answer, ids, response, self.clock())

    def failed(self, failure: Failure) -> Iterator[Outcome]:
        if failure.check(IgnoreRequest):
            return
        yield from failed_outcomes(failure, self.clock())
