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

from ingest import signals as ingest_signals
from ingest.api import origin
from ingest.backoff import exponential
from ingest.keys import KEY_META, Key, every_key_rejected, load_keys
from ingest.ratelimit.backends import Backend, open_backend
from ingest.ratelimit.bucket import TokenBucket
from ingest.ratelimit.lessons import Lessons
from ingest.ratelimit.opening import Opening
from ingest.ratelimit.pauses import Pauses
from ingest.ratelimit.quota import Quota, quota_of, rate_limited, retry_after_seconds
from ingest.ratelimit.rates import Rate, parse_rate_setting, parse_rates
from ingest.ratelimit.routing import Router, key_stats
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
        keys: tuple[Key, ...] = (),
        shared: Backend | None = None,
        count_304: bool = True,
        auto: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.crawler, self.backend, self.pauses = crawler, backend, pauses
        self.shared = shared
        self.router = Router(
            keys,
            backend,
            shared=shared,
            pauses=pauses,
            waiter=waiter,
            stats=stats,
            on_all_rejected=lambda api: every_key_rejected(crawler, api, len(keys)),
        )
        self.max_retries = max_retries
        self.stats = stats
        self.waiter = waiter
        self.burst, self.count_304 = burst, count_304
        self.clock = clock
        self.lessons = Lessons(backend, stats, pauses, auto=auto)
        self.opening = Opening(waiter.is_stopping, waiter.step) if burst == 1 else None
        self._answered: set[str] = set()
        self._consecutive_429: dict[str, int] = {}

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        s = crawler.settings
        if not s.getbool("RATELIMIT_ENABLED"):
            raise NotConfigured("RATELIMIT_ENABLED is off")
        assert crawler.stats is not None
        setting = parse_rate_setting(s.get("RATELIMIT_RATE"))
        start = parse_rates(s.get("RATELIMIT_START"), "RATELIMIT_START")[0]
        rates = setting.rates or (start,)
        burst = s.getint("RATELIMIT_BURST")
        backend = open_backend(
            s.get("RATELIMIT_BACKEND"),
            setting.rates,
            burst=burst,
            redis_url=s.get("REDIS_URL"),
            **({"auto": True, "start": start} if setting.auto else {}),
        )
        shared = None
        if shared_rates := s.get("RATELIMIT_SHARED_RATE"):
            shared = open_backend(
                s.get("RATELIMIT_BACKEND"),
                parse_rates(shared_rates, "RATELIMIT_SHARED_RATE"),
                burst=1,
                redis_url=s.get("REDIS_URL"),
            )
        keys = load_keys(s)
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
            keys=keys,
            shared=shared,
            count_304=s.getbool("RATELIMIT_COUNT_304"),
            auto=setting.auto,
        )
        pace = 60 * min(start.per_second, *(r.per_second for r in rates))
        crawler.stats.set_value("ratelimit/current_rate", round(pace, 3))
        if setting.auto:
            crawler.stats.set_value("ratelimit/pace_source", f"finding the limit, from {start}")
        logger.info(
            "Rate limit %s, burst %d, kept in %s",
            ",".join(["auto"] * setting.auto + [str(r) for r in setting.rates])
            + (f" (starting at {start})" if setting.auto else ""),
            burst, s.get("RATELIMIT_BACKEND"),
        )  # fmt: skip
        if middleware.router.keyed:
            for key in keys:
                pace = round(60 * rates[0].per_second, 3)
                crawler.stats.set_value(f"{key_stats(key.fingerprint)}/pace", pace)
            logger.info("%d API keys, each paced by its own bucket", len(keys))
        if shared_rates:
            logger.info("Shared rate limit %s, for all keys together", shared_rates)
        crawler.signals.connect(middleware.close, signal=signals.spider_closed)
        crawler.signals.connect(middleware.key_rejected, signal=ingest_signals.key_rejected)
        return middleware

    async def close(self) -> None:
        await self.router.close()
        await self.backend.close()
        if self.shared is not None:
            await self.shared.close()

    def key_rejected(self, api: str, fingerprint: str) -> None:
        self.router.reject(api, fingerprint)

    def _bucket(self, request: Request) -> str:
        """The bucket the request was booked in: its API's, or its key's."""
        bucket = self.router.bucket(origin(request), request.meta.get(KEY_META))
        if bucket not in self.pauses.names and bucket != origin(request):
            fingerprint = request.meta[KEY_META]
            self.pauses.names[bucket] = (
                f"{origin(request)} {self.router.by_fingerprint[fingerprint]}"
            )
            self.pauses.key_stats[bucket] = key_stats(fingerprint)
        return bucket

    # -------------------------------------------------------------- sending

    async def process_request(self, request: Request) -> None:
        api = origin(request)
        try:
            if self.opening is not None and api not in self._answered:
                await self.opening.wait(api, request)
            # The key is chosen as the request leaves: the one that can send it soonest.
            route = await self.router.send_slot(api)
        except Stopping:
            if self.opening is not None:
                self.opening.opened(api, by=request)
            raise give_back(self.crawler, request) from None
        request.meta[SENT_META] = route.at
        if route.fingerprint is not None:
            request.meta[KEY_META] = route.fingerprint

    # -------------------------------------------------------------- listening

    async def process_response(self, request: Request, response: Response) -> Request | Response:
        key = self._bucket(request)
        if origin(request) not in self._answered:
            await self._first_answer(origin(request), key)
        sent_at = request.meta.get(SENT_META, -math.inf)
        headers, now = response.headers, self.clock()
        quota = quota_of(headers, now=now)
        if quota is not None:
            await self._follow_quota(key, quota, sent_at)
        wait = retry_after_seconds(headers.get("Retry-After"), now=now, date=headers.get("Date"))
        if rate_limited(response.status, quota):
            if key in self.pauses.key_stats:
                self.stats.inc_value(f"{self.pauses.key_stats[key]}/429")
            await self.lessons.limited(key, sent_at, response.status, wait, self.clock())
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
                await self.lessons.pace(key, level=logging.DEBUG)
        return response

    def process_exception(self, request: Request, exception: Exception) -> None:
        if self.opening is not None:
            self.opening.opened(origin(request), by=request)

    async def _first_answer(self, api: str, key: str) -> None:
        """The first request to an API also opened the connection, so it reached the
        server later than a request on a warm connection will: the second one is paced
        from this answer, not from the first one's send."""
        self._answered.add(api)
        if self.opening is not None:
            await self.backend.run(key, TokenBucket.restart)
            self.opening.opened(api)

    async def _follow_quota(self, key: str, quota: Quota, sent_at: float) -> None:
        if quota.limit and quota.window:
            rate = Rate(quota.limit, quota.window)
            if await self.backend.run(key, TokenBucket.adopt, rate):
                logger.info("%s announces a quota of %s: pacing by it too", key, rate)
                await self.lessons.pace(key, "announced by the server")
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
