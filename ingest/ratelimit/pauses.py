"""Pauses the server imposes: taken in the bucket, told in the log and stats, or too long."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from scrapy.utils.asyncio import CallLaterResult, call_later

from ingest.endings import PAUSED, end_crawl
from ingest.ratelimit.bucket import TokenBucket

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.statscollectors import StatsCollector

    from ingest.ratelimit.backends import Backend

logger = logging.getLogger(__name__)


class Pauses:
    """Asks the backend to pause an API, and tells of it once per pause: a line when
    it begins, one when requests resume, the seconds paused in ``ratelimit/…`` stats.

    A pause longer than ``max_pause`` (RATELIMIT_MAX_PAUSE) is not waited out: the
    crawl stops, and says when to run the same command again.
    """

    def __init__(
        self,
        crawler: Crawler,
        backend: Backend,
        stats: StatsCollector,
        *,
        max_pause: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.crawler, self.backend, self.stats = crawler, backend, stats
        self.max_pause, self.clock = max_pause, clock
        self.paused_seconds = 0.0
        # Buckets of one key among several: how to name each, and its own seconds paused.
        self.names: dict[str, str] = {}
        self.key_stats: dict[str, str] = {}
        self.key_paused: dict[str, float] = {}
        self._resume_log: dict[str, CallLaterResult] = {}
        self.stopping = False

    async def pause(self, key: str, seconds: float, why: str) -> None:
        pause = await self.backend.run(key, TokenBucket.pause, seconds)
        if pause.remaining <= 0:
            return
        # One key of several paused for long is no reason to stop: the others go on,
        # and the crawl stops only when the key that could send soonest is that far off.
        if key not in self.key_stats and self.too_long(key, pause.remaining, why):
            return
        name = self.names.get(key, key)
        if pause.started:
            self.stats.inc_value("ratelimit/pauses")
            logger.info("Pausing requests to %s for %.1fs (%s)", name, pause.remaining, why)
        self.paused_seconds += pause.added
        self.stats.set_value("ratelimit/paused_seconds", round(self.paused_seconds, 3))
        self.stats.set_value("ratelimit/paused_until", round(self.clock() + pause.remaining, 3))
        if key in self.key_stats:
            self.key_paused[key] = self.key_paused.get(key, 0.0) + pause.added
            paused = round(self.key_paused[key], 3)
            self.stats.set_value(f"{self.key_stats[key]}/paused_seconds", paused)
        if pause.added > 0:
            previous = self._resume_log.pop(key, None)
            if previous:
                previous.cancel()
            self._resume_log[key] = call_later(pause.remaining, self._log_resume, key)

    def _log_resume(self, key: str) -> None:
        self._resume_log.pop(key, None)
        logger.info("Resuming requests to %s, paced", self.names.get(key, key))

    def too_long(self, key: str, seconds: float, why: str) -> bool:
        """True, and the crawl stopping, when ``seconds`` is more than RATELIMIT_MAX_PAUSE."""
        if seconds <= self.max_pause:
            return False
        if not self.stopping:
            self.stopping = True
            resume_at = datetime.fromtimestamp(self.clock() + seconds, tz=UTC)
            self.stats.set_value("ratelimit/resume_after", resume_at.isoformat(timespec="seconds"))
            logger.warning(
                "%s asks to wait %.0fs (%s), more than RATELIMIT_MAX_PAUSE=%gs: stopping. "
                "Run the same command again after %s to continue.",
                key, seconds, why, self.max_pause, resume_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
            )  # fmt: skip
            end_crawl(self.crawler, PAUSED)
        return True
