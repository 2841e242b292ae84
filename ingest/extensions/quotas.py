"""Long quotas kept in the database: a day's quota as the API last said it, an allowance spent."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from scrapy import signals
from scrapy.exceptions import NotConfigured

from ingest import signals as ingest_signals
from ingest.job import Job
from ingest.stopping.waiting import Stopping
from ingest.storage.base import CONFIGURED, SERVER, KeptQuota, StorageError
from ingest.storage.ledger import Ledger

if TYPE_CHECKING:
    from typing import Self

    from scrapy.crawler import Crawler

    from ingest.ratelimit.headers import Quota
    from ingest.ratelimit.pacing.rates import Rate

logger = logging.getLogger(__name__)


class KeptQuotas:
    """Keeps in the table ``quotas`` what ``scrapy ingest-plan`` and the next run need to
    know of long periods: each quota of an hour or more the API announces, as it last said
    it (``quota_heard``), and each allowance of RATELIMIT_RATE the crawl spent, with when
    the next request may go (``allowance_spent``).

    Writes run in a thread of their own, the last word of each quota at a time; one that
    fails (the database away) is skipped: the next answer says the quota again.
    """

    def __init__(
        self, ledger: Ledger, rates: tuple[Rate, ...], clock: Callable[[], float] = time.time
    ) -> None:
        self.ledger, self.clock = ledger, clock
        self.rates = {str(rate): rate for rate in rates}
        self.pending: dict[tuple[str, str], KeptQuota] = {}
        self._writing: asyncio.Future[None] | None = None

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        job = Job.of(crawler)
        if not job.pacing.enabled:
            raise NotConfigured("RATELIMIT_ENABLED is off")
        # Not retried through an outage: a quota said again later replaces it anyway.
        ledger = Ledger.from_url(job.storing.database_url, sleep=_no_retry)
        kept = cls(ledger, job.pacing.rates)
        crawler.signals.connect(kept.quota_heard, signal=ingest_signals.quota_heard)
        crawler.signals.connect(kept.allowance_spent, signal=ingest_signals.allowance_spent)
        crawler.signals.connect(kept.close, signal=signals.spider_closed)
        return kept

    def quota_heard(self, bucket: str, quota: Quota, at: float) -> None:
        reset_at = None if quota.reset is None else at + quota.reset
        name = quota.name or f"{quota.limit}/{quota.window:g}"
        self._keep(
            KeptQuota(
                bucket, name, SERVER, quota.limit, quota.window, quota.remaining, reset_at, at
            )
        )

    def allowance_spent(self, bucket: str, rate: str, until: float) -> None:
        known = self.rates.get(rate)
        limit, period = (known.limit, known.period) if known else (None, None)
        self._keep(KeptQuota(bucket, rate, CONFIGURED, limit, period, 0, until, self.clock()))

    def _keep(self, quota: KeptQuota) -> None:
        self.pending[(quota.bucket, quota.name)] = quota
        if self._writing is None or self._writing.done():
            self._writing = asyncio.ensure_future(self._write())

    async def _write(self) -> None:
        while self.pending:
            _, quota = self.pending.popitem()
            try:
                await self.ledger.keep_quota(quota)
            except (StorageError, Stopping) as exc:
                logger.debug("Quota %s of %s not kept: %s", quota.name, quota.bucket, exc)

    async def close(self) -> None:
        if self._writing is not None:
            await self._writing
        await self._write()
        await self.ledger.close()


async def _no_retry(seconds: float) -> None:
    raise Stopping(seconds)
