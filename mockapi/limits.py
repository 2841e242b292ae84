"""Quota algorithms as servers implement them, on a given clock: fixed windows (aligned to the
clock or to the first request), sliding logs (refusals counted or not), HAProxy's sliding
window counter, nginx's leaky bucket (limit_req) and a refilling token bucket."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

ALGORITHMS = (
    "fixed", "fixed-first", "sliding", "sliding-accepted", "counter", "nginx", "token",
)  # fmt: skip
# Absorbs float noise, so that a client pacing at exactly the limit is not rejected by 1e-16 s.
EPSILON = 1e-9
Clock = Callable[[], float]


def ceil_seconds(seconds: float) -> int:
    """Whole seconds, rounded up, ignoring float noise."""
    return max(0, math.ceil(seconds - EPSILON))


@dataclass(frozen=True)
class Limit:
    """At most `count` requests per `period` seconds."""

    count: int
    period: float

    @property
    def rate(self) -> float:
        return self.count / self.period


def parse_limits(value: str) -> list[Limit]:
    """`100/60,5000/3600` → limits; `none` → no limit."""
    if value.strip().lower() == "none":
        return []
    limits = []
    for part in value.split(","):
        count, _, period = part.strip().partition("/")
        try:
            limit = Limit(int(count), float(period))
        except ValueError:
            limit = Limit(0, 0)
        if limit.count < 1 or not 0 < limit.period < math.inf:
            raise ValueError(f"a limit must look like 100/60 or none, got {part.strip()!r}")
        limits.append(limit)
    return limits


class Window:
    """One limit's bookkeeping; every method takes the current time explicitly."""

    def __init__(self, limit: Limit) -> None:
        self.limit = limit

    @property
    def capacity(self) -> int:
        """The most `remaining` can be: the limit's count (a bucket: its burst)."""
        return self.limit.count

    def wait(self, now: float) -> float:
        """Seconds until a request would be allowed (0: now)."""
        return 0.0 if self.remaining(now) > 0 else self.reset_in(now)

    def record(self, now: float, allowed: bool) -> None:
        raise NotImplementedError

    def remaining(self, now: float) -> int:
        raise NotImplementedError

    def reset_in(self, now: float) -> float:
        """Seconds until more capacity frees up (0: none is used)."""
        raise NotImplementedError


class FixedWindow(Window):
    """`count` per window aligned on epoch multiples of `period`; rejections are free."""

    def __init__(self, limit: Limit) -> None:
        super().__init__(limit)
        self.window, self.used = -math.inf, 0

    def _roll(self, now: float) -> None:
        window = math.floor(now / self.limit.period)
        if window != self.window:
            self.window, self.used = window, 0

    def record(self, now: float, allowed: bool) -> None:
        self._roll(now)
        self.used += allowed

    def remaining(self, now: float) -> int:
        self._roll(now)
        return max(0, self.limit.count - self.used)

    def reset_in(self, now: float) -> float:
        return (math.floor(now / self.limit.period) + 1) * self.limit.period - now


class SlidingLog(Window):
    """At most `count` arrivals in the last `period` seconds, rejected arrivals included."""

    def __init__(self, limit: Limit) -> None:
        super().__init__(limit)
        self.log = deque[float]()

    def _prune(self, now: float) -> None:
        while self.log and self.log[0] <= now - self.limit.period + EPSILON:
            self.log.popleft()

    def record(self, now: float, allowed: bool) -> None:
        self._prune(now)
        self.log.append(now)

    def remaining(self, now: float) -> int:
        self._prune(now)
        return max(0, self.limit.count - len(self.log))

    def reset_in(self, now: float) -> float:
        self._prune(now)
        if not self.log:
            return 0.0
        # The arrival whose expiry brings the count back under the cap, or one lower.
        return self.log[max(0, len(self.log) - self.limit.count)] + self.limit.period - now


class RefillingBucket(Window):
    """Holds up to `burst` tokens, refilled at count/period per second, starting full."""

    def __init__(self, limit: Limit, burst: int = 1) -> None:
        super().__init__(limit)
        self.burst, self.tokens, self.last = burst, float(burst), -math.inf

    @property
    def capacity(self) -> int:
        return self.burst

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self.last)
        self.tokens = min(float(self.burst), self.tokens + elapsed * self.limit.rate)
        self.last = max(self.last, now)

    def record(self, now: float, allowed: bool) -> None:
        self._refill(now)
        if allowed:
            self.tokens = max(0.0, self.tokens - 1)

    def remaining(self, now: float) -> int:
        self._refill(now)
        return math.floor(self.tokens + EPSILON)

    def reset_in(self, now: float) -> float:
        """Seconds until the next whole token."""
        remaining = self.remaining(now)
        return 0.0 if remaining >= self.burst else (remaining + 1 - self.tokens) / self.limit.rate


class FixedFromFirst(FixedWindow):
    """`count` per window of `period`, the windows aligned on the first arrival (as a counter
    with an expiry set by its first hit, e.g. Redis INCR + EXPIRE); refusals are free."""

    def __init__(self, limit: Limit) -> None:
        super().__init__(limit)
        self.origin: float | None = None

    def _index(self, now: float) -> int:
        if self.origin is None:
            self.origin = now
        return math.floor((now - self.origin) / self.limit.period)

    def _roll(self, now: float) -> None:
        window = self._index(now)
        if window != self.window:
            self.window, self.used = window, 0

    def reset_in(self, now: float) -> float:
        index = self._index(now)
        assert self.origin is not None
        return self.origin + (index + 1) * self.limit.period - now


class SlidingAccepted(SlidingLog):
    """At most `count` accepted arrivals in the last `period` seconds: refusals are free."""

    def record(self, now: float, allowed: bool) -> None:
        self._prune(now)
        if allowed:
            self.log.append(now)


class WindowCounter(Window):
    """HAProxy's `http_req_rate(period)` (its freq_ctr_period), checked as in
    `http-request track-sc0 src` then `deny if { sc_http_req_rate(0) gt count }`: every
    arrival is counted, refused or not, and one is refused when the current period's count
    plus the previous period's, weighted by the share of it still inside the last
    `period`, is over `count`. Periods follow each other from the first arrival."""

    def __init__(self, limit: Limit) -> None:
        super().__init__(limit)
        self.start: float | None = None  # the current period's start
        self.curr = self.prev = 0

    def _rotate(self, now: float) -> None:
        period = self.limit.period
        if self.start is None:
            self.start = now
        passed = math.floor((now - self.start) / period)
        if passed >= 1:
            self.prev = self.curr if passed == 1 else 0
            self.curr = 0
            self.start += passed * period

    def estimate(self, now: float, extra: int = 0) -> int:
        """The rate HAProxy reads, with ``extra`` more arrivals counted in it."""
        self._rotate(now)
        assert self.start is not None
        left = max(0.0, self.start + self.limit.period - now)
        return self.curr + extra + math.floor(self.prev * left / self.limit.period)

    def wait(self, now: float) -> float:
        if self.estimate(now, extra=1) <= self.limit.count:
            return 0.0
        return max(self.reset_in(now), 0.001)

    def record(self, now: float, allowed: bool) -> None:
        self._rotate(now)
        self.curr += 1

    def remaining(self, now: float) -> int:
        return max(0, self.limit.count - self.estimate(now))

    def reset_in(self, now: float) -> float:
        """Seconds until one more arrival would be let through (a step of a millisecond)."""
        self._rotate(now)
        assert self.start is not None
        period, count, curr, prev = self.limit.period, self.limit.count, self.curr, self.prev
        end = self.start + period
        if curr + 1 <= count and prev:  # within this period, once enough of prev has aged out
            room = count - curr - 1  # floor(prev * left / period) <= room: left under this
            left = (room + 1) * period / prev
            return end - left - now + 0.001 if end - left >= now else 0.0
        if curr + 1 <= count:
            return 0.0
        # The next period: this one's count weighs as prev, falling as that period goes.
        left = count * period / curr if curr else period
        return max(0.0, end + period - left - now) + 0.001


class NginxLeakyBucket(Window):
    """nginx's `limit_req zone=… burst=B` (ngx_http_limit_req_module): a leaky bucket at
    `count`/`period` a second, on nginx's millisecond clock. An arrival's excess is the
    last accepted one's, less what leaked since, plus one; it is refused when over
    `burst` (refusals are free), else accepted, and without `nodelay` answered once its
    excess has leaked (:meth:`delay`)."""

    def __init__(self, limit: Limit, burst: int = 0, nodelay: bool = True) -> None:
        super().__init__(limit)
        self.burst, self.nodelay = burst, nodelay
        self.excess = 0.0
        self.last_ms: int | None = None

    def _excess(self, now: float) -> float:
        if self.last_ms is None:
            return 0.0
        elapsed = max(0, math.floor(now * 1000) - self.last_ms)
        return max(0.0, self.excess - self.limit.rate * elapsed / 1000 + 1)

    def wait(self, now: float) -> float:
        excess = self._excess(now)
        return 0.0 if excess <= self.burst + EPSILON else (excess - self.burst) / self.limit.rate

    def record(self, now: float, allowed: bool) -> None:
        if allowed:
            self.excess = self._excess(now)
            self.last_ms = math.floor(now * 1000)

    def delay(self) -> float:
        """Seconds an accepted arrival is held before it is answered (0 with nodelay)."""
        return 0.0 if self.nodelay else self.excess / self.limit.rate

    def remaining(self, now: float) -> int:
        return max(0, math.floor(self.burst + 1 - self._excess(now) + EPSILON))

    def reset_in(self, now: float) -> float:
        return self.wait(now)


@dataclass(frozen=True)
class QuotaView:
    """One limit as quota headers announce it: what is left, and when more frees up."""

    limit: Limit
    remaining: int
    reset_in: float
    capacity: int


class RateLimiter:
    """Several limits at once: a request passes only if all allow it, and then uses all."""

    def __init__(
        self,
        limits: Iterable[Limit],
        algorithm: str = "fixed",
        burst: int = 1,
        clock: Clock = time.time,
        *,
        nodelay: bool = True,
    ) -> None:
        if algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
        self.limits, self.algorithm, self.burst, self.clock = list(limits), algorithm, burst, clock
        self.nodelay = nodelay
        self.reset()

    def reset(self) -> None:
        kinds: dict[str, Callable[[Limit], Window]] = {
            "fixed": FixedWindow,
            "fixed-first": FixedFromFirst,
            "sliding": SlidingLog,
            "sliding-accepted": SlidingAccepted,
            "counter": WindowCounter,
            "nginx": lambda limit: NginxLeakyBucket(limit, self.burst, self.nodelay),
            "token": lambda limit: RefillingBucket(limit, self.burst),
        }
        self.windows: list[Window] = [kinds[self.algorithm](limit) for limit in self.limits]

    def delay(self) -> float:
        """Seconds the arrival just accepted is held before its answer (nginx without nodelay)."""
        return max((w.delay() for w in self.windows if isinstance(w, NginxLeakyBucket)), default=0)

    def wait(self, now: float | None = None) -> float:
        now = self.clock() if now is None else now
        return max((window.wait(now) for window in self.windows), default=0.0)

    def record(self, now: float, allowed: bool) -> None:
        for window in self.windows:
            window.record(now, allowed)

    def hit(self, now: float | None = None) -> float:
        """Count one arrival: 0.0 if allowed, else the seconds until one would be."""
        return hit_all([self], self.clock() if now is None else now)

    def reject(self, now: float | None = None) -> None:
        """Count an arrival refused for another reason (only a sliding log remembers it)."""
        self.record(self.clock() if now is None else now, allowed=False)

    def quotas(self, now: float | None = None) -> list[QuotaView]:
        """Every limit as quota headers announce it, in the order given."""
        now = self.clock() if now is None else now
        return [
            QuotaView(w.limit, w.remaining(now), w.reset_in(now), w.capacity) for w in self.windows
        ]

    def quota(self, now: float | None = None) -> QuotaView | None:
        """The most restrictive limit: least remaining, then lowest rate."""
        return min(self.quotas(now), key=lambda q: (q.remaining, q.limit.rate), default=None)


def hit_all(limiters: Sequence[RateLimiter], now: float) -> float:
    """One arrival against several limiters: allowed only if all allow it, and then uses all.

    Returns 0.0 if allowed, else the seconds until an arrival would be.
    """
    allowed = all(limiter.wait(now) <= 0 for limiter in limiters)
    for limiter in limiters:
        limiter.record(now, allowed)
    # Measured after recording: a sliding log's wait grows with the refused arrival itself.
    return 0.0 if allowed else max(limiter.wait(now) for limiter in limiters)
