"""Group commit: outcomes written in batches as they come; one the database refuses, alone."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from scrapy.utils.asyncio import sleep as scrapy_sleep

from ingest.stopping.waiting import Stopping
from ingest.storage.base import Record, StorageUnavailable

Entry = tuple[Record, asyncio.Future[None]]


class Unwritten(Exception):
    """The crawl stopped while the database was unavailable: the outcome was not written."""


class GroupCommit:
    """Collects outcomes while a write is under way, then writes them all in one go.

    Each caller waits until its outcome is committed, so an id counts as done only
    once the database has it. A write waits ``linger`` seconds for more outcomes to
    join it, unless ``max_batch`` are already waiting; while it runs, the next
    batch grows by itself. (Without a linger, every outcome of a steady trickle is a
    transaction of its own, and a thread hand-off each way.)

    ``write`` waits out database outages itself (`Ledger.write`). Should it raise
    :class:`~ingest.stopping.waiting.Stopping` instead, every outcome not yet written fails with
    :class:`Unwritten`, and ``gave_up`` is told how many. A write the database refuses
    for what the outcomes hold is split in halves until the culprit is alone: only its
    caller gets the error. `StorageUnavailable` says nothing of the outcomes: a batch
    failing with it is not split, and each of its callers gets the error.
    """

    def __init__(
        self,
        write: Callable[[list[Record]], Awaitable[None]],
        max_batch: int,
        *,
        linger: float = 0.0,
        sleep: Callable[[float], Awaitable[None]] = scrapy_sleep,
        gave_up: Callable[[int], None] | None = None,
    ) -> None:
        self.write, self.max_batch, self.gave_up = write, max_batch, gave_up
        # For the linger only, which a stop must not cut short: not the crawl's Waiter.
        self.linger, self.sleep = linger, sleep
        self._pending: list[Entry] = []
        self._batch: list[Entry] = []
        self._task: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        """Outcomes added and not written yet (nor failed): in the write under way, or next."""
        return sum(not done.done() for _, done in self._batch) + len(self._pending)

    async def add(self, outcome: Record) -> None:
        """Return once ``outcome`` is committed; raise what kept it from being written."""
        (error,) = await self.add_all([outcome])
        if error is not None:
            raise error

    async def add_all(self, records: list[Record]) -> list[BaseException | None]:
        """Add ``records`` together, in order; return once each is committed or failed,
        with what kept each from being written (None: committed)."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[None]] = []
        for record in records:
            futures.append(loop.create_future())
            self._pending.append((record, futures[-1]))
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._drain())
        return list(await asyncio.gather(*futures, return_exceptions=True))

    async def flush(self) -> None:
        """Return once every outcome added so far is written, or has failed."""
        while self._task is not None and not self._task.done():
            await self._task

    async def _drain(self) -> None:
        while self._pending:
            if self.linger and len(self._pending) < self.max_batch:
                await self.sleep(self.linger)
            self._batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            try:
                await self._commit(self._batch)
            except Stopping:
                left = [done for _, done in self._batch + self._pending if not done.done()]
                self._pending.clear()
                for done in left:
                    done.set_exception(Unwritten("not written: the database is unreachable"))
                if self.gave_up is not None:
                    self.gave_up(len(left))
            finally:
                self._batch = []

    async def _commit(self, batch: list[Entry]) -> None:
        try:
            await self.write([outcome for outcome, _ in batch])
        except Stopping:
            raise
        except StorageUnavailable as exc:
            _settle(batch, exc)
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch, exc)
                return
            half = len(batch) // 2
            # In order: the outcomes of one id are applied as they came.
            await self._commit(batch[:half])
            await self._commit(batch[half:])
        else:
            _settle(batch, None)


def _settle(batch: list[Entry], error: Exception | None) -> None:
    for _, done in batch:
        if done.done():
            continue
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)
