"""Item pipelines: schema validation, then batched storage that waits out database outages."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

import psycopg
from jsonschema.exceptions import best_match
from jsonschema.validators import validator_for
from scrapy.exceptions import DropItem
from scrapy.utils.asyncio import sleep as scrapy_sleep

from ingest.config import ConfigError, load_schema
from ingest.items import FAILED, INVALID, STORED, Outcome
from ingest.ledger import Ledger
from ingest.progress import duration
from ingest.stopping import Stopping, Waiter, crawl_is_stopping
from ingest.storage import Record, StorageError, open_store

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from typing import Self

    from scrapy.crawler import Crawler
    from scrapy.statscollectors import StatsCollector

logger = logging.getLogger(__name__)

OUTAGE_BACKOFF_BASE = 0.5  # seconds before the first retry of a write the database did not take
OUTAGE_BACKOFF_MAX = 30.0

# What the databases raise about the records themselves, as opposed to about being reachable:
# a value the column refuses (jsonb and "\u0000" is a DataError), a broken constraint, a limit
# a value exceeds (an id too long for the primary key's index is a ProgramLimitExceeded).
# Retrying these as they are would fail forever.
REFUSALS: tuple[type[BaseException], ...] = (
    psycopg.DataError,
    psycopg.IntegrityError,
    psycopg.ProgrammingError,
    psycopg.NotSupportedError,
    psycopg.errors.ProgramLimitExceeded,
    sqlite3.DataError,
    sqlite3.IntegrityError,
    sqlite3.ProgrammingError,
    sqlite3.InterfaceError,
)


def is_outage(exc: BaseException) -> bool:
    """True when a write failed because the database is unreachable or unavailable (lost
    connection, shutdown, refused connection, full disk, locks): the same write will succeed
    once it is back. False when the database refused the records themselves."""
    return isinstance(exc, StorageError) and not isinstance(exc.__cause__, REFUSALS)


def outage_backoff(
    attempt: int, *, base: float = OUTAGE_BACKOFF_BASE, cap: float = OUTAGE_BACKOFF_MAX
) -> float:
    """Seconds to wait before retry ``attempt`` (1, 2, …): ``base`` doubling up to ``cap``."""
    # The exponent is bounded: a day-long outage must not overflow the float.
    return min(cap, base * 2.0 ** min(attempt - 1, 64))


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
        return cls(load_schema(crawler.settings.get("ITEM_SCHEMA")), crawler.stats)

    def process_item(self, item: Outcome) -> Outcome:
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


class Unwritten(Exception):
    """The crawl stopped while the database was unreachable: the outcome was not written."""


class OutageListener(Protocol):
    """What a `GroupCommit` tells about a database outage, as it happens."""

    def outage_began(self, error: Exception, waiting: int) -> None:
        """The first write failed for want of the database; ``waiting`` outcomes are kept."""

    def outage_ended(self, seconds: float, waiting: int) -> None:
        """A write went through after ``seconds``; ``waiting`` outcomes had been kept."""

    def gave_up(self, unwritten: int) -> None:
        """The crawl is stopping during the outage: ``unwritten`` outcomes were not written."""


class GroupCommit:
    """Collects records while a write is under way, then writes them all in one go.

    Each caller waits until its record is committed, so an id counts as done only
    once the database has it. At a trickle every record is written at once; under
    load the batches grow by themselves, up to ``max_batch``.

    A write that fails because the database is unavailable (`is_outage`) keeps its
    batch and is retried, reconnecting first, after ``backoff(attempt)`` seconds, until
    it goes through; ``sleep`` raising :class:`Stopping` ends the retries, and every
    record not yet written fails with :class:`Unwritten`. A write the database refuses
    for what the records hold is split in halves until the culprit is alone: only its
    caller gets the error.
    """

    def __init__(
        self,
        write: Callable[[list[Record]], Awaitable[None]],
        max_batch: int,
        *,
        reconnect: Callable[[], Awaitable[None]] | None = None,
        sleep: Callable[[float], Awaitable[None]] = scrapy_sleep,
        clock: Callable[[], float] = time.monotonic,
        backoff: Callable[[int], float] = outage_backoff,
        listener: OutageListener | None = None,
    ) -> None:
        self.write = write
        self.max_batch = max_batch
        self.reconnect = reconnect
        self.sleep = sleep
        self.clock = clock
        self.backoff = backoff
        self.listener = listener
        self._pending: list[tuple[Record, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None
        self._down_since: float | None = None

    async def add(self, record: Record) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((record, done))
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._drain())
        await done

    async def _drain(self) -> None:
        while self._pending:
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            try:
                await self._commit(batch)
            except Stopping:
                left = [done for _, done in batch + self._pending if not done.done()]
                self._pending.clear()
                for done in left:
                    done.set_exception(Unwritten("not written: the database is unreachable"))
                if self.listener is not None:
                    self.listener.gave_up(len(left))

    async def _commit(self, batch: list[tuple[Record, asyncio.Future[None]]]) -> None:
        try:
            await self._write_until_done([record for record, _ in batch])
        except Stopping:
            raise
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch, exc)
                return
            half = len(batch) // 2
            # In order: the records of one id are applied as they came.
            await self._commit(batch[:half])
            await self._commit(batch[half:])
        else:
            _settle(batch, None)

    async def _write_until_done(self, records: list[Record]) -> None:
        attempt = 0
        while True:
            try:
                if attempt and self.reconnect is not None:
                    await self.reconnect()
                await self.write(records)
            except Exception as exc:
                if not is_outage(exc):
                    self._back(len(records))
                    raise
                attempt += 1
                if self._down_since is None:
                    self._down_since = self.clock()
                    if self.listener is not None:
                        self.listener.outage_began(exc, len(records) + len(self._pending))
                delay = self.backoff(attempt)
                logger.debug("Write attempt %d failed, next in %.1fs: %s", attempt, delay, exc)
                await self.sleep(delay)
            else:
                self._back(len(records))
                return

    def _back(self, waiting: int) -> None:
        """The database answered: an outage, if there was one, is over."""
        if self._down_since is None:
            return
        seconds = self.clock() - self._down_since
        self._down_since = None
        if self.listener is not None:
            self.listener.outage_ended(seconds, waiting + len(self._pending))

    async def flush(self) -> None:
        while self._task is not None and not self._task.done():
            await self._task


def _settle(batch: list[tuple[Record, asyncio.Future[None]]], error: Exception | None) -> None:
    for _, done in batch:
        if done.done():
            continue
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)


def _pause_fetching(crawler: Crawler) -> None:
    crawler.engine.pause()


def _resume_fetching(crawler: Crawler) -> None:
    engine = crawler.engine
    engine.unpause()
    # unpause() only clears a flag: without a nudge, nothing would be sent before the
    # engine's next heartbeat, up to 5 s later. The slot is private; there is no public call.
    slot = getattr(engine, "_slot", None)
    if slot is not None:
        slot.nextcall.schedule()


class StoragePipeline:
    """Writes every outcome to ``DATABASE_URL`` (tables ``items`` and ``failures``).

    While the database is unavailable, outcomes are kept and their writes retried until
    it is back, and fetching is paused so that no quota is spent on items that cannot be
    stored. A crawl stopped meanwhile drops what it could not write: those ids have no
    outcome, so the next run fetches them again.
    """

    def __init__(
        self,
        ledger: Ledger,
        stats: StatsCollector,
        *,
        max_batch: int = 1000,
        sleep: Callable[[float], Awaitable[None]] = scrapy_sleep,
        pause: Callable[[], None] = lambda: None,
        resume: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ledger = ledger
        self.stats = stats
        self.pause, self.resume = pause, resume
        self.outage_seconds = 0.0
        self.commit = GroupCommit(
            self._write,
            max_batch,
            reconnect=self.ledger.open,
            sleep=sleep,
            clock=clock,
            listener=self,
        )

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        url = crawler.settings.get("DATABASE_URL")
        try:
            store = open_store(url)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        assert crawler.stats is not None
        return cls(
            Ledger(store),
            crawler.stats,
            max_batch=crawler.settings.getint("STORAGE_BATCH_SIZE"),
            sleep=Waiter(partial(crawl_is_stopping, crawler)).sleep,
            pause=partial(_pause_fetching, crawler),
            resume=partial(_resume_fetching, crawler),
        )

    async def open_spider(self) -> None:
        await self.ledger.open()
        logger.info("Storing into %s", self.ledger.store.url)

    async def process_item(self, item: Outcome) -> Outcome:
        try:
            try:
                await self.commit.add(_record(item))
            except StorageError as exc:
                # Refused for what it holds (outages are retried, never raised here). Failed,
                # not invalid: should the refusal have been passing, the next run tries again.
                self.stats.inc_value("storage/refused")
                logger.warning("The database refused the outcome of id %s: %s", item.id, exc)
                item.state, item.data = FAILED, None
                item.reason = f"refused by the database: {exc}"
                await self.commit.add(_record(item))
        except Unwritten as exc:
            # `gave_up` counts them all in one line: none per item.
            raise DropItem(f"{exc}; the next run fetches it again", log_level="DEBUG") from exc
        self.stats.inc_value(f"storage/{item.state}")
        return item

    async def _write(self, records: list[Record]) -> None:
        await self.ledger.write(records)
        self.stats.inc_value("storage/batches")
        self.stats.max_value("storage/max_batch", len(records))

    def outage_began(self, error: Exception, waiting: int) -> None:
        self.pause()
        self.stats.inc_value("storage/outages")
        logger.warning(
            "Database unavailable, so fetching is paused and writes are retried until it is "
            "back (outcomes waiting: %d): %s",
            waiting,
            error,
        )

    def outage_ended(self, seconds: float, waiting: int) -> None:
        self.outage_seconds += seconds
        self.stats.set_value("storage/outage_seconds", round(self.outage_seconds, 3))
        logger.info(
            "Writing to %s again after %s (outcomes waiting: %d); fetching resumes",
            self.ledger.store.url,
            duration(seconds),
            waiting,
        )
        self.resume()

    def gave_up(self, unwritten: int) -> None:
        self.stats.inc_value("storage/unwritten", unwritten)
        total = self.stats.get_value("storage/unwritten")
        if total == unwritten:
            logger.warning(
                "The crawl is stopping while %s is unreachable; outcomes not written: %d "
                "(the next run fetches them again)",
                self.ledger.store.url,
                unwritten,
            )
        else:
            # Answers to requests that were still in flight when the stop began.
            logger.info("More outcomes not written: %d (%d in all)", unwritten, total)

    async def close_spider(self) -> None:
        await self.commit.flush()
        await self.ledger.close()


def _record(item: Outcome) -> Record:
    return Record(
        id=item.id,
        state=item.state,
        data=item.data,
        reason=item.reason,
        url=item.url,
        status=item.status,
        fetched_at=item.fetched_at,
    )
