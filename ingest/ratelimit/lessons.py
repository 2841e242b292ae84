"""What the answers taught the rate limiter, told: pace and inferred limits, in log and stats."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ingest.ratelimit import auto
from ingest.ratelimit.bucket import TokenBucket

if TYPE_CHECKING:
    from scrapy.statscollectors import StatsCollector

    from ingest.ratelimit.backends import Backend
    from ingest.ratelimit.pauses import Pauses

logger = logging.getLogger(__name__)


class Lessons:
    """Hands an unexpected 429 to the bucket, and tells what changed: one log line each
    time the inferred limit changes, saying from what; the pace and why, in the stats
    (``ratelimit/current_rate``, ``ratelimit/pace_source``, ``ratelimit/inferred_rate``
    and ``…/inferred_limit``; per key with several keys) and the log."""

    def __init__(
        self, backend: Backend, stats: StatsCollector, pauses: Pauses, *, auto: bool
    ) -> None:
        self.backend, self.stats, self.pauses, self.auto = backend, stats, pauses, auto

    async def limited(
        self, key: str, sent_at: float, status: int, retry_after: float | None, epoch: float
    ) -> None:
        """A 429 (or 403 with nothing left) to the request sent at ``sent_at``."""
        lesson = await self.backend.run(key, TokenBucket.limited, sent_at, retry_after, epoch)
        if not lesson.unexpected:
            return
        self.stats.inc_value("ratelimit/429_unexpected")
        if lesson.inferred is None:
            await self.pace(key, f"learned from an unexpected {status}")
            return
        found = lesson.inferred
        logger.info(
            "Inferred limit for %s: %s, from the %d to a request sent %.2fs earlier: "
            "%d sends in the %gs before it (%d unexpected so far)",
            self.pauses.names.get(key, key), auto.explain(found), status, lesson.ago,
            found.sent, found.period, lesson.rejections,
        )  # fmt: skip
        await self.pace(key)

    async def pace(self, key: str, why: str = "", level: int = logging.INFO) -> None:
        """The pace now, and ``why`` (by default: the slowest limit inferred, or the
        ramp's search for one, or the climb back after 429s)."""
        pace = await self.backend.run(key, TokenBucket.per_minute)
        prefix = self.pauses.key_stats.get(key, "ratelimit")
        if not why:
            why = "finding the limit" if self.auto else "probing up after 429s"
            slowest = auto.slowest(await self.backend.run(key, auto.inferred))
            if slowest is not None:
                rate, rejections = slowest
                why = f"inferred {rate} s from {rejections} x 429"
                self.stats.set_value(f"{prefix}/inferred_rate", round(60 * rate.per_second, 3))
                self.stats.set_value(f"{prefix}/inferred_limit", str(rate))
        if key in self.pauses.key_stats:
            self.stats.set_value(f"{prefix}/pace", round(pace, 3))
            key = self.pauses.names[key]
        else:
            self.stats.set_value("ratelimit/current_rate", round(pace, 3))
            self.stats.set_value("ratelimit/pace_source", why)
        logger.log(level, "Pace for %s now %.1f/min (%s)", key, pace, why)
