"""Progress lines during the crawl and a summary at its end."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from scrapy import signals
from scrapy.exceptions import NotConfigured
from scrapy.utils.asyncio import create_looping_call

from ingest.humanize import duration
from ingest.items import STATES
from ingest.ratelimit.rates import Rate, parse_rates

if TYPE_CHECKING:
    from typing import Self

    from scrapy.crawler import Crawler
    from scrapy.http import Request, Response
    from scrapy.statscollectors import StatsCollector

logger = logging.getLogger(__name__)

WINDOW = 60.0


class Progress:
    """Every ``PROGRESS_INTERVAL`` seconds: done/total, requests per minute over the
    last minute, 429s so far, time paused and ETA. At the end: what became of the
    ids, how long it took, and the rate achieved against the limit."""

    def __init__(
        self,
        crawler: Crawler,
        interval: float,
        rates: tuple[Rate, ...],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.crawler, self.interval, self.rates, self.clock = crawler, interval, rates, clock
        self.sent: deque[float] = deque()
        self.first_sent: float | None = None
        self.last_sent: float | None = None
        self.requests = 0
        self.started = clock()
        self.total: int | None = None
        self._loop: Any = None

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        interval = crawler.settings.getfloat("PROGRESS_INTERVAL")
        if interval <= 0:
            raise NotConfigured("PROGRESS_INTERVAL is 0")
        ext = cls(crawler, interval, parse_rates(crawler.settings.get("RATELIMIT_RATE")))
        for handler, signal in (
            (ext.spider_opened, signals.spider_opened),
            (ext.spider_closed, signals.spider_closed),
            (ext.response_received, signals.response_received),
        ):
            crawler.signals.connect(handler, signal=signal)
        return ext

    @property
    def stats(self) -> StatsCollector:
        assert self.crawler.stats is not None
        return self.crawler.stats

    def spider_opened(self, spider: Any) -> None:
        self.started = self.clock()
        ids = getattr(spider, "ids", None)
        self.total = len(ids) if ids is not None else None
        if self.total is not None:
            self.stats.set_value("ids/total", self.total)
        self._loop = create_looping_call(self.log_progress)
        self._loop.start(self.interval, now=False)

    def response_received(self, response: Response, request: Request, spider: Any) -> None:
        now = self.clock()
        self.requests += 1
        if self.first_sent is None:
            self.first_sent = now
        self.last_sent = now
        self.sent.append(now)
        while self.sent and self.sent[0] < now - WINDOW:
            self.sent.popleft()

    def done(self) -> int:
        return sum(
            self.stats.get_value(f"storage/{s}", 0) for s in (*STATES, "unchanged")
        ) + self.stats.get_value("ids/skipped", 0)

    def per_minute(self) -> float:
        now = self.clock()
        while self.sent and self.sent[0] < now - WINDOW:
            self.sent.popleft()
        if len(self.sent) < 2:
            return 0.0
        if self.first_sent is not None and now - self.first_sent < WINDOW:
            # Less than a minute so far: the rate between the first and last request.
            return (len(self.sent) - 1) * 60 / max(self.sent[-1] - self.sent[0], 1e-9)
        return len(self.sent) * 60 / WINDOW

    def line(self) -> str:
        done, total = self.done(), self.total
        rate = self.per_minute()
        throttled = self.stats.get_value("downloader/response_status_count/429", 0)
        paused = self.stats.get_value("ratelimit/paused_seconds", 0.0)
        parts = [f"{done}/{total} ids" + (f" ({100 * done / total:.1f}%)" if total else "")]
        parts.append(f"{rate:.1f} req/min over the last minute")
        parts.append(f"{throttled} x 429")
        parts.append(f"paused {duration(paused)}")
        if self.stats.get_value("ratelimit/pace_source"):
            pace = self.stats.get_value("ratelimit/current_rate", 0.0)
            parts.append(f"pace {pace:.0f}/min, {self.stats.get_value('ratelimit/pace_source')}")
        if total is not None and rate > 0:
            parts.append(f"ETA {duration((total - done) * 60 / rate)}")
        return " | ".join(parts)

    def log_progress(self) -> None:
        logger.info("Progress: %s", self.line())

    def summary(self, reason: str) -> str:
        counts = ", ".join(f"{self.stats.get_value(f'storage/{s}', 0)} {s}" for s in STATES)
        if unchanged := self.stats.get_value("storage/unchanged", 0):
            counts += f", {unchanged} unchanged"
        elapsed = self.clock() - self.started
        skipped = self.stats.get_value("ids/skipped", 0)
        text = f"{reason}: {counts}; {skipped} skipped as already done; elapsed {duration(elapsed)}"
        if self.requests >= 2 and self.first_sent is not None and self.last_sent is not None:
            span = self.last_sent - self.first_sent
            if span > 0:
                per_second = (self.requests - 1) / span
                limit = self.rates[0].per_second
                text += (
                    f"; {self.requests} requests at {per_second * 60:.1f}/min"
                    f" = {100 * per_second / limit:.1f}% of the {self.rates[0]} limit"
                )
        return text

    def spider_closed(self, spider: Any, reason: str) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        logger.info("Summary (%s)", self.summary(reason))
