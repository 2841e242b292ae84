"""Retrying failed requests with exponential backoff and full jitter, instead of at once."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from scrapy.downloadermiddlewares.retry import get_retry_request
from scrapy.exceptions import NotConfigured
from scrapy.utils.misc import load_object
from scrapy.utils.response import response_status_message

from ingest.backoff import full_jitter
from ingest.job import Job
from ingest.ratelimit.headers import retry_after_seconds
from ingest.stopping.waiting import Stopping, Waiter, crawl_is_stopping, give_back

if TYPE_CHECKING:
    from typing import Self

    from scrapy import Request
    from scrapy.crawler import Crawler
    from scrapy.http import Response

logger = logging.getLogger(__name__)

# Rate limiting (429) is the rate-limit middleware's business, not a failure to retry.
RETRY_HTTP_CODES = frozenset({408, 500, 502, 503, 504, 522, 524})
DELAY_META = "retry_delay"


class BackoffRetryMiddleware:
    """Scrapy's retry, but the retried request waits (alone) before it goes again.

    The wait is a full-jitter draw (``ingest.backoff``), never shorter than the
    server's ``Retry-After``. Retries go through the scheduler and the rate limiter
    like any request, so each one spends a token.
    """

    def __init__(
        self,
        crawler: Crawler,
        *,
        max_retry_times: int,
        http_codes: frozenset[int],
        exceptions: tuple[type[Exception], ...],
        base: float,
        cap: float,
        priority_adjust: int,
        waiter: Waiter,
        rand: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.crawler = crawler
        self.max_retry_times = max_retry_times
        self.http_codes = http_codes
        self.exceptions = exceptions
        self.base, self.cap = base, cap
        self.priority_adjust = priority_adjust
        self.waiter = waiter
        self.rand, self.clock = rand, clock

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        retrying = Job.of(crawler).retrying
        if not retrying.enabled:
            raise NotConfigured("RETRY_ENABLED is off")
        return cls(
            crawler,
            max_retry_times=retrying.times,
            http_codes=retrying.codes & RETRY_HTTP_CODES,
            exceptions=tuple(load_object(e) for e in retrying.exceptions),
            base=retrying.base,
            cap=retrying.cap,
            priority_adjust=retrying.priority_adjust,
            waiter=Waiter(lambda: crawl_is_stopping(crawler)),
        )

    async def process_request(self, request: Request) -> None:
        delay = request.meta.get(DELAY_META)
        if not delay:
            return
        try:
            await self.waiter.sleep(delay)
        except Stopping as stop:
            raise give_back(self.crawler, request, **{DELAY_META: stop.args[0]}) from None
        del request.meta[DELAY_META]

    def process_response(self, request: Request, response: Response) -> Request | Response:
        if response.status not in self.http_codes or request.meta.get("dont_retry"):
            return response
        floor = retry_after_seconds(
            response.headers.get("Retry-After"),
            now=self.clock(),
            date=response.headers.get("Date"),
        )
        return self._retry(request, response_status_message(response.status), floor) or response

    def process_exception(self, request: Request, exception: Exception) -> Request | None:
        if isinstance(exception, self.exceptions) and not request.meta.get("dont_retry"):
            return self._retry(request, exception, None)
        return None

    def _retry(self, request: Request, reason: Any, floor: float | None) -> Request | None:
        assert self.crawler.spider is not None
        retry = get_retry_request(
            request,
            spider=self.crawler.spider,
            reason=reason,
            max_retry_times=request.meta.get("max_retry_times", self.max_retry_times),
            priority_adjust=self.priority_adjust,
        )
        if retry is None:
            return None
        attempt = retry.meta["retry_times"]
        delay = full_jitter(attempt, base=self.base, cap=self.cap, rand=self.rand)
        if floor is not None:
            delay = max(delay, floor)
        retry.meta[DELAY_META] = delay
        logger.debug("Retry %d of %s in %.2fs: %s", attempt, request.url, delay, reason)
        return retry
