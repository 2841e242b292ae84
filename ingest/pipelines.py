"""Item pipelines: schema validation, then batched storage that waits out database outages."""

from __future__ import annotations

import hashlib
import json
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

# How the reason of a payload the schema refused begins.
SCHEMA_REASON = "schema:"
# Invalid ids checked again at once, when the schema changed.
RECHECK_CHUNK = 500


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


def schema_digest(schema: Any) -> str:
    """A short name for a schema's content: an invalid row keeps the one it failed."""
    text = json.dumps(schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Validator:
    """Why a payload is invalid against ``ITEM_SCHEMA``, or None when it is valid.

    A payload holding U+0000 is invalid too: PostgreSQL's jsonb cannot store it, and the
    same payload ends in the same state whichever database is behind ``DATABASE_URL``.
    """

    def __init__(self, schema: Any) -> None:
        self.validator = validator_for(schema)(schema)
        self.digest = schema_digest(schema)

    def reason(self, payload: Any, data: str | None) -> str | None:
        error = best_match(self.validator.iter_errors(payload))
        if error is not None:
            return f"{SCHEMA_REASON} {error.message} (at {error.json_path})"
        # JSON can spell U+0000 only as this escape (a raw NUL is not JSON): the text test
        # spares the walk to nearly every payload; the walk tells it from an escaped "\\u0000".
        if "\\u0000" in (data or "") and holds_nul(payload):
            return "a string holds U+0000 (\\u0000), which PostgreSQL's jsonb cannot store"
        return None


class ValidationPipeline:
    """Checks every fetched payload against ``ITEM_SCHEMA``; a failure makes the
    outcome ``invalid``, with the validator's message, the payload and the schema's
    digest kept (a later schema checks it again, see :meth:`StoragePipeline.revalidate`)."""

    def __init__(self, schema: Any, stats: StatsCollector) -> None:
        self.validator = Validator(schema)
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
        reason = self.validator.reason(item.payload, item.data)
        if reason is None:
            self.stats.inc_value("validation/valid")
            return item
        item.state, item.reason = INVALID, reason
        if reason.startswith(SCHEMA_REASON):
            item.schema = self.validator.digest
        self.stats.inc_value("validation/invalid")
        return item


class StoragePipeline:
    """Writes every outcome to ``DATABASE_URL`` (tables ``items`` and ``failures``).

    While the database is unavailable, outcomes are kept and their writes retried until
    it is back. The crawler hears of it (signals ``storage_unavailable``, then
    ``storage_available``), so that fetching can wait and spend no quota on outcomes that
    cannot be stored. A crawl stopped meanwhile drops what it could not write: those ids
    have no outcome, so the next run fetches them again.

    With ``validator``, the ids another schema found invalid are checked again first, from
    their kept payloads (:meth:`revalidate`).
    """

    def __init__(
        self,
        store: Store,
        stats: StatsCollector,
        *,
        validator: Validator | None = None,
        max_batch: int = 1000,
        linger: float = 0.0,
        sleep: Callable[[float], Awaitable[None]] = scrapy_sleep,
        clock: Callable[[], float] = time.monotonic,
        signals: SignalManager | None = None,
    ) -> None:
        self.stats, self.validator = stats, validator
        self.signals = signals
        self.clock = clock
        self.outage_seconds = 0.0
        self.ledger = Ledger(store, sleep=sleep, clock=clock, listener=self)
        self.commit = GroupCommit(self._write, max_batch, linger=linger, gave_up=self.gave_up)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        job = Job.of(crawler)
        storing = job.storing
        try:
            store = open_store(storing.database_url)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        assert crawler.stats is not None
        return cls(
            store,
            crawler.stats,
            validator=Validator(job.schema),
            max_batch=storing.batch_size,
            linger=storing.linger,
            sleep=Waiter(partial(crawl_is_stopping, crawler)).sleep,
            signals=crawler.signals,
        )

    async def open_spider(self) -> None:
        await self.ledger.open()
        logger.info("Storing into %s", self.ledger.url)
        await self.revalidate()

    async def revalidate(self) -> int:
        """The ids another schema found invalid (their rows keep its digest), checked again
        from their kept payloads, without a request: those that pass are stored as they
        were received then. Returns how many were stored."""
        if self.validator is None:
            return 0
        digest, after, checked, stored = self.validator.digest, "", 0, []
        while kept := await self.ledger.kept_invalid(digest, after, RECHECK_CHUNK):
            after, passed, still = kept[-1].id, [], []
            for row in kept:
                payload = json.loads(row.data)
                reason = self.validator.reason(payload, row.data)
                if reason is None:
                    passed.append(
                        Outcome(row.id, STORED, row.url or "", row.status, data=row.data,
                                payload=payload, fetched_at=row.fetched_at)
                    )  # fmt: skip
                else:
                    still.append((row.id, reason))
            if passed:
                await self.ledger.write(passed)
            if still:
                await self.ledger.checked(digest, still)
            checked += len(kept)
            stored += [outcome.id for outcome in passed]
        if checked:
            self.stats.inc_value("validation/revalidated", checked)
            self.stats.inc_value("validation/revalidated_stored", len(stored))
            logger.info(
                "The schema changed: %d ids kept as invalid were checked again, without a "
                "request; %d pass it and are stored", checked, len(stored),
            )  # fmt: skip
        return len(stored)

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
