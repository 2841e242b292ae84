"""What the server's answers do, in one place: a refusal waits, teaches, is requeued or given up
on, and may stop the crawl; quota headers are followed; a 304 gives its token back; a success
steps the pace. Each change is told once, in the log and the stats."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from scrapy.utils.asyncio import CallLaterResult, call_later
from scrapy.utils.response import response_status_message

from ingest.backoff import exponential
from ingest.config.keys import KEY_META
from ingest.ratelimit.headers import Quota, quota_of, rate_limited, retry_after_seconds
from ingest.ratelimit.learning import lessons
from ingest.ratelimit.pacing.bucket import TokenBucket
from ingest.ratelimit.pacing.rates import Rate
from ingest.signals import limit_inferred
from ingest.stopping.endings import PAUSED, end_crawl

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.crawler import Crawler
    from scrapy.http import Response
    from scrapy.statscollectors import StatsCollector

    from ingest.ratelimit.backends import Backend

logger = logging.getLogger(__name__)

RETRIES_META = "ratelimit_retries"
SENT_META = "ratelimit_sent"
# Quota headers count in whole seconds: a reset this short says too little to act on.
RESET_RESOLUTION = 1.0
# A 429 that names no wait (no Retry-After, no quota's reset): the n-th in a row for a
# bucket pauses it BACKOFF_BASE * 2**(n-1) seconds, at most BACKOFF_MAX.
BACKOFF_BASE, BACKOFF_MAX = 1.0, 60.0


class Pauses:
    """Asks the backend to pause a bucket, and tells of it once per pause: a line when
    it begins, one when requests resume, the seconds paused in ``ratelimit/…`` stats.

    A pause longer than ``max_pause`` (RATELIMIT_MAX_PAUSE) is not waited out: the
    crawl stops, and says when to run the same command again.
    """

    def __init__(
        self,
        crawler: Crawler,
        backend: Backend,
        *,
        max_pause: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        assert crawler.stats is not None
        self.crawler, self.backend, self.stats = crawler, backend, crawler.stats
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


class Feedback:
    """Heeds each answer of the API for the bucket its request was booked in.

    A 429 (or a 403 with nothing remaining) pauses every request on that bucket until
    the time the server names (``Retry-After``; else the quota's reset; else a backoff
    that doubles with each 429 in a row), teaches the bucket what it can
    (:mod:`ingest.ratelimit.learning`), and goes back to the scheduler, to spend a token
    again when it is sent; after RATELIMIT_RETRY_TIMES of them in a row it is given up.
    A 503 with ``Retry-After`` pauses too. Quota headers are followed: nothing is spent
    when nothing is left, and an announced quota is adopted.
    """

    def __init__(
        self,
        crawler: Crawler,
        backend: Backend,
        pauses: Pauses,
        stats: StatsCollector,
        *,
        max_retries: int,
        count_304: bool = True,
        auto: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.crawler, self.backend, self.pauses, self.stats = crawler, backend, pauses, stats
        self.max_retries, self.count_304, self.auto = max_retries, count_304, auto
        self.clock = clock
        self._consecutive_429: dict[str, int] = {}

    async def answered(self, key: str, request: Request, response: Response) -> Request | Response:
        """The answer to ``request``, booked in the bucket ``key``: the answer itself, or the
        request again when it was refused for the rate and goes back to the queue."""
        sent_at = request.meta.get(SENT_META, -math.inf)
        headers, now = response.headers, self.clock()
        quota = quota_of(headers, now=now)
        if quota is not None:
            await self._follow_quota(key, quota, sent_at)
        wait = retry_after_seconds(headers.get("Retry-After"), now=now, date=headers.get("Date"))
        if rate_limited(response.status, quota):
            await self._refused(key, sent_at, response.status, quota, wait)
            return self._requeue(request, response)
        if response.status == 503 and wait is not None:
            await self.pauses.pause(key, wait, f"{response_status_message(503)}, Retry-After")
        elif response.status == 304:
            # Says nothing of the pace the API takes: no lesson. Free, its token comes back.
            if not self.count_304:
                await self.backend.run(key, TokenBucket.refund, sent_at)
        elif 200 <= response.status < 400:
            self._consecutive_429.pop(key, None)
            if await self.backend.run(key, lessons.succeeded):
                await self.pace(key, level=logging.DEBUG)
        return response

    async def _refused(
        self, key: str, sent_at: float, status: int, quota: Quota | None, wait: float | None
    ) -> None:
        """A refusal for the rate: learnt from, then one pause for the bucket."""
        if key in self.pauses.key_stats:
            self.stats.inc_value(f"{self.pauses.key_stats[key]}/429")
        lesson = await self.learn(key, sent_at, status, wait)
        if wait is not None and lesson.hold > wait:
            # A proxy's fixed Retry-After, shorter than the window the 429 showed.
            wait, why = lessons.held(wait, lesson), "Retry-After, and the limit inferred"
        elif wait is None and quota is not None and quota.exhausted and quota.reset:
            wait, why = quota.reset, "quota exhausted until its reset"
        elif wait is None:
            count = self._consecutive_429.get(key, 0) + 1
            self._consecutive_429[key] = count
            wait = exponential(count, base=BACKOFF_BASE, cap=BACKOFF_MAX)
            why = "no Retry-After: backing off"
        else:
            why = "Retry-After"
        await self.pauses.pause(key, wait, f"{response_status_message(status)}, {why}")

    async def _follow_quota(self, key: str, quota: Quota, sent_at: float) -> None:
        if quota.limit and quota.window:
            rate = Rate(quota.limit, quota.window)
            if await self.backend.run(key, TokenBucket.adopt, rate):
                logger.info("%s announces a quota of %s: pacing by it too", key, rate)
                await self.pace(key, "announced by the server")
        if quota.remaining is not None:  # as the server last said, for progress and metrics
            self.stats.set_value("ratelimit/quota_remaining", quota.remaining)
        if quota.reset is not None:
            self.stats.set_value("ratelimit/quota_reset_at", round(self.clock() + quota.reset, 3))
        if quota.remaining is None or quota.reset is None:
            return
        if quota.exhausted and quota.reset <= RESET_RESOLUTION:
            # "None left, back within a second" is all a bucket refilling faster than
            # once a second can say in whole seconds: the pace, not this, decides.
            return
        if quota.exhausted:
            await self.pauses.pause(
                key, quota.reset, "nothing remaining in the quota until its reset"
            )
        else:
            remaining, reset = quota.remaining, quota.reset
            await self.backend.run(key, TokenBucket.budget, remaining, reset, sent_at)

    def _requeue(self, request: Request, response: Response) -> Request | Response:
        retries = request.meta.get(RETRIES_META, 0) + 1
        if retries > self.max_retries:
            self.stats.inc_value("ratelimit/gave_up")
            logger.error("Gave up on %s: rate limited %d times", request.url, retries - 1)
            return response
        self.stats.inc_value("ratelimit/requeued")
        retry = request.replace(dont_filter=True)
        retry.meta[RETRIES_META] = retries
        retry.meta.pop(SENT_META, None)
        retry.meta.pop(KEY_META, None)
        return retry

    # -------------------------------------------------------------- telling

    async def learn(
        self, key: str, sent_at: float, status: int, retry_after: float | None
    ) -> lessons.Lesson:
        """Hands the refusal of the request sent at ``sent_at`` to the bucket; one log line
        each time the inferred limit changes, saying from what."""
        lesson = await self.backend.run(key, lessons.limited, sent_at, retry_after, self.clock())
        if not lesson.unexpected:
            return lesson
        self.stats.inc_value("ratelimit/429_unexpected")
        if lesson.inferred is None:
            await self.pace(key, f"learned from an unexpected {status}")
            return lesson
        found = lesson.inferred
        logger.info(
            "Inferred limit for %s: %s, from the %d to a request sent %.2fs earlier: "
            "%d sends in the %gs before it (%d unexpected so far)",
            self.pauses.names.get(key, key), lessons.explain(found), status, lesson.ago,
            found.sent, found.period, lesson.rejections,
        )  # fmt: skip
        await self.pace(key)
        return lesson

    async def pace(self, key: str, why: str = "", level: int = logging.INFO) -> None:
        """The pace now, and ``why`` (by default: the slowest limit inferred, or the ramp's
        search for one, or the climb back after 429s), in the log and the stats
        (``ratelimit/current_rate``, ``…/pace_source``, ``…/inferred_rate`` and
        ``…/inferred_limit``; per key with several keys)."""
        pace = await self.backend.run(key, TokenBucket.per_minute)
        prefix = self.pauses.key_stats.get(key, "ratelimit")
        if not why:
            why = "finding the limit" if self.auto else "probing up after 429s"
            slowest = lessons.slowest(await self.backend.run(key, lessons.inferred))
            if slowest is not None:
                rate, rejections = slowest
                why = f"inferred {rate} s from {rejections} x 429"
                self.stats.set_value(f"{prefix}/inferred_rate", round(60 * rate.per_second, 3))
                self.stats.set_value(f"{prefix}/inferred_limit", str(rate))
                if key not in self.pauses.key_stats:
                    self.crawler.signals.send_catch_log(signal=limit_inferred, rate=rate)
        if key in self.pauses.key_stats:
            self.stats.set_value(f"{prefix}/pace", round(pace, 3))
            key = self.pauses.names[key]
        else:
            self.stats.set_value("ratelimit/current_rate", round(pace, 3))
            self.stats.set_value("ratelimit/pace_source", why)
        logger.log(level, "Pace for %s now %.1f/min (%s)", key, pace, why)
