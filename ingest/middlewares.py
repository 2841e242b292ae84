"""Downloader middlewares: the rate limiter in front of the API, the token added at send time."""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from scrapy import signals
from scrapy.exceptions import NotConfigured
from scrapy.utils.asyncio import CallLaterResult, call_later
from scrapy.utils.httpobj import urlparse_cached
from scrapy.utils.response import response_status_message

from ingest.config import Rate, api_key, check_api_url, parse_positive_int, parse_rates
from ingest.headers import retry_after_seconds
from ingest.ratelimit import Backend, MemoryBackend
from ingest.stopping import Stopping, Waiter, crawl_is_stopping, give_back

if TYPE_CHECKING:
    from typing import Self

    from scrapy import Request
    from scrapy.crawler import Crawler
    from scrapy.http import Response
    from scrapy.statscollectors import StatsCollector

logger = logging.getLogger(__name__)

RETRIES_META = "ratelimit_retries"


def origin(request: Request) -> str:
    """What a bucket is keyed by: the API's scheme and host."""
    parts = urlparse_cached(request)
    return f"{parts.scheme}://{parts.netloc}"


def freeze_heap() -> None:
    """Exempt what exists at start (Scrapy, Twisted, lxml…) from garbage collection.

    A full collection walks every object; over the ~100,000 of a started crawler it
    stalls the event loop for 30-70 ms, long enough to bunch paced requests
    together. Frozen, those collections take a millisecond or two.
    """
    gc.collect()
    gc.freeze()


def pause_backoff(consecutive: int, *, base: float = 1.0, cap: float = 60.0) -> float:
    """How long to pause after ``consecutive`` 429s that named no time to wait."""
    return min(cap, base * 2 ** max(0, consecutive - 1))


class RateLimitMiddleware:
    """Sends each request only when the token bucket allows it; obeys the server's 429s.

    Only the waiting request waits (an asyncio sleep, never the reactor). A 429, or a
    503 with ``Retry-After``, pauses every request to that API until the time the
    server names; the 429'd request goes back to the scheduler and spends a token
    again when it is sent.
    """

    def __init__(
        self,
        crawler: Crawler,
        backend: Backend,
        *,
        rates: tuple[Rate, ...],
        max_retries: int,
        stats: StatsCollector,
        waiter: Waiter,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.crawler = crawler
        self.backend = backend
        self.rates = rates
        self.max_retries = max_retries
        self.stats = stats
        self.waiter = waiter
        self.clock = clock
        self._consecutive_429: dict[str, int] = {}
        self._paused_seconds = 0.0
        self._resume_log: dict[str, CallLaterResult] = {}

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        s = crawler.settings
        if not s.getbool("RATELIMIT_ENABLED"):
            raise NotConfigured("RATELIMIT_ENABLED is off")
        rates = parse_rates(s.get("RATELIMIT_RATE"))
        burst = parse_positive_int("RATELIMIT_BURST", s.get("RATELIMIT_BURST"))
        kind = s.get("RATELIMIT_BACKEND")
        if kind != "memory":
            raise NotConfigured(f"RATELIMIT_BACKEND {kind!r} is not available")
        assert crawler.stats is not None
        crawler.signals.connect(freeze_heap, signal=signals.spider_opened)
        return cls(
            crawler,
            MemoryBackend(rates, burst=burst),
            rates=rates,
            max_retries=s.getint("RATELIMIT_RETRY_TIMES"),
            stats=crawler.stats,
            waiter=Waiter(lambda: crawl_is_stopping(crawler)),
        )

    async def process_request(self, request: Request) -> None:
        key = origin(request)
        try:
            slot = await self.backend.reserve(key)
            while True:
                if slot.delay > 0:
                    self.stats.inc_value("ratelimit/delayed")
                    await self.waiter.sleep(slot.delay)
                extra = await self.backend.confirm(key, slot.epoch)
                while extra:
                    await self.waiter.sleep(extra)
                    extra = await self.backend.confirm(key, slot.epoch)
                if extra is not None:
                    return
                # A pause began while this request waited: its slot is void, book again.
                slot = await self.backend.reserve(key)
        except Stopping:
            raise give_back(self.crawler, request) from None

    async def process_response(self, request: Request, response: Response) -> Request | Response:
        key = origin(request)
        limited = response.status == 429
        wait = retry_after_seconds(
            response.headers.get("Retry-After"),
            now=self.clock(),
            date=response.headers.get("Date"),
        )
        if limited or (response.status == 503 and wait is not None):
            why = "Retry-After" if wait is not None else "429 without Retry-After"
            if wait is None:
                count = self._consecutive_429.get(key, 0) + 1
                self._consecutive_429[key] = count
                wait = pause_backoff(count)
            await self._pause(key, wait, f"{response_status_message(response.status)}, {why}")
        elif 200 <= response.status < 300:
            self._consecutive_429.pop(key, None)
        if not limited:
            return response
        return self._requeue(request, response)

    def _requeue(self, request: Request, response: Response) -> Request | Response:
        retries = request.meta.get(RETRIES_META, 0) + 1
        if retries > self.max_retries:
            self.stats.inc_value("ratelimit/gave_up")
            logger.error("Gave up on %s: rate limited %d times in a row", request.url, retries - 1)
            return response
        self.stats.inc_value("ratelimit/requeued")
        retry = request.replace(dont_filter=True)
        retry.meta[RETRIES_META] = retries
        return retry

    async def _pause(self, key: str, seconds: float, why: str) -> None:
        pause = await self.backend.pause(key, seconds)
        if pause.remaining <= 0:
            return
        if pause.started:
            self.stats.inc_value("ratelimit/pauses")
            logger.info("Pausing requests to %s for %.1fs (%s)", key, pause.remaining, why)
        self._paused_seconds += pause.added
        self.stats.set_value("ratelimit/paused_seconds", round(self._paused_seconds, 3))
        if pause.added > 0:
            previous = self._resume_log.pop(key, None)
            if previous:
                previous.cancel()
            self._resume_log[key] = call_later(pause.remaining, self._log_resume, key)

    def _log_resume(self, key: str) -> None:
        self._resume_log.pop(key, None)
        logger.info("Resuming requests to %s, paced", key)


class ApiTokenMiddleware:
    """Adds ``Authorization: Bearer …`` to API requests as they leave, and only then.

    The header is removed again when the answer comes back, so the retried,
    redirected or returned copies of a request never carry the token to the
    scheduler, JOBDIR or Redis.
    """

    def __init__(self, token: str, api_origin: str) -> None:
        self.header = f"Bearer {token}".encode()
        self.api_origin = api_origin

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        token = crawler.settings.get("API_TOKEN")
        if not token:
            raise NotConfigured
        return cls(str(token), api_key(check_api_url(crawler.settings.get("API_URL"))))

    def process_request(self, request: Request) -> None:
        if origin(request) == self.api_origin:
            request.headers[b"Authorization"] = self.header

    def process_response(self, request: Request, response: Response) -> Response:
        request.headers.pop(b"Authorization", None)
        return response

    def process_exception(self, request: Request, exception: Exception) -> None:
        request.headers.pop(b"Authorization", None)
