"""Item pipelines: validation against the JSON Schema, then batched storage."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from jsonschema.exceptions import best_match
from jsonschema.validators import validator_for

from ingest.config import ConfigError, load_schema
from ingest.items import INVALID, STORED, Outcome
from ingest.ledger import Ledger
from ingest.storage import Record, open_store

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from typing import Self

    from scrapy.crawler import Crawler
    from scrapy.statscollectors import StatsCollector

logger = logging.getLogger(__name__)


class ValidationPipeline:
    """Checks every fetched payload against ``ITEM_SCHEMA``; a failure makes the
    outcome ``invalid``, with the validator's message and the payload kept."""

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
        if error is None:
            self.stats.inc_value("validation/valid")
            return item
        item.state = INVALID
        item.reason = f"schema: {error.message} (at {error.json_path})"
        self.stats.inc_value("validation/invalid")
        return item


class GroupCommit:
    """Collects records while a write is under way, then writes them all in one go.

    Each caller waits until its record is committed, so an id counts as done only
    once the database has it. At a trickle every record is written at once; under
    load the batches grow by themselves, up to ``max_batch``.
    """

    def __init__(self, write: Callable[[list[Record]], Awaitable[None]], max_batch: int) -> None:
        self.write = write
        self.max_batch = max_batch
        self._pending: list[tuple[Record, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None

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
                await self.write([record for record, _ in batch])
            except Exception as exc:
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
            else:
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)

    async def flush(self) -> None:
        while self._task is not None and not self._task.done():
            await self._task


class StoragePipeline:
    """Writes every outcome to ``DATABASE_URL`` (tables ``items`` and ``failures``)."""

    def __init__(self, ledger: Ledger, stats: StatsCollector, *, max_batch: int = 1000) -> None:
        self.ledger = ledger
        self.stats = stats
        self.commit = GroupCommit(self._write, max_batch)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        url = crawler.settings.get("DATABASE_URL")
        try:
            store = open_store(url)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        assert crawler.stats is not None
        return cls(
            Ledger(store), crawler.stats, max_batch=crawler.settings.getint("STORAGE_BATCH_SIZE")
        )

    async def open_spider(self) -> None:
        await self.ledger.open()
        logger.info("Storing into %s", self.ledger.store.url)

    async def process_item(self, item: Outcome) -> Outcome:
        record = Record(
            id=item.id,
            state=item.state,
            data=item.data,
            reason=item.reason,
            url=item.url,
            status=item.status,
            fetched_at=item.fetched_at,
        )
        await self.commit.add(record)
        self.stats.inc_value(f"storage/{item.state}")
        return item

    async def _write(self, records: list[Record]) -> None:
        await self.ledger.write(records)
        self.stats.inc_value("storage/batches")
        self.stats.max_value("storage/max_batch", len(records))

    async def close_spider(self) -> None:
        await self.commit.flush()
        await self.ledger.close()
