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
from ingest.ratelimit.dialects import Said, hear
from ingest.ratelimit.headers import Quota, binding
from ingest.ratelimit.learning import lessons
from ingest.ratelimit.pacing.bucket import TokenBucket
from ingest.ratelimit.pacing.rates import Rate
from ingest.signals import allowance_spent, limit_inferred, quota_heard
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
# Quota headers count in whole seconds: a reset this short says too little to act on,
# unless it is said to the millisecond. A quota spent until a reset this near is waited
# out by its budget, quietly; a later one is a pause, told.
RESET_RESOLUTION = 1.0
SHORT_WAIT = 2.0
# A quota of this period or longer (an hour, a day) is no window the bucket keeps: it is
# followed by what remains of it, and told for the database at most every TELL_EVERY s.
LONG_PERIOD = 3600.0
TELL_EVERY = 60.0
# The statuses of refusals whose body may say more (a wait, a provider's error code).
REFUSALS = (403, 429)
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
        self._stop(seconds, "%s asks to wait %.0fs (%s)", key, seconds, why)
        return True

    def spent(self, key: str, seconds: float, rate: str) -> None:
        """The allowance of ``rate`` (RATELIMIT_RATE's) is spent: the next request may go in
        ``seconds``, more than RATELIMIT_MAX_PAUSE. The crawl stops, says when it may go on,
        and tells it (``allowance_spent``) for the database."""
        what = "%s: the allowance of RATELIMIT_RATE's %s is spent, the next request may go in %.0fs"
        if self._stop(seconds, what, self.names.get(key, key), rate, seconds):
            until = self.clock() + seconds
            self.crawler.signals.send_catch_log(
                signal=allowance_spent, bucket=key, rate=rate, until=until
            )

    def _stop(self, seconds: float, what: str, *args: object) -> bool:
        """Stop the crawl (once), saying when to run the same command again."""
        if self.stopping:
            return False
        self.stopping = True
        # Said to the second, rounded up: never a time when it is still too early.
        resume_at = datetime.fromtimestamp(math.ceil(self.clock() + seconds), tz=UTC)
        self.stats.set_value("ratelimit/resume_after", resume_at.isoformat(timespec="seconds"))
        logger.warning(
            f"{what}, more than RATELIMIT_MAX_PAUSE=%gs: stopping. "
            "Run the same command again after %s to continue.",
            *args, self.max_pause, resume_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
        )  # fmt: skip
        end_crawl(self.crawler, PAUSED)
        return True


class Feedback:
    """Heeds each answer of the API for the bucket its request was booked in.

    What an answer says is read by :func:`ingest.ratelimit.dialects.hear`, in the standard
    forms and the providers' own. A refusal for the rate (a 429; a 403 with nothing
    remaining, naming a wait or saying so in its body) pauses every request on that bucket
    until the time the server names (``Retry-After``, ``retry-after-ms``, a body's
    ``retry_after``; else the quota's reset; else a backoff that doubles with each 429 in a
    row), teaches the bucket what it can (:mod:`ingest.ratelimit.learning`), and goes back
    to the scheduler, to spend a token again when it is sent; after RATELIMIT_RETRY_TIMES
    of them in a row it is given up. A 503 with ``Retry-After`` pauses too. Quota headers
    are followed: nothing is spent when nothing is left, an announced window is adopted,
    and a quota of a long period is told for the database.
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
        self._told: dict[tuple[str, str], tuple[float, bool]] = {}
        self._unread: set[str] = set()

    async def answered(self, key: str, request: Request, response: Response) -> Request | Response:
        """The answer to ``request``, booked in the bucket ``key``: the answer itself, or the
        request again when it was refused for the rate and goes back to the queue."""
        sent_at = request.meta.get(SENT_META, -math.inf)
        status, now = response.status, self.clock()
        said = hear(status, response.headers, response.body if status in REFUSALS else b"", now=now)
        if said.unreadable:
            self._unreadable(key, said.unreadable)
        if said.quotas:
            await self._follow_quotas(key, said, sent_at)
        if said.refused:
            await self._refused(key, sent_at, status, said)
            return self._requeue(request, response)
        if status == 503 and said.wait is not None:
            await self.pauses.pause(key, said.wait, f"{response_status_message(503)}, {said.why}")
        elif status == 304:
            # Says nothing of the pace the API takes: no lesson. Free, its token comes back.
            if not self.count_304:
                await self.backend.run(key, TokenBucket.refund, sent_at)
        elif 200 <= status < 400:
            self._consecutive_429.pop(key, None)
            if await self.backend.run(key, lessons.succeeded):
                await self.pace(key, level=logging.DEBUG)
        return response

    async def _refused(self, key: str, sent_at: float, status: int, said: Said) -> None:
        """A refusal for the rate: learnt from, then one pause for the bucket, as long as the
        answer names (``Retry-After`` and its kin), else until a spent quota's reset, else a
        backoff that doubles with each refusal in a row."""
        if key in self.pauses.key_stats:
            self.stats.inc_value(f"{self.pauses.key_stats[key]}/429")
        # A limit said with no window (Atlassian's X-RateLimit-Limit) names the count a
        # refusal's window holds.
        announced = frozenset(q.limit for q in said.quotas if q.of_requests and q.limit)
        lesson = await self.learn(key, sent_at, status, said.wait, announced)
        wait, why = said.wait, said.why
        resets = [q.reset for q in said.quotas if q.exhausted and q.reset]
        if wait is not None and lesson.hold > wait:
            # A proxy's fixed Retry-After, shorter than the window the 429 showed.
            wait, why = lessons.held(wait, lesson), f"{why}, and the limit inferred"
        elif wait is None and resets:
            wait, why = max(resets), "quota exhausted until its reset"
        elif wait is None:
            count = self._consecutive_429.get(key, 0) + 1
            self._consecutive_429[key] = count
            wait = exponential(count, base=BACKOFF_BASE, cap=BACKOFF_MAX)
            why = "no Retry-After: backing off"
        await self.pauses.pause(key, wait, f"{response_status_message(status)}, {why}")

    async def _follow_quotas(self, key: str, said: Said, sent_at: float) -> None:
        """Every quota the answer announces: the strictest window of requests adopted as one
        more rate; the budget of the one closest to exhaustion kept to (nothing spent when
        nothing is left); any other quota spent (tokens, a day's) waited out; a quota of a
        long period told, for the database."""
        quotas = said.quotas
        windows = [
            (q, Rate(q.limit, q.window)) for q in quotas if q.of_requests and q.limit and q.window
        ]
        short = [rate for _, rate in windows if rate.period < LONG_PERIOD]
        if short:
            rate = min(short, key=lambda r: r.per_second)
            if await self.backend.run(key, TokenBucket.adopt, rate):
                logger.info("%s announces a quota of %s: pacing by it too", key, rate)
                await self.pace(key, "announced by the server")
        for q, rate in windows:
            if rate.period >= LONG_PERIOD:
                self._tell_long(key, q)
        stated = said.binding
        if stated is not None and stated.remaining is not None:
            self.stats.set_value("ratelimit/quota_remaining", stated.remaining)
        if stated is not None and stated.reset is not None:
            self.stats.set_value("ratelimit/quota_reset_at", round(self.clock() + stated.reset, 3))
        if said.refused and said.wait is not None:
            return  # the wait it names is the word to follow
        budgeted = binding(q for q in quotas if q.reset is not None)
        if budgeted is not None:
            await self._budget(key, budgeted, sent_at)
        for q in quotas:
            if q.remaining != 0 or q is budgeted:
                continue
            if q.reset is not None and (q.exact or q.reset > RESET_RESOLUTION):
                await self.pauses.pause(key, q.reset, f"nothing remaining in {_named(q)}")
            elif q.reset is None and q.of_requests and q.window and q.window >= LONG_PERIOD:
                # Spent, and its reset not said (a day's, at the account's midnight, or
                # rolling): it is back within one window at the latest.
                await self.pauses.pause(key, q.window, f"{_named(q)} spent, its reset not said")

    async def _budget(self, key: str, quota: Quota, sent_at: float) -> None:
        """Nothing more sent than ``quota`` has left until its reset."""
        assert quota.remaining is not None and quota.reset is not None
        if quota.exhausted and quota.reset <= RESET_RESOLUTION and not quota.exact:
            # "None left, back within a second" is all a bucket refilling faster than
            # once a second can say in whole seconds: the pace, not this, decides.
            return
        if quota.exhausted and quota.reset > SHORT_WAIT:
            await self.pauses.pause(
                key, quota.reset, "nothing remaining in the quota until its reset"
            )
        else:
            remaining, reset = quota.remaining, quota.reset
            await self.backend.run(key, TokenBucket.budget, remaining, reset, sent_at)

    def _tell_long(self, key: str, quota: Quota) -> None:
        """A quota of an hour or more, as the server last said it: for ingest-plan and the
        next run (kept in the database), told at most every TELL_EVERY seconds."""
        now = self.clock()
        last = self._told.get((key, quota.name))
        if last is not None and now - last[0] < TELL_EVERY and last[1] == (quota.remaining == 0):
            return
        self._told[(key, quota.name)] = (now, quota.remaining == 0)
        self.crawler.signals.send_catch_log(signal=quota_heard, bucket=key, quota=quota, at=now)

    def _unreadable(self, key: str, names: tuple[str, ...]) -> None:
        """Quota headers that cannot be read are ignored: counted, and said once each."""
        self.stats.inc_value("ratelimit/header_unreadable")
        for name in names:
            self.stats.inc_value(f"ratelimit/header_unreadable/{name}")
            if name not in self._unread:
                self._unread.add(name)
                logger.warning("Cannot read the header %s in %s's answers: ignored", name, key)

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
        self,
        key: str,
        sent_at: float,
        status: int,
        retry_after: float | None,
        announced: frozenset[int] = frozenset(),
    ) -> lessons.Lesson:
        """Hands the refusal of the request sent at ``sent_at`` to the bucket; one log line
        each time the inferred limit changes, saying from what."""
        lesson = await self.backend.run(
            key, lessons.limited, sent_at, retry_after, self.clock(), announced
        )
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


def _named(quota: Quota) -> str:
    return f"the {quota.name} quota" if quota.name else "a quota"
