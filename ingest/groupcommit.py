"""Group commit: records written in batches as they come, and kept through database outages."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from typing import TYPE_CHECKING, Protocol

import psycopg
from scrapy.utils.asyncio import sleep as scrapy_sleep

from ingest.stopping import Stopping
from ingest.storage import Record, StorageError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

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
    once the database has it. A write waits ``linger`` seconds for more records to
    join it, unless ``max_batch`` are already waiting; while it runs, the next
    batch grows by itself. (Without a linger, every record of a steady trickle is a
    transaction of its own, and a thread hand-off each way.)

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
        linger: float = 0.0,
        reconnect: Callable[[], Awaitable[None]] | None = None,
        sleep: Callable[[float], Awaitable[None]] = scrapy_sleep,
        clock: Callable[[], float] = time.monotonic,
        backoff: Callable[[int], float] = outage_backoff,
        listener: OutageListener | None = None,
    ) -> None:
        self.write = write
        self.max_batch = max_batch
        self.linger = linger
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
            if self.linger and len(self._pending) < self.max_batch:
                # Not ``self.sleep``: a stop must not cut this one short.
                await asyncio.sleep(self.linger)
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
