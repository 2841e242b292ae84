"""Downloader middlewares: the rate limiter in front of the API, the token added at send time."""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from scrapy import signals
from scrapy.exceptions import NotConfigured
from scrapy.utils.asyncio import CallLaterResult, call_later
from scrapy.utils.httpobj import urlparse_cached
from scrapy.utils.response import response_status_message

from ingest.config import (
    Rate,
    api_key,
    check_api_url,
    parse_positive_int,
    parse_rates,
    parse_seconds,
)
from ingest.endings import PAUSED, UNAUTHORIZED, end_crawl
from ingest.headers import Quota, rate_limited, retry_after_seconds
from ingest.headers import quota as quota_from
from ingest.masking import fingerprint
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
SENT_META = "ratelimit_sent"
# Quota headers count in whole seconds: a reset this short says too little to act on.
RESET_RESOLUTION = 1.0


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
        *,
        max_pause: float,
        max_retries: int,
        stats: StatsCollector,
        waiter: Waiter,
        burst: int = 1,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.crawler = crawler
        self.backend = backend
        self.max_pause = max_pause
        self.max_retries = max_retries
        self.stats = stats
        self.waiter = waiter
        self.clock = clock
        self._consecutive_429: dict[str, int] = {}
        self._paused_seconds = 0.0
        self._resume_log: dict[str, CallLaterResult] = {}
        self._stopping = False
        self._closing: asyncio.Future[None] | None = None
        self.burst = burst
        self._answered: set[str] = set()
        # With a burst of 1: per API, the request that opens the connection, and its answer.
        self._opening: dict[str, tuple[Request, asyncio.Future[None]]] = {}

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        s = crawler.settings
        if not s.getbool("RATELIMIT_ENABLED"):
            raise NotConfigured("RATELIMIT_ENABLED is off")
        rates = parse_rates(s.get("RATELIMIT_RATE"))
        burst = parse_positive_int("RATELIMIT_BURST", s.get("RATELIMIT_BURST"))
        backend: Backend
        if s.get("RATELIMIT_BACKEND") == "redis":
            from ingest.redisbucket import RedisBackend  # Redis only when asked for

            backend = RedisBackend.from_url(s.get("REDIS_URL"), rates, burst=burst)
        else:
            backend = MemoryBackend(rates, burst=burst)
        assert crawler.stats is not None
        crawler.signals.connect(freeze_heap, signal=signals.spider_opened)
        middleware = cls(
            crawler,
            backend,
            max_pause=parse_seconds("RATELIMIT_MAX_PAUSE", s.get("RATELIMIT_MAX_PAUSE")),
            max_retries=s.getint("RATELIMIT_RETRY_TIMES"),
            stats=crawler.stats,
            waiter=Waiter(lambda: crawl_is_stopping(crawler)),
            burst=burst,
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
            if self.burst == 1 and key not in self._answered:
                await self._await_first_answer(key, request)
            slot = await self.backend.reserve(key)
            while True:
                if slot.imposed > self.max_pause:
                    # Paused by an answer another worker got, or a quota spent
                    # for longer than anyone should wait.
                    self._stop(key, slot.imposed, "the shared bucket is paused")
                if slot.delay > 0:
                    await self.waiter.sleep(slot.delay, precise=slot.precise)
                confirmed = await self.backend.confirm(key, slot)
                while confirmed.wait:
                    await self.waiter.sleep(confirmed.wait, precise=slot.precise)
                    confirmed = await self.backend.confirm(key, slot)
                if confirmed.wait is not None:
                    request.meta[SENT_META] = confirmed.at
                    return
                # A pause or a new quota came while this request waited: book again.
                slot = await self.backend.reserve(key)
        except Stopping:
            self._opened(key, by=request)
            raise give_back(self.crawler, request) from None

    async def _await_first_answer(self, key: str, request: Request) -> None:
        """Until the first request to an API is answered, the others wait: it also
        opens the connection (TCP, TLS), so it reaches the server later than a
        request on a warm connection, perhaps later than the next one's slot."""
        if key not in self._opening:
            self._opening[key] = (request, asyncio.get_running_loop().create_future())
            return
        _, opened = self._opening[key]
        while not opened.done():
            if self.waiter.is_stopping():
                raise Stopping(0.0)
            await asyncio.wait([opened], timeout=self.waiter.step)

    def _opened(self, key: str, by: Request | None = None) -> None:
        """An answer came (``by`` None), or the first request (``by``) failed or went
        back to the queue: the requests waiting for it go on."""
        opener, opened = self._opening.get(key, (None, None))
        if opened is None or opened.done() or (by is not None and by is not opener):
            return
        opened.set_result(None)

    # -------------------------------------------------------------- listening

    async def process_response(self, request: Request, response: Response) -> Request | Response:
        key = origin(request)
        if key not in self._answered:
            await self._first_answer(key)
            self._opened(key)
        sent_at = request.meta.get(SENT_META, -math.inf)
        headers = response.headers
        now = self.clock()
        quota = quota_from(headers, now=now)
        if quota is not None:
            await self._follow_quota(key, quota, sent_at)
        limited = rate_limited(response.status, quota)
        wait = retry_after_seconds(headers.get("Retry-After"), now=now, date=headers.get("Date"))
        if limited:
            await self._learn(key, sent_at, response.status)
            if wait is None and quota is not None and quota.exhausted and quota.reset:
                wait, why = quota.reset, "quota exhausted until its reset"
            elif wait is None:
                count = self._consecutive_429.get(key, 0) + 1
                self._consecutive_429[key] = count
                wait, why = pause_backoff(count), "no Retry-After: backing off"
            else:
                why = "Retry-After"
            await self._pause(key, wait, f"{response_status_message(response.status)}, {why}")
            return self._requeue(request, response)
        if response.status == 503 and wait is not None:
            await self._pause(key, wait, f"{response_status_message(503)}, Retry-After")
        elif 200 <= response.status < 400:
            self._consecutive_429.pop(key, None)
            if await self.backend.succeeded(key):
                await self._report_pace(key, "probing up after 429s", level=logging.DEBUG)
        return response

    def process_exception(self, request: Request, exception: Exception) -> None:
        self._opened(origin(request), by=request)

    async def _first_answer(self, key: str) -> None:
        """The first request to an API also opened the connection (TCP, TLS), so it
        reached the server later than a request on a warm connection will: the
        second one is paced from this answer, not from the first one's send, or a
        bucket with no burst would see the two closer than allowed."""
        self._answered.add(key)
        if self.burst == 1:
            await self.backend.restart(key)

    async def _follow_quota(self, key: str, quota: Quota, sent_at: float) -> None:
        if (
            quota.limit
            and quota.window
            and await self.backend.adopt(key, Rate(quota.limit, quota.window))
        ):
            logger.info(
                "%s announces a quota of %d/%g s: pacing by it too", key, quota.limit, quota.window
            )
            await self._report_pace(key, "announced by the server")
        if quota.remaining is None or quota.reset is None:
            return
        if quota.exhausted and quota.reset <= RESET_RESOLUTION:
            # "None left, back within a second" is all a bucket refilling faster than
            # once a second can say in whole seconds: the pace, not this, decides.
            return
        if quota.exhausted:
            await self._pause(key, quota.reset, "nothing remaining in the quota until its reset")
        else:
            await self.backend.budget(key, quota.remaining, quota.reset, sent_at)

    async def _learn(self, key: str, sent_at: float, status: int) -> None:
        if await self.backend.limited(key, sent_at):
            self.stats.inc_value("ratelimit/429_unexpected")
            await self._report_pace(key, f"learned from an unexpected {status}")

    async def _report_pace(self, key: str, why: str, level: int = logging.INFO) -> None:
        pace = await self.backend.per_minute(key)
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

    async def _pause(self, key: str, seconds: float, why: str) -> None:
        pause = await self.backend.pause(key, seconds)
        if pause.remaining <= 0:
            return
        if pause.remaining > self.max_pause:
            self._stop(key, pause.remaining, why)
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

    def _stop(self, key: str, seconds: float, why: str) -> None:
        """A pause longer than RATELIMIT_MAX_PAUSE: stop now rather than sleep for hours."""
        if self._stopping:
            return
        self._stopping = True
        resume_at = datetime.fromtimestamp(self.clock() + seconds, tz=UTC)
        self.stats.set_value("ratelimit/resume_after", resume_at.isoformat(timespec="seconds"))
        logger.warning(
            "%s asks to wait %.0fs (%s), more than RATELIMIT_MAX_PAUSE=%gs: stopping. "
            "Run the same command again after %s to continue.",
            key, seconds, why, self.max_pause, resume_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
        )  # fmt: skip
        self._closing = end_crawl(self.crawler, PAUSED)


class ApiTokenMiddleware:
    """Adds ``Authorization: Bearer …`` to API requests as they leave, and only then;
    stops the crawl when the API refuses the token.

    The header is removed again when the answer comes back, so the retried,
    redirected or returned copies of a request never carry the token to the
    scheduler, JOBDIR or Redis. A 401, or a 403 with no sign of rate limiting before
    any answer got through, means no request can succeed: every id would end
    ``failed`` and the quota be spent for nothing. The crawl stops instead, the
    refused requests go back to the queue, and no id is marked.
    """

    def __init__(self, crawler: Crawler, token: str | None, api_origin: str) -> None:
        self.crawler = crawler
        self.header = f"Bearer {token}".encode() if token else None
        self.token_name = f"API_TOKEN {fingerprint(token)}…" if token else "no API_TOKEN set"
        self.api_origin = api_origin
        self.accepted = False
        self.refused = False

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        token = crawler.settings.get("API_TOKEN")
        template = check_api_url(crawler.settings.get("API_URL"))
        return cls(crawler, str(token) if token else None, api_key(template))

    def process_request(self, request: Request) -> None:
        if self.header is not None and origin(request) == self.api_origin:
            request.headers[b"Authorization"] = self.header

    def process_response(self, request: Request, response: Response) -> Response:
        request.headers.pop(b"Authorization", None)
        if origin(request) != self.api_origin:
            return response
        if self._refuses_token(response):
            if not self.refused:
                self.refused = True
                logger.error(
                    "%s answered %s (%s): stopping; no id was marked, and the same command "
                    "with a working token continues.",
                    self.api_origin, response_status_message(response.status), self.token_name,
                )  # fmt: skip
                end_crawl(self.crawler, UNAUTHORIZED)
            raise give_back(self.crawler, request)
        if response.status < 400 or response.status in (404, 410):
            self.accepted = True
        return response

    def process_exception(self, request: Request, exception: Exception) -> None:
        request.headers.pop(b"Authorization", None)

    def _refuses_token(self, response: Response) -> bool:
        if response.status == 401:
            return True
        if response.status != 403 or self.accepted or b"Retry-After" in response.headers:
            return False
        return not rate_limited(403, quota_from(response.headers, now=time.time()))
