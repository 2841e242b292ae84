"""The rate limiter in front of the API: each request sent when its bucket allows, the first to
an API alone; each answer handed to the feedback."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from scrapy import signals
from scrapy.exceptions import NotConfigured

from ingest import signals as ingest_signals
from ingest.config.keys import KEY_META, Key
from ingest.fetching.urls import origin
from ingest.job import Job
from ingest.ratelimit.backends import Backend, open_backend
from ingest.ratelimit.feedback import SENT_META, Feedback, Pauses
from ingest.ratelimit.pacing.bucket import TokenBucket
from ingest.ratelimit.routing import Router, key_stats
from ingest.stopping.endings import every_key_rejected
from ingest.stopping.waiting import Stopping, Waiter, crawl_is_stopping, give_back

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Self

    from scrapy import Request
    from scrapy.crawler import Crawler
    from scrapy.http import Response
    from scrapy.statscollectors import StatsCollector

    from ingest.job import Pacing

logger = logging.getLogger(__name__)


class Opening:
    """Until the first request to an API is answered, the others wait for it.

    It also opens the connection (TCP, TLS), so it reaches the server later than a
    request on a warm connection: perhaps later than the next one's slot, which a
    bucket with no burst would see as two requests too close together.
    """

    def __init__(self, is_stopping: Callable[[], bool], step: float = 0.25) -> None:
        self.is_stopping, self.step = is_stopping, step
        self._openers: dict[str, tuple[Request, asyncio.Future[None]]] = {}

    async def wait(self, key: str, request: Request) -> None:
        """Return at once for the first request to ``key``; the others wait until it is
        answered (or goes back). Raises :class:`Stopping` if the crawl stops meanwhile."""
        if key not in self._openers:
            self._openers[key] = (request, asyncio.get_running_loop().create_future())
            return
        opener, opened = self._openers[key]
        while not opened.done() and request is not opener:
            if self.is_stopping():
                raise Stopping(0.0)
            await asyncio.wait([opened], timeout=self.step)

    def opened(self, key: str, by: Request | None = None) -> None:
        """An answer came (``by`` None), or the first request (``by``) failed or went
        back to the queue: the requests waiting for it go on."""
        opener, opened = self._openers.get(key, (None, None))
        if opened is None or opened.done() or (by is not None and by is not opener):
            return
        opened.set_result(None)


class RateLimitMiddleware:
    """Sends each request only when the token bucket allows it; hands each answer to the
    :class:`~ingest.ratelimit.feedback.Feedback`, the one place a 429 is handled.

    Only the waiting request waits (an asyncio sleep, never the reactor). With several
    keys, each request goes on the key whose bucket can send it soonest
    (:class:`~ingest.ratelimit.routing.Router`). With a burst of 1, the first request to
    an API goes alone (:class:`Opening`).
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
        self.feedback = Feedback(
            crawler, backend, pauses, stats, max_retries=max_retries, count_304=count_304, auto=auto
        )
        self.opening = Opening(waiter.is_stopping, waiter.step) if burst == 1 else None
        self._answered: set[str] = set()

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        job = Job.of(crawler)
        pacing = job.pacing
        if not pacing.enabled:
            raise NotConfigured("RATELIMIT_ENABLED is off")
        assert crawler.stats is not None
        backend = open_backend(
            pacing.backend,
            pacing.rates,
            burst=pacing.burst,
            redis_url=job.redis_url,
            **({"auto": True, "start": pacing.start} if pacing.auto else {}),
        )
        shared = None
        if pacing.shared:
            shared = open_backend(pacing.backend, pacing.shared, burst=1, redis_url=job.redis_url)
        pauses = Pauses(crawler, backend, max_pause=pacing.max_pause)
        middleware = cls(
            crawler,
            backend,
            pauses,
            max_retries=pacing.retry_times,
            stats=crawler.stats,
            waiter=Waiter(lambda: crawl_is_stopping(crawler)),
            burst=pacing.burst,
            keys=job.keys,
            shared=shared,
            count_304=pacing.count_304,
            auto=pacing.auto,
        )
        middleware.tell_start(pacing, crawler.stats, job.keys)
        crawler.signals.connect(middleware.close, signal=signals.spider_closed)
        crawler.signals.connect(middleware.key_rejected, signal=ingest_signals.key_rejected)
        return middleware

    def tell_start(self, pacing: Pacing, stats: StatsCollector, keys: tuple[Key, ...]) -> None:
        """The pace to start from, in the stats and the log."""
        rates, start = pacing.rates or (pacing.start,), pacing.start
        pace = 60 * min(start.per_second, *(r.per_second for r in rates))
        stats.set_value("ratelimit/current_rate", round(pace, 3))
        if pacing.auto:
            stats.set_value("ratelimit/pace_source", f"finding the limit, from {start}")
        logger.info(
            "Rate limit %s, burst %d, kept in %s",
            pacing.describe() + (f" (starting at {start})" if pacing.auto else ""),
            pacing.burst, pacing.backend,
        )  # fmt: skip
        if self.router.keyed:
            for key in keys:
                pace = round(60 * rates[0].per_second, 3)
                stats.set_value(f"{key_stats(key.fingerprint)}/pace", pace)
            logger.info("%d API keys, each paced by its own bucket", len(keys))
        if pacing.shared:
            shared = ",".join(str(rate) for rate in pacing.shared)
            logger.info("Shared rate limit %s, for all keys together", shared)

    async def close(self) -> None:
        await self.router.close()
        await self.backend.close()
        if self.shared is not None:
            await self.shared.close()

    def key_rejected(self, api: str, fingerprint: str) -> None:
        self.router.reject(api, fingerprint)
        if self.opening is not None:
            # A refusal is an answer: those waiting for the first one go. (Its request,
            # sent again on another key, never comes back through process_response.)
            self.opening.opened(api)

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
        return await self.feedback.answered(key, request, response)

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
