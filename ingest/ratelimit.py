"""Token-bucket arithmetic, and where the bucket's state lives."""

from __future__ import annotations

import math
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ingest.config import Rate, by_period

# Each rate is kept this much slower than nominal, so that a send that goes a
# little late does not make the window after it a little too full. A window is
# also kept at least WINDOW_MARGIN seconds longer: a request on a new connection
# (TCP, TLS) reaches the server later than one on a warm connection sent after it.
MARGIN = 0.002
WINDOW_MARGIN = 0.025
# With a burst of 1, two sends are never closer than the pacing interval plus this
# much, measured when they actually go. Slots are booked ahead on an ideal
# timeline; without this, a request woken late (a busy event loop) would be
# followed at once by the next one, on time: a burst that a server bucket with no
# burst rejects.
SPACING = 0.005
# The guard above holds only from this interval up (1,200 requests a minute and
# slower). A request's way to the server (the event loops at both ends, the
# network) varies by a few tenths of a millisecond, so a shorter interval's share
# of SPACING guards nothing; and a guarded send must go on time to tens of µs,
# which costs CPU at every send. Shorter intervals follow the booked timeline,
# where a send that goes late does not delay the next ones.
GUARD_MIN_INTERVAL = 0.05
# Learning from unexpected 429s: a lone one (timing noise against a bucket with no
# burst, a limit a hair lower than configured) lowers the pace a little; another
# within the pacing period means the limit really is lower, and the pace drops by
# DECREASE at each. It then climbs back by steps, fast while well under the pace of
# the last 429, slowly near it.
GENTLE_DECREASE = 0.97
DECREASE = 0.85
FAST_STEP, SLOW_STEP = 0.05, 0.01
MIN_SCALE = 0.05
# After a pause every client of the API comes back at once unless each waits a
# little longer, at random: this fraction of the pause, at most JITTER_MAX seconds.
JITTER, JITTER_MAX = 0.05, 1.0


@dataclass(frozen=True, slots=True)
class Reservation:
    """A send slot: wait ``delay`` seconds, then confirm it (``at``: the slot's time).
    ``precise``: the send is guarded, so the waits must end on time to tens of µs
    rather than to the millisecond of the event loop's timers. ``imposed``: the part
    of the delay the server imposed (a pause, a quota spent until its reset), as
    opposed to the pacing of the configured rates."""

    delay: float
    epoch: int
    at: float
    precise: bool = False
    imposed: float = 0.0


@dataclass(frozen=True, slots=True)
class Confirmation:
    """At the slot's time: ``wait`` None means the slot is void (a pause or a new
    quota came in between): book again; a positive ``wait`` means wait that much
    more and confirm again; 0 means go: the send counts as made ``at``."""

    wait: float | None
    at: float


@dataclass(frozen=True, slots=True)
class Pause:
    """The outcome of asking for a pause: whether it began a new one, how long is
    left, and how many seconds it added to the time already paused."""

    started: bool
    remaining: float
    added: float


class TokenBucket:
    """Bookings against several rates at once, decided together, and what the
    server's answers teach about them.

    Every rate is a sliding window: at most ``limit`` sends in any ``period`` (the
    strictest reading of a quota, safe against fixed windows, sliding logs and
    buckets alike). The rate with the shortest period also sets the pace: a bucket
    of ``burst`` tokens refilled at that rate (GCRA), so that with the default
    burst of 1 requests are evenly spaced and nothing goes at once.
    """

    def __init__(
        self,
        rates: Sequence[Rate],
        *,
        burst: int = 1,
        margin: float = MARGIN,
        spacing: float = SPACING,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if not rates:
            raise ValueError("a bucket needs at least one rate")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst!r}")
        self.configured = tuple(rates)
        self.announced: Rate | None = None
        self.rates = by_period(self.configured)
        self.burst, self.margin, self.spacing = burst, margin, spacing
        self.clock, self.rand = clock, rand
        self.scale = 1.0  # the share of the configured pace in use; < 1 after 429s
        self.ceiling = 1.0  # the scale at the last unexpected 429
        self._changed = self._limited_at = -math.inf
        self.epoch = 0
        self.paused_until = self.pause_began = -math.inf
        self._budget_until, self._budget_left = -math.inf, 0
        self._tat = -math.inf  # theoretical arrival time of the next token (GCRA)
        self._last_sent = -math.inf
        self._sends: deque[float] = deque(maxlen=max(r.limit for r in self.rates))

    # -------------------------------------------------------------- the rates

    @property
    def interval(self) -> float:
        """Seconds between two sends at the pacing rate."""
        return self.rates[0].interval / self.scale

    @property
    def guarded(self) -> bool:
        """Whether actual sends are kept at least an interval (plus SPACING) apart."""
        return self.burst == 1 and self.interval >= GUARD_MIN_INTERVAL

    @property
    def per_minute(self) -> float:
        """The pace in use, in requests per minute, all rates considered."""
        return 60 * min(r.per_second for r in self.rates) * self.scale

    def adopt(self, rate: Rate) -> bool:
        """Take the quota the server announces as one more rate; True if it is new."""
        if rate == self.announced:
            return False
        self.announced = rate
        self.rates = by_period((*self.configured, rate))
        if rate.limit > (self._sends.maxlen or 0):
            self._sends = deque(self._sends, maxlen=rate.limit)
        self._void_bookings(self.clock())
        return True

    # -------------------------------------------------------------- booking

    def reserve(self) -> Reservation:
        """Book the earliest slot every rate allows; returns how long to wait for it."""
        now = self.clock()
        interval = self.interval * (1 + self.margin)
        at = max(now, self.paused_until, self._tat - (self.burst - 1) * interval)
        for rate in self.rates:
            if len(self._sends) >= rate.limit:
                window = rate.period / self.scale
                window += max(window * self.margin, WINDOW_MARGIN if self.margin else 0.0)
                at = max(at, self._sends[-rate.limit] + window)
        imposed = self.paused_until
        if at < self._budget_until:
            if self._budget_left > 0:
                self._budget_left -= 1
            else:
                at = imposed = max(imposed, self._budget_until)
        self._tat = max(self._tat, at) + interval
        self._sends.append(at)
        return Reservation(at - now, self.epoch, at, self.guarded, max(0.0, imposed - now))

    def confirm(self, slot: Reservation) -> Confirmation:
        """Called at the booked time, just before sending."""
        now = self.clock()
        if slot.epoch != self.epoch:
            return Confirmation(None, now)
        if self.guarded:
            wait = self._last_sent + self.interval * (1 + self.spacing) - now
            if wait > 0:
                return Confirmation(wait, now)
        self._last_sent = now
        self._record(slot.at, now)
        return Confirmation(0.0, now)

    def _record(self, booked: float, sent: float) -> None:
        """The windows count a send when it went, which may be later than booked."""
        sends = self._sends
        for i in range(len(sends) - 1, -1, -1):
            if sends[i] < booked:
                return
            if sends[i] == booked:
                sends[i] = sent
                j = i
                while j + 1 < len(sends) and sends[j] > sends[j + 1]:
                    sends[j], sends[j + 1] = sends[j + 1], sends[j]
                    j += 1
                return

    def _void_bookings(self, now: float) -> None:
        """Give up the slots booked for the future; their holders book again."""
        self.epoch += 1
        while self._sends and self._sends[-1] > now:
            self._sends.pop()
        last = self._sends[-1] if self._sends else -math.inf
        self._tat = last + self.interval * (1 + self.margin)

    # -------------------------------------------------------------- feedback

    def pause(self, seconds: float) -> Pause:
        """Hold every send for ``seconds`` (plus a little jitter); then resume one at a
        time, paced. A pause that falls within the current one changes nothing."""
        now = self.clock()
        until = now + seconds + self.rand() * min(JITTER * seconds, JITTER_MAX)
        if until <= self.paused_until:
            return Pause(started=False, remaining=self.paused_until - now, added=0.0)
        started = self.paused_until <= now
        if started:
            self.pause_began = now
        added = until - max(now, self.paused_until)
        self.paused_until = until
        self._void_bookings(now)
        # After the pause only one token is available: no burst on resume.
        self._tat = until + (self.burst - 1) * self.interval
        return Pause(started=started, remaining=until - now, added=added)

    def restart(self) -> None:
        """The next send goes an interval from now at the soonest, and no booking made
        before stands: pacing starts again from this moment."""
        now = self.clock()
        self._void_bookings(now)
        self._tat = max(self._tat, now + self.interval * (1 + self.margin))

    def remaining_pause(self) -> float:
        return max(0.0, self.paused_until - self.clock())

    def budget(self, remaining: int, reset: float, sent_at: float) -> None:
        """The server says ``remaining`` requests are left for the next ``reset``
        seconds, as of when it received the request sent at ``sent_at``: the sends
        made since then are not counted in it yet."""
        now = self.clock()
        unseen = sum(1 for t in self._sends if t > sent_at)
        self._budget_until = now + reset
        self._budget_left = remaining - unseen
        if self._budget_left < 0:
            self._void_bookings(now)
            self._budget_left = remaining - sum(1 for t in self._sends if t > sent_at)

    def limited(self, sent_at: float) -> bool:
        """A 429 the rates did not predict: slow down. Answers to requests sent
        before the current pause began are part of what caused it, not news."""
        if sent_at <= self.pause_began:
            return False
        now = self.clock()
        again = now - self._limited_at < self.rates[0].period
        self._limited_at = now
        self.ceiling = self.scale
        self.scale = max(MIN_SCALE, self.scale * (DECREASE if again else GENTLE_DECREASE))
        self._changed = now
        return True

    def succeeded(self) -> bool:
        """An answer that was not rate limited: after a quiet while, probe a little
        faster. Returns True if the pace changed."""
        now = self.clock()
        if self.scale >= 1.0 or now - self._changed < self.rates[0].period / 6:
            return False
        step = FAST_STEP if self.scale < 0.95 * self.ceiling else SLOW_STEP
        self.scale = min(1.0, self.scale + step)
        self._changed = now
        return True


class Backend(Protocol):
    """Where buckets live: in this process, or shared by several workers."""

    async def reserve(self, key: str) -> Reservation: ...

    async def confirm(self, key: str, slot: Reservation) -> Confirmation: ...

    async def pause(self, key: str, seconds: float) -> Pause: ...

    async def restart(self, key: str) -> None: ...

    async def budget(self, key: str, remaining: int, reset: float, sent_at: float) -> None: ...

    async def adopt(self, key: str, rate: Rate) -> bool: ...

    async def limited(self, key: str, sent_at: float) -> bool: ...

    async def succeeded(self, key: str) -> bool: ...

    async def per_minute(self, key: str) -> float: ...

    async def close(self) -> None: ...


class MemoryBackend:
    """One bucket per API in this process."""

    def __init__(
        self,
        rates: Sequence[Rate],
        *,
        burst: int = 1,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.rates, self.burst, self.clock, self.rand = tuple(rates), burst, clock, rand
        self.buckets: dict[str, TokenBucket] = {}

    def bucket(self, key: str) -> TokenBucket:
        if key not in self.buckets:
            self.buckets[key] = TokenBucket(
                self.rates, burst=self.burst, clock=self.clock, rand=self.rand
            )
        return self.buckets[key]

    async def reserve(self, key: str) -> Reservation:
        return self.bucket(key).reserve()

    async def confirm(self, key: str, slot: Reservation) -> Confirmation:
        return self.bucket(key).confirm(slot)

    async def pause(self, key: str, seconds: float) -> Pause:
        return self.bucket(key).pause(seconds)

    async def restart(self, key: str) -> None:
        self.bucket(key).restart()

    async def budget(self, key: str, remaining: int, reset: float, sent_at: float) -> None:
        self.bucket(key).budget(remaining, reset, sent_at)

    async def adopt(self, key: str, rate: Rate) -> bool:
        return self.bucket(key).adopt(rate)

    async def limited(self, key: str, sent_at: float) -> bool:
        return self.bucket(key).limited(sent_at)

    async def succeeded(self, key: str) -> bool:
        return self.bucket(key).succeeded()

    async def per_minute(self, key: str) -> float:
        return self.bucket(key).per_minute

    async def close(self) -> None:
        self.buckets.clear()
