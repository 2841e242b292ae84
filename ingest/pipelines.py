"""Item pipelines: schema validation, then batched storage that waits out database outages."""

from __future__ import annotations

import logging
import time
from functools import partial
from typing import TYPE_CHECKING, Any

from jsonschema.exceptions import best_match
from jsonschema.validators import validator_for
from scrapy.exceptions import DropItem
from scrapy.utils.asyncio import sleep as scrapy_sleep

from ingest.config.values import ConfigError
from ingest.items import FAILED, INVALID, STORED, Outcome, Page
from ingest.job import Job
from ingest.progress.humanize import duration
from ingest.signals import batch_written, storage_available, storage_unavailable
from ingest.stopping.waiting import Waiter, crawl_is_stopping
from ingest.storage import open_store
from ingest.storage.base import Record, StorageRefused, StorageUnavailable, Store
from ingest.storage.groupcommit import GroupCommit, Unwritten
from ingest.storage.ledger import Ledger

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from typing import Self

    from scrapy.crawler import Crawler
    from scrapy.signalmanager import SignalManager
    from scrapy.statscollectors import StatsCollector

logger = logging.getLogger(__name__)


def holds_nul(value: Any) -> bool:
    """Whether a parsed JSON value has U+0000 in a string or a key."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            if "\x00" in node:
                return True
        elif isinstance(node, dict):
            stack.extend(node)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


class ValidationPipeline:
    """Checks every fetched payload against ``ITEM_SCHEMA``; a failure makes the
    outcome ``invalid``, with the validator's message and the payload kept.

    A payload holding U+0000 is ``invalid`` too: PostgreSQL's jsonb cannot store it, and the
    same payload ends in the same state whichever database is behind ``DATABASE_URL``.
    """

    def __init__(self, schema: Any, stats: StatsCollector) -> None:
        self.validator = validator_for(schema)(schema)
        self.stats = stats

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        assert crawler.stats is not None
        return cls(Job.of(crawler).schema, crawler.stats)

    def process_item(self, item: Outcome | Page) -> Outcome | Page:
        if isinstance(item, Page):
            for outcome in item.outcomes:
                self.check(outcome)
            return item
        return self.check(item)

    def check(self, item: Outcome) -> Outcome:
        if item.state != STORED:
            return item
        error = best_match(self.validator.iter_errors(item.payload))
        if error is not None:
            item.reason = f"schema: {error.message} (at {error.json_path})"
        # JSON can spell U+0000 only as this escape (a raw NUL is not JSON): the text test
        # spares the walk to nearly every payload; the walk tells it from an escaped "\\u0000".
        elif "\\u0000" in (item.data or "") and holds_nul(item.payload):
            item.reason = "a string holds U+0000 (\\u0000), which PostgreSQL's jsonb cannot store"
        else:
            self.stats.inc_value("validation/valid")
            return item
        item.state = INVALID
        self.stats.inc_value("validation/invalid")
        return item


class StoragePipeline:
    """Writes every outcome to ``DATABASE_URL`` (tables ``items`` and ``failures``).

    While the database is unavailable, outcomes are kept and their writes retried until
    it is back. The crawler hears of it (signals ``storage_unavailable``, then
    ``storage_available``), so that fetching can wait and spend no quota on outcomes that
    cannot be stored. A crawl stopped meanwhile drops what it could not write: those ids
    have no outcome, so the next run fetches them again.
    """

    def __init__(
        self,
        store: Store,
        stats: StatsCollector,
        *,
        max_batch: int = 1000,
        linger: float = 0.0,
        sleep: Callable[[float], Awaitable[None]] = scrapy_sleep,
        clock: Callable[[], float] = time.monotonic,
        signals: SignalManager | None = None,
    ) -> None:
        self.stats = stats
        self.signals = signals
        self.clock = clock
        self.outage_seconds = 0.0
        self.ledger = Ledger(store, sleep=sleep, clock=clock, listener=self)
        self.commit = GroupCommit(self._write, max_batch, linger=linger, gave_up=self.gave_up)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        storing = Job.of(crawler).storing
        try:
            store = open_store(storing.database_url)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        assert crawler.stats is not None
        return cls(
            store,
            crawler.stats,
            max_batch=storing.batch_size,
            linger=storing.linger,
            sleep=Waiter(partial(crawl_is_stopping, crawler)).sleep,
            signals=crawler.signals,
        )

    async def open_spider(self) -> None:
        await self.ledger.open()
        logger.info("Storing into %s", self.ledger.url)

    async def process_item(self, item: Outcome | Page) -> Outcome | Page:
        if isinstance(item, Page):
            return await self.store_page(item)
        try:
            try:
                await self.commit.add(item)
            except StorageRefused as exc:
                # Failed, not invalid: should the refusal have been passing, the next run
                # tries again.
                self.stats.inc_value("storage/refused")
                logger.warning("The database refused the outcome of id %s: %s", item.id, exc)
                item.state, item.data = FAILED, None
                item.reason = f"refused by the database: {exc}"
                await self.commit.add(item)
        except Unwritten as exc:
            # `gave_up` counts them all in one line: none per item.
            raise DropItem(f"{exc}; the next run fetches it again", log_level="DEBUG") from exc
        self.stats.inc_value(f"storage/{item.state}")
        return item

    async def store_page(self, page: Page) -> Page:
        """A listing page's outcomes, then its mark: the mark commits with the last of them
        (or after them), never before."""
        errors = await self.commit.add_all([*page.outcomes, page.mark])
        if any(isinstance(error, Unwritten) for error in errors):
            raise DropItem(
                "a listing page not written; the next run lists it again", log_level="DEBUG"
            )
        for outcome, error in zip(page.outcomes, errors, strict=False):
            if isinstance(error, StorageRefused):
                self.stats.inc_value("storage/refused")
                logger.warning("The database refused the outcome of id %s: %s", outcome.id, error)
                outcome.state, outcome.data = FAILED, None
                outcome.reason = f"refused by the database: {error}"
                await self.commit.add(outcome)
            elif error is not None:
                raise error
            self.stats.inc_value(f"storage/{outcome.state}")
        if errors[-1] is not None:
            raise errors[-1]
        return page

    async def _write(self, outcomes: list[Record]) -> None:
        started = self.clock()
        await self.ledger.write(outcomes)
        self._send(batch_written, size=len(outcomes), seconds=self.clock() - started)
        self.stats.inc_value("storage/batches")
        self.stats.max_value("storage/max_batch", len(outcomes))

    def outage_began(self, error: StorageUnavailable) -> None:
        self._send(storage_unavailable)
        self.stats.inc_value("storage/outages")
        logger.warning(
            "Database unavailable, so fetching is paused and writes are retried until it is "
            "back (outcomes waiting: %d): %s",
            self.commit.waiting,
            error,
        )

    def outage_ended(self, seconds: float) -> None:
        self.outage_seconds += seconds
        self.stats.set_value("storage/outage_seconds", round(self.outage_seconds, 3))
        logger.info(
            "Writing to %s again after %s (outcomes waiting: %d); fetching resumes",
            self.ledger.url,
            duration(seconds),
            self.commit.waiting,
        )
        self._send(storage_available)

    def gave_up(self, unwritten: int) -> None:
        self.stats.inc_value("storage/unwritten", unwritten)
        total = self.stats.get_value("storage/unwritten")
        if total == unwritten:
            logger.warning(
                "The crawl is stopping while %s is unreachable; outcomes not written: %d "
                "(the next run fetches them again)",
                self.ledger.url,
                unwritten,
            )
        else:
            # Answers to requests that were still in flight when the stop began.
            logger.info("More outcomes not written: %d (%d in all)", unwritten, total)

    async def close_spider(self) -> None:
        await self.commit.flush()
        await self.ledger.close()

    def _send(self, signal: object, **kwargs: Any) -> None:
        if self.signals is not None:
            self.signals.send_catch_log(signal=signal, **kwargs)
