"""The rate limiter in front of the API: requests sent when the bucket allows, answers heeded."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from scrapy import signals
from scrapy.exceptions import NotConfigured
from scrapy.utils.response import response_status_message

from ingest.api import origin
from ingest.backoff import exponential
from ingest.ratelimit.backends import Backend, open_backend
from ingest.ratelimit.bucket import TokenBucket
from ingest.ratelimit.opening import Opening
from ingest.ratelimit.pauses import Pauses
from ingest.ratelimit.quota import Quota, quota_of, rate_limited, retry_after_seconds
from ingest.ratelimit.rates import Rate, parse_rates
from ingest.stopping import Stopping, Waiter, crawl_is_stopping, give_back

if TYPE_CHECKING:
    from typing import Self

    from scrapy import Request
    from scrapy.crawler import Crawler
    from scrapy.http import Response
    from scrapy.statscollectors import StatsCollector

logger = logging.getLogger(__name__)

RETRIES_META = "ratelimit_retries"
SENT_META = "ratelimit_sent"
# Quota headers count in whole seconds: a reset this short says too little to act on.
RESET_RESOLUTION = 1.0


class RateLimitMiddleware:
    """Sends each request only when the token bucket allows it; heeds what the server says.

    Only the waiting request waits (an asyncio sleep, never the reactor). A 429 (or
    a 403 with nothing remaining), or a 503 with ``Retry-After``, pauses every
    request to that API until the time the server names; the rate-limited request
    goes back to the scheduler and spends a token again when it is sent. Quota
    headers (``X-RateLimit-*``, ``RateLimit``/``RateLimit-Policy``) are followed:
    nothing is spent when nothing is left, and an announced quota is adopted. A 429
    that the rates did not predict lowers the pace, which then probes back up.
    """

    def __init__(
        self,
        crawler: Crawler,
        backend: Backend,
        pauses: Pauses,
        *,
        max_retries: int,
        stats: StatsCollector,
        waiter: Waiter,
        burst: int = 1,
        count_304: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.crawler, self.backend, self.pauses = crawler, backend, pauses
        self.max_retries = max_retries
        self.stats = stats
        self.waiter = waiter
        self.burst, self.count_304 = burst, count_304
        self.clock = clock
        self.opening = Opening(waiter.is_stopping, waiter.step) if burst == 1 else None
        self._answered: set[str] = set()
        self._consecutive_429: dict[str, int] = {}

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        s = crawler.settings
        if not s.getbool("RATELIMIT_ENABLED"):
            raise NotConfigured("RATELIMIT_ENABLED is off")
        assert crawler.stats is not None
        rates = parse_rates(s.get("RATELIMIT_RATE"))
        burst = s.getint("RATELIMIT_BURST")
        backend = open_backend(
            s.get("RATELIMIT_BACKEND"), rates, burst=burst, redis_url=s.get("REDIS_URL")
        )
        pauses = Pauses(
            crawler, backend, crawler.stats, max_pause=s.getfloat("RATELIMIT_MAX_PAUSE")
        )
        middleware = cls(
            crawler,
            backend,
            pauses,
            max_retries=s.getint("RATELIMIT_RETRY_TIMES"),
            stats=crawler.stats,
            waiter=Waiter(lambda: crawl_is_stopping(crawler)),
            burst=burst,
            count_304=s.getbool("RATELIMIT_COUNT_304"),
        )
        crawler.stats.set_value("ratelimit/current_rate", round(60 * rates[0].per_second, 3))
        logger.info(
            "Rate limit %s, burst %d, kept in %s",
            ",".join(map(str, rates)), burst, s.get("RATELIMIT_BACKEND"),
        )  # fmt: skip
        crawler.signals.connect(middleware.close, signal=signals.spider_closed)
        return middleware

    async def close(self) -> None:
        await self.backend.close()

    # -------------------------------------------------------------- sending

    async def process_request(self, request: Request) -> None:
        key = origin(request)
        try:
            if self.opening is not None and key not in self._answered:
                await self.opening.wait(key, request)
            request.meta[SENT_META] = await self._send_slot(key)
        except Stopping:
            if self.opening is not None:
                self.opening.opened(key, by=request)
            raise give_back(self.crawler, request) from None

    async def _send_slot(self, key: str) -> float:
        """Wait for a slot in the bucket, and return when the request goes."""
        while True:
            slot = await self.backend.run(key, TokenBucket.reserve)
            if self.pauses.too_long(key, slot.imposed, "the shared bucket is paused"):
                # Paused by an answer another worker got, or a quota spent for longer
                # than anyone should wait: the crawl is stopping.
                raise Stopping(slot.imposed)
            if slot.delay > 0:
                await self.waiter.sleep(slot.delay, precise=slot.precise)
            confirmed = await self.backend.run(key, TokenBucket.confirm, slot)
            while confirmed.wait:
                await self.waiter.sleep(confirmed.wait, precise=slot.precise)
                confirmed = await self.backend.run(key, TokenBucket.confirm, slot)
            if confirmed.wait is not None:
                return confirmed.at
            # A pause or a new quota came while this request waited: book again.

    # -------------------------------------------------------------- listening

    async def process_response(self, request: Request, response: Response) -> Request | Response:
        key = origin(request)
        if key not in self._answered:
            await self._first_answer(key)
        sent_at = request.meta.get(SENT_META, -math.inf)
        headers, now = response.headers, self.clock()
        quota = quota_of(headers, now=now)
        if quota is not None:
            await self._follow_quota(key, quota, sent_at)
        wait = retry_after_seconds(headers.get("Retry-After"), now=now, date=headers.get("Date"))
        if rate_limited(response.status, quota):
            await self._learn(key, sent_at, response.status)
            if wait is None and quota is not None and quota.exhausted and quota.reset:
                wait, why = quota.reset, "quota exhausted until its reset"
            elif wait is None:
                count = self._consecutive_429.get(key, 0) + 1
                self._consecutive_429[key] = count
                wait, why = exponential(count, base=1.0, cap=60.0), "no Retry-After: backing off"
            else:
                why = "Retry-After"
            status = response_status_message(response.status)
            await self.pauses.pause(key, wait, f"{status}, {why}")
            return self._requeue(request, response)
        if response.status == 503 and wait is not None:
            await self.pauses.pause(key, wait, f"{response_status_message(503)}, Retry-After")
        elif response.status == 304:
            # Says nothing of the pace the API takes: no lesson. Free, its token comes back.
            if not self.count_304:
                await self.backend.run(key, TokenBucket.refund, sent_at)
        elif 200 <= response.status < 400:
            self._consecutive_429.pop(key, None)
            if await self.backend.run(key, TokenBucket.succeeded):
                await self._report_pace(key, "probing up after 429s", level=logging.DEBUG)
        return response

    def process_exception(self, request: Request, exception: Exception) -> None:
        if self.opening is not None:
            self.opening.opened(origin(request), by=request)

    async def _first_answer(self, key: str) -> None:
        """The first request to an API also opened the connection, so it reached the
        server later than a request on a warm connection will: the second one is paced
        from this answer, not from the first one's send."""
        self._answered.add(key)
        if self.opening is not None:
            await self.backend.run(key, TokenBucket.restart)
            self.opening.opened(key)

    async def _follow_quota(self, key: str, quota: Quota, sent_at: float) -> None:
        if quota.limit and quota.window:
            rate = Rate(quota.limit, quota.window)
            if await self.backend.run(key, TokenBucket.adopt, rate):
                logger.info("%s announces a quota of %s: pacing by it too", key, rate)
                await self._report_pace(key, "announced by the server")
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

    async def _learn(self, key: str, sent_at: float, status: int) -> None:
        if await self.backend.run(key, TokenBucket.limited, sent_at):
            self.stats.inc_value("ratelimit/429_unexpected")
            await self._report_pace(key, f"learned from an unexpected {status}")

    async def _report_pace(self, key: str, why: str, level: int = logging.INFO) -> None:
        pace = await self.backend.run(key, TokenBucket.per_minute)
        self.stats.set_value("ratelimit/current_rate", round(pace, 3))
        self.stats.set_value("ratelimit/pace_source", why)
        logger.log(level, "Pace for %s now %.1f/min (%s)", key, pace, why)

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
        return retry
