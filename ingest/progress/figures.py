"""A crawl's figures, one set per crawler: what progress lines, the bar, summary and metrics say."""

from __future__ import annotations

import time
import weakref
from collections import deque
from collections.abc import Callable, Sized
from dataclasses import dataclass
from typing import TYPE_CHECKING

from scrapy import signals

from ingest import signals as ingest_signals
from ingest.items import STATES
from ingest.job import Job
from ingest.run import Run

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.statscollectors import StatsCollector

    from ingest.ratelimit.pacing.rates import Rate

WINDOW = 60.0  # seconds: "requests per minute" counts those sent in the last minute
# Of the requests sent so far, at most this share is taken as retries when an ETA
# estimates how many requests the ids left will take.
MOST_RETRIES = 0.9

_OF_CRAWLER: weakref.WeakKeyDictionary[Crawler, Figures] = weakref.WeakKeyDictionary()


@dataclass(frozen=True, slots=True)
class Mark:
    """Counts at one moment: requests sent, answered 429, answered 304 and free."""

    at: float
    sent: int
    refused: int
    free: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The figures at one moment. Requests are counted as they leave for the server
    (Scrapy's ``downloader/request_count``: retries and requeued 429s included); ids by
    the outcomes written in this run, plus those skipped as already done."""

    now: float
    elapsed: float
    total: int | None  # ids of the job; None when this process sees only its share
    done: int
    by_state: dict[str, int]  # outcomes written in this run, by terminal state
    skipped: int
    requests: int
    retries: int  # requests sent again: backoff retries and requeued 429s
    per_minute: float  # requests in the last minute, as the server counts them
    throttled: int  # 429s received, requeued or not
    unexpected: int  # 429s the rates did not predict
    paused_seconds: float
    pause_left: float  # seconds until a pause the server imposed ends; 0 when not paused
    paused_until: float | None  # epoch seconds
    pace: float  # requests/min the bucket allows now
    pace_source: str
    eta: float | None  # seconds
    ids_per_request: float = 1.0  # with batches: ids asked for per batch answered

    @property
    def pending(self) -> int | None:
        return None if self.total is None else max(0, self.total - self.done)


class Figures:
    """Counts the requests as they reach the downloader (after every wait in a
    middleware, so as the server receives them), and reads the rest from the stats."""

    def __init__(
        self,
        stats: StatsCollector,
        rates: tuple[Rate, ...],
        *,
        count_304: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.stats, self.rates, self.count_304, self.clock = stats, rates, count_304, clock
        self.inferred: Rate | None = None
        # Where the stretch measured against the limit begins: the first request, or the
        # moment a slower limit was inferred from 429s (before it, that one was not kept).
        self.stretch: Mark | None = None
        self.started = clock()
        self.total: int | None = None
        self.sent: deque[float] = deque()
        self.first_sent: float | None = None
        self.last_sent: float | None = None
        self.count = 0

    @classmethod
    def of(cls, crawler: Crawler) -> Figures:
        """The crawler's figures: every component that shows them shares one set."""
        figures = _OF_CRAWLER.get(crawler)
        if figures is None:
            assert crawler.stats is not None
            job = Job.of(crawler)
            figures = cls(crawler.stats, job.pacing.rates, count_304=job.pacing.count_304)

            def opened() -> None:
                run = Run.of(crawler)
                figures.opened(None if job.distributed or run is None else run.ids)

            connect = crawler.signals.connect
            connect(opened, signal=signals.spider_opened, weak=False)
            connect(figures.request_sent, signal=signals.request_reached_downloader)
            connect(figures.limit_inferred, signal=ingest_signals.limit_inferred)
            _OF_CRAWLER[crawler] = figures
        return figures

    def opened(self, ids: Sized | None) -> None:
        """The crawl begins with ``ids``, or None when each worker of a distributed job sees
        only its share, or a listing's ids are not known ahead (no total, pending or ETA)."""
        self.started = self.clock()
        self.total = len(ids) if ids is not None else None
        if self.total is not None:
            self.stats.set_value("ids/total", self.total)

    def limit_inferred(self, rate: Rate) -> None:
        if self.inferred is None or rate.per_second < self.inferred.per_second:
            self.stretch = self.mark(self.clock())
        self.inferred = rate

    def mark(self, at: float) -> Mark:
        """The counts so far, as a stretch beginning at ``at`` starts from."""
        get = self.stats.get_value
        free = 0 if self.count_304 else int(get("downloader/response_status_count/304", 0))
        return Mark(at, self.count, int(get("downloader/response_status_count/429", 0)), free)

    def free(self) -> int:
        """Requests the server does not count: 304s, with RATELIMIT_COUNT_304 off."""
        return self.mark(0.0).free

    def share_of_limit(self, keys: int = 1) -> float | None:
        """The requests the server accepted and counted (no 429, no free 304), per second,
        as a share of the limit (``keys`` times it, one each): from the first request,
        or from when the limit measured against was inferred; None with fewer than two."""
        limit = self.limit()
        if limit is None or self.first_sent is None or self.last_sent is None:
            return None
        start = self.stretch or Mark(self.first_sent, 0, 0, 0)
        end = self.mark(self.last_sent)
        accepted = (end.sent - start.sent) - (end.refused - start.refused) - (end.free - start.free)
        span = end.at - start.at
        if accepted < 2 or span <= 0:
            return None
        return (accepted - 1) / span / (limit.per_second * keys)

    def limit(self) -> Rate | None:
        """The limit to measure against: the one inferred from 429s if any, else the
        rate configured (the first: the shortest period); None with ``auto`` alone
        before any 429 taught one."""
        if self.inferred is not None:
            return self.inferred
        return self.rates[0] if self.rates else None

    def request_sent(self) -> None:
        now = self.clock()
        self.count += 1
        if self.first_sent is None:
            self.first_sent = now
        self.last_sent = now
        self.sent.append(now)
        self._forget(now)

    def _forget(self, now: float) -> None:
        while self.sent and self.sent[0] < now - WINDOW:
            self.sent.popleft()

    def per_minute(self, now: float) -> float:
        """Requests sent in the last minute; in the first minute, the rate between the
        first request and the last."""
        self._forget(now)
        if len(self.sent) < 2:
            return 0.0
        if self.first_sent is not None and now - self.first_sent < WINDOW:
            return (len(self.sent) - 1) * 60 / max(self.sent[-1] - self.sent[0], 1e-9)
        return len(self.sent) * 60 / WINDOW

    def overall_per_minute(self) -> float | None:
        """Requests per minute from the first to the last, as the server would compute
        it from its record (free 304s left out); None with fewer than two requests."""
        counted = self.count - self.free()
        if counted < 2 or self.first_sent is None or self.last_sent is None:
            return None
        span = self.last_sent - self.first_sent
        return (counted - 1) * 60 / span if span > 0 else None

    def snapshot(self) -> Snapshot:
        get, now = self.stats.get_value, self.clock()
        by_state = {state: int(get(f"storage/{state}", 0)) for state in STATES}
        skipped = int(get("ids/skipped", 0))
        requests = int(get("downloader/request_count", 0))
        retries = int(get("retry/count", 0)) + int(get("ratelimit/requeued", 0))
        paused_until = get("ratelimit/paused_until")
        pause_left = max(0.0, paused_until - now) if paused_until is not None else 0.0
        per_minute = self.per_minute(now)
        pace = float(get("ratelimit/current_rate", 0.0))
        unchanged = int(get("storage/unchanged", 0))  # refreshed, answered 304
        done = sum(by_state.values()) + unchanged + skipped
        batches = int(get("batch/requests_answered", 0))
        per_request = int(get("batch/ids_answered", 0)) / batches if batches else 1.0
        return Snapshot(
            now=now,
            elapsed=now - self.started,
            total=self.total,
            done=done,
            by_state={**by_state, "unchanged": unchanged} if unchanged else by_state,
            skipped=skipped,
            requests=requests,
            retries=retries,
            per_minute=per_minute,
            throttled=int(get("downloader/response_status_count/429", 0)),
            unexpected=int(get("ratelimit/429_unexpected", 0)),
            paused_seconds=float(get("ratelimit/paused_seconds", 0.0)),
            pause_left=pause_left,
            paused_until=paused_until,
            pace=pace,
            pace_source=str(get("ratelimit/pace_source", "") or ""),
            ids_per_request=per_request,
            eta=eta(
                None if self.total is None else (self.total - done) / per_request,
                requests=requests,
                retries=retries,
                per_minute=per_minute if per_minute > 0 and not pause_left else pace,
                pause_left=pause_left,
            ),
        )


def eta(
    left: float | None, *, requests: int, retries: int, per_minute: float, pause_left: float
) -> float | None:
    """Seconds until ``left`` more requests' worth of ids are done: what a pause still
    holds, then those requests at ``per_minute``, with as many retries as so far."""
    if left is None or per_minute <= 0:
        return None
    if left <= 0:
        return 0.0
    share = min(retries / requests, MOST_RETRIES) if requests else 0.0
    return pause_left + left / (1 - share) * 60 / per_minute
