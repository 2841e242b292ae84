"""Token-bucket arithmetic, and where the bucket's state lives."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ingest.config import Rate

# Each rate is kept this much slower than nominal, so that a send that goes a
# little late does not make the window after it a little too full.
MARGIN = 0.002
# With a burst of 1, two sends are never closer than the pacing interval plus this
# much, measured when they actually go. Slots are booked ahead on an ideal
# timeline; without this, a request woken late (a busy event loop) would be
# followed at once by the next one, on time: a burst that a server bucket with no
# burst rejects.
SPACING = 0.005


@dataclass(frozen=True, slots=True)
class Reservation:
    """A send slot: wait ``delay`` seconds, then go, unless the bucket's epoch moved."""

    delay: float
    epoch: int


@dataclass(frozen=True, slots=True)
class Pause:
    """The outcome of asking for a pause: whether it began a new one, how long is
    left, and how many seconds it added to the time already paused."""

    started: bool
    remaining: float
    added: float


class TokenBucket:
    """Reservations against several rates at once, decided together.

    Every rate is a sliding window: at most ``limit`` sends in any ``period``
    (the strictest reading of a quota, safe against fixed windows, sliding logs
    and buckets alike). The rate with the shortest period also sets the pace:
    a bucket of ``burst`` tokens refilled at that rate (GCRA), so that with the
    default burst of 1 requests are evenly spaced and nothing goes at once.
    """

    def __init__(
        self,
        rates: Sequence[Rate],
        *,
        burst: int = 1,
        margin: float = MARGIN,
        spacing: float = SPACING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not rates:
            raise ValueError("a bucket needs at least one rate")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst!r}")
        self.clock = clock
        self.burst = burst
        self.margin = margin
        self.spacing = spacing
        self.epoch = 0
        self.paused_until = -math.inf
        self._tat = -math.inf  # theoretical arrival time of the next token (GCRA)
        self._last_sent = -math.inf
        self.set_rates(rates)

    def set_rates(self, rates: Sequence[Rate]) -> None:
        """Adopt new rates; the sends already made keep counting against them."""
        old = getattr(self, "_sends", {})
        self.rates = tuple(sorted(rates, key=lambda r: (r.period, r.limit)))
        self._sends: dict[Rate, deque[float]] = {
            rate: deque(old.get(rate, ()), maxlen=rate.limit) for rate in self.rates
        }
        if old:
            history = sorted({t for sends in old.values() for t in sends})
            for rate, sends in self._sends.items():
                if rate not in old:
                    sends.extend(history[-rate.limit :])

    @property
    def interval(self) -> float:
        """Seconds between two sends at the pacing rate."""
        pace = self.rates[0]
        return pace.interval * (1 + self.margin)

    def reserve(self) -> Reservation:
        """Book the earliest slot every rate allows; returns how long to wait for it."""
        now = self.clock()
        at = max(now, self.paused_until, self._tat - (self.burst - 1) * self.interval)
        for rate, sends in self._sends.items():
            if len(sends) == rate.limit:
                at = max(at, sends[0] + rate.period * (1 + self.margin))
        self._tat = max(self._tat, at) + self.interval
        for sends in self._sends.values():
            sends.append(at)
        return Reservation(at - now, self.epoch)

    def confirm(self, epoch: int) -> float | None:
        """At the booked time: 0 = go now (and it counts as sent), a number = wait that
        much more, None = a pause moved the epoch since booking: book again."""
        if epoch != self.epoch:
            return None
        now = self.clock()
        if self.burst == 1:
            wait = self._last_sent + self.rates[0].interval * (1 + self.spacing) - now
            if wait > 0:
                return wait
        self._last_sent = now
        return 0.0

    def pause(self, seconds: float) -> Pause:
        """Hold every send for ``seconds``; then resume one at a time, paced.

        Slots booked for the future are given up (the epoch moves, so their
        holders book again); slots already used keep counting against the rates.
        A pause that falls within the current one changes nothing.
        """
        now = self.clock()
        until = now + seconds
        if until <= self.paused_until:
            return Pause(started=False, remaining=self.paused_until - now, added=0.0)
        started = self.paused_until <= now
        added = until - max(now, self.paused_until)
        self.paused_until = until
        self.epoch += 1
        for sends in self._sends.values():
            while sends and sends[-1] > now:
                sends.pop()
        # After the pause only one token is available: no burst on resume.
        self._tat = until + (self.burst - 1) * self.interval
        return Pause(started=started, remaining=seconds, added=added)

    def remaining_pause(self) -> float:
        return max(0.0, self.paused_until - self.clock())


class Backend(Protocol):
    """Where buckets live: in this process, or shared by several workers."""

    async def reserve(self, key: str) -> Reservation: ...

    async def confirm(self, key: str, epoch: int) -> float | None: ...

    async def pause(self, key: str, seconds: float) -> Pause: ...

    async def remaining_pause(self, key: str) -> float: ...

    async def close(self) -> None: ...


class MemoryBackend:
    """One bucket per API in this process."""

    def __init__(
        self,
        rates: Sequence[Rate],
        *,
        burst: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rates, self.burst, self.clock = tuple(rates), burst, clock
        self.buckets: dict[str, TokenBucket] = {}

    def bucket(self, key: str) -> TokenBucket:
        if key not in self.buckets:
            self.buckets[key] = TokenBucket(self.rates, burst=self.burst, clock=self.clock)
        return self.buckets[key]

    async def reserve(self, key: str) -> Reservation:
        return self.bucket(key).reserve()

    async def confirm(self, key: str, epoch: int) -> float | None:
        return self.bucket(key).confirm(epoch)

    async def pause(self, key: str, seconds: float) -> Pause:
        return self.bucket(key).pause(seconds)

    async def remaining_pause(self, key: str) -> float:
        return self.bucket(key).remaining_pause()

    async def close(self) -> None:
        self.buckets.clear()
