"""The ``api`` spider: ids in, one outcome per id out."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from itertools import islice
from typing import TYPE_CHECKING, Any

from scrapy import Spider, signals
from scrapy.exceptions import DontCloseSpider, IgnoreRequest
from scrapy.http import JsonRequest, TextResponse
from scrapy.utils.response import response_status_message

from ingest.config import IdSource, check_api_url, id_source, parse_flag, url_for
from ingest.distributed import Coordinator, job_id, seed_shared, settle
from ingest.groupcommit import is_outage, outage_backoff
from ingest.items import FAILED, NOT_FOUND, STORED, Outcome
from ingest.ledger import Ledger
from ingest.stopping import Stopping, Waiter, crawl_is_stopping
from ingest.storage import StorageError

if TYPE_CHECKING:
    from typing import Self

    from scrapy.crawler import Crawler
    from scrapy.http import Response
    from twisted.python.failure import Failure

logger = logging.getLogger(__name__)

CHUNK = 500
MAX_PASSES = 3  # looks for ids left without an outcome, per run
GONE = frozenset({404, 410})


def reject_constant(name: str) -> Any:
    """NaN and Infinity are not JSON (RFC 8259), whatever Python's json accepts."""
    raise ValueError(f"{name} is not a JSON value")


def chunks(ids: Iterable[str], size: int) -> Iterator[list[str]]:
    iterator = iter(ids)
    while chunk := list(islice(iterator, size)):
        yield chunk


class ApiSpider(Spider):
    """Fetches ``API_URL`` for every id of ``-a ids=…`` or ``-a ids_file=…``.

    Ids already ``stored`` or ``not_found`` in the database are skipped without a
    request (``-a refresh=1`` fetches them again); ``failed`` ids are tried again,
    ``invalid`` ones only with refresh.
    """

    name = "api"
    custom_settings = {"HTTPERROR_ALLOW_ALL": True}

    url_template: str
    database_url: str

    def __init__(
        self,
        ids: str | None = None,
        ids_file: str | None = None,
        refresh: str | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.ids: IdSource = id_source({"ids": ids, "ids_file": ids_file})
        self.refresh = parse_flag("refresh", refresh)
        self.clock: Callable[[], float] = time.time
        self.run = uuid.uuid4().hex[:12]
        self.started_at = self.clock()
        self._passes = 0
        self._pass: asyncio.Future[int] | None = None
        self.coordinator: Coordinator | None = None
        self.job = ""
        self._beat: asyncio.Future[None] | None = None

    @classmethod
    def from_crawler(cls, crawler: Crawler, *args: Any, **kwargs: Any) -> Self:
        spider = super().from_crawler(crawler, *args, **kwargs)
        spider.url_template = check_api_url(crawler.settings.get("API_URL"))
        spider.database_url = crawler.settings.get("DATABASE_URL")
        crawler.signals.connect(spider.idle, signal=signals.spider_idle)
        if crawler.settings.getbool("DISTRIBUTED"):
            spider.job = job_id(spider.url_template, spider.ids, spider.database_url)
            spider.coordinator = Coordinator.from_url(
                crawler.settings.get("REDIS_URL"), spider.job, spider.run
            )
            crawler.signals.connect(spider.worker_opened, signal=signals.spider_opened)
            crawler.signals.connect(spider.worker_closed, signal=signals.spider_closed)
            crawler.signals.connect(spider.busy, signal=signals.request_reached_downloader)
        return spider

    def worker_opened(self) -> None:
        assert self.coordinator is not None
        logger.info("Worker %s of job %s", self.run, self.job)
        self.coordinator.start()

    async def worker_closed(self) -> None:
        assert self.coordinator is not None
        await self.coordinator.leave()

    def busy(self) -> None:
        """Working again: tell the others at once, or one of them could take this
        worker's requests in flight for lost ones."""
        if self.coordinator is not None and self.coordinator.idle:
            self._beat = asyncio.ensure_future(self.coordinator.set_idle(False))

    @property
    def refresh_since(self) -> float:
        """When this refresh began; with JOBDIR it survives a stop, so a resumed
        refresh does not fetch again what it already refreshed."""
        state = getattr(self, "state", None)
        if state is None:
            return self.started_at
        return float(state.setdefault("refresh_since", self.started_at))

    def needs_fetch(self, state: str | None, fetched_at: float = 0.0) -> bool:
        """Stored and not_found ids are done; failed ones are tried again; invalid
        ones, and everything, only with refresh."""
        if state is None:
            return True
        if self.refresh:
            return fetched_at < self.refresh_since
        return state == FAILED

    async def todo(
        self, ids: Iterable[str], *, lost_only: bool = False
    ) -> AsyncIterator[tuple[str, str | None]]:
        """(id, state) for the ids that need a request, looked up in the database a
        chunk at a time. ``lost_only``: just the ids with no outcome at all (and, with
        refresh, those not refreshed yet): failed ids of this run are left alone."""
        ledger = Ledger.from_url(self.database_url)
        await ledger.open()
        try:
            for chunk in chunks(ids, CHUNK):
                states = await self.states_of(ledger, chunk)
                for id_ in chunk:
                    state, fetched_at = states.get(id_, (None, 0.0))
                    if lost_only:
                        wanted = state is None or (self.refresh and fetched_at < self.refresh_since)
                    else:
                        wanted = self.needs_fetch(state, fetched_at)
                    if wanted:
                        yield id_, state
                    elif not lost_only:
                        self.crawler.stats.inc_value("ids/skipped")
        finally:
            await ledger.close()

    async def states_of(self, ledger: Ledger, chunk: list[str]) -> dict[str, tuple[str, float]]:
        """The chunk's states; through a database outage, retried (reconnecting first)
        until the database is back, as the storage pipeline's writes are."""
        waiter = Waiter(lambda: crawl_is_stopping(self.crawler))
        attempt = 0
        while True:
            try:
                if attempt:
                    await ledger.open()
                return await ledger.states(chunk)
            except StorageError as exc:
                if not is_outage(exc):
                    raise
                attempt += 1
                if attempt == 1:
                    logger.warning(
                        "Cannot read outcomes, retrying until the database is back: %s", exc
                    )
                await waiter.sleep(outage_backoff(attempt))

    async def start(self) -> AsyncIterator[Any]:
        if self.coordinator is not None:
            async for request in seed_shared(self, self.coordinator):
                yield request
            return
        try:
            async for id_, state in self.todo(self.ids):
                await self._backlog_room()
                self.crawler.stats.inc_value("ids/scheduled")
                # Ids with no row yet go through the duplicate filter: with JOBDIR,
                # those already queued by an earlier run are not queued twice.
                yield self.request_for(id_, dont_filter=state is not None)
        except Stopping:
            return

    async def _backlog_room(self) -> None:
        """Yield ids only as the downloader takes them: the queue stays short, and
        a million ids never become a million requests in memory."""
        engine = self.crawler.engine
        while engine is not None and engine.running and (engine.needs_backout() or engine.paused):
            # Paused (storage is down): no reading ahead; a heartbeat wakes us.
            await self.crawler.signals.wait_for(signals.scheduler_empty)

    def idle(self) -> None:
        """When the queue runs dry, look for ids of the set that still have no
        outcome (lost with a forced stop, a dead worker, or a failed write) and
        fetch them.

        This is what makes a rerun complete whatever stopped the last one: the
        database, not the queue, is the record of what is done.
        """
        if self._pass is not None and not self._pass.done():
            raise DontCloseSpider
        if self._pass is not None:
            self._pass.result()
            self._pass = None
            if self._finished():
                return
        if self.coordinator is None:
            self._passes += 1
            self._pass = asyncio.ensure_future(self._then_close(self.reconcile()))
        else:
            self._pass = asyncio.ensure_future(self._then_close(settle(self, self.coordinator)))
        raise DontCloseSpider

    def _finished(self, scheduled: int | None = None) -> bool:
        if self.coordinator is not None:
            return self.coordinator.finished
        return scheduled == 0 or self._passes >= MAX_PASSES

    async def _then_close(self, look: Awaitable[int]) -> int:
        """Run a look for lost ids; when it ends the job, close at once rather than
        at the engine's next idle check, seconds later."""
        scheduled = await look
        engine = self.crawler.engine
        if self._finished(scheduled) and engine is not None and engine.spider_is_idle():
            await engine.close_spider_async(reason="finished")
        return scheduled

    async def reconcile(self) -> int:
        """Queue again every id of the set that has no outcome; returns how many."""
        assert self.crawler.engine is not None
        scheduled = 0
        async for id_, _ in self.todo(self.ids, lost_only=True):
            scheduled += 1
            self.crawler.engine.crawl(self.request_for(id_, dont_filter=True))
        if scheduled:
            self.crawler.stats.inc_value("ids/recovered", scheduled)
            logger.info("Fetching %d ids that have no outcome yet", scheduled)
        return scheduled

    def request_for(self, id_: str, *, dont_filter: bool = False) -> JsonRequest:
        return JsonRequest(
            url_for(self.url_template, id_),
            callback=self.parse,
            errback=self.failed,
            meta={"id": id_, "run": self.run},
            dont_filter=dont_filter,
        )

    def parse(self, response: Response) -> Iterator[Outcome]:
        id_ = response.meta["id"]
        outcome = Outcome(id_, FAILED, response.url, response.status, fetched_at=self.clock())
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
            retries = response.meta.get("retry_times")
            if retries:
                outcome.reason += f" (after {retries} retries)"
        yield outcome

    def failed(self, failure: Failure) -> Iterator[Outcome]:
        if failure.check(IgnoreRequest):
            return
        request = failure.request  # type: ignore[attr-defined]
        exc = failure.value
        reason = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
        retries = request.meta.get("retry_times")
        if retries:
            reason += f" (after {retries} retries)"
        yield Outcome(
            request.meta["id"], FAILED, request.url, None, reason=reason, fetched_at=self.clock()
        )
