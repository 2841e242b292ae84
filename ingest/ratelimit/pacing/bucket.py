"""Token-bucket arithmetic: when each request may go, and the server's word on when not to.

Pure: the time comes from the ``clock`` a bucket is given, and everything it remembers
is one :class:`BucketState`, which a backend keeps in memory or, shared by several
workers, in Redis. What a refusal teaches about the limit is not here:
:mod:`ingest.ratelimit.learning` reads and changes the same state.
"""

from __future__ import annotations

import math
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ingest.ratelimit.pacing.rates import Rate, by_period
from ingest.ratelimit.pacing.state import BucketState

# With RATELIMIT_RATE=auto, the pace to start from (RATELIMIT_START's default).
START = Rate(60, 60)
# Sends remembered: enough for windows up to a minute or two at ten requests a second,
# for the inference of a limit from a 429 (a window reaching further back than the
# record is not judged); a rate's window looks back as many as its limit, if more.
RECORD = 1024

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
# After a pause every client of the API comes back at once unless each waits a
# little longer, at random: this fraction of the pause, at most JITTER_MAX seconds.
JITTER, JITTER_MAX = 0.05, 1.0


@dataclass(frozen=True, slots=True)
class Reservation:
    """A send slot: wait ``delay`` seconds, then confirm it (``at``: the slot's time).
    ``precise``: the send is guarded, so the waits must end on time to tens of µs
    rather than to the millisecond of the event loop's timers. ``imposed``: the part
    of the delay the server imposed (a pause, a quota spent until its reset), as
    opposed to the pacing of the configured rates. ``held``: the slot was not booked,
    since an allowance already spent (``held_by``: a rate's window full of sends made)
    holds it that long, more than the caller would wait."""

    delay: float
    epoch: int
    at: float
    precise: bool = False
    imposed: float = 0.0
    held: float = 0.0
    held_by: Rate | None = None


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


@dataclass(frozen=True, slots=True)
class Peek:
    """When a slot booked now would come (``at``), without booking it; when the bucket's
    next token came or comes (``ready``: the longer ago, the longer it has been idle);
    when the API last refused this bucket's key (``retired_at``); the bucket's time."""

    at: float
    ready: float
    retired_at: float
    now: float


class TokenBucket:
    """Bookings against several rates at once, decided together, and what the
    server's answers teach about them.

    Every rate is a sliding window: at most ``limit`` sends in any ``period`` (the
    strictest reading of a quota, safe against fixed windows, sliding logs and
    buckets alike). The rate with the shortest period also sets the pace: a bucket
    of ``burst`` tokens refilled at that rate (GCRA), so that with the default
    burst of 1 requests are evenly spaced and nothing goes at once. With ``auto``
    the limit is unknown: the pace starts at ``start`` and ramps up until a 429,
    whose limit is then inferred (:mod:`ingest.ratelimit.learning.auto`).
    """

    def __init__(
        self,
        rates: Sequence[Rate],
        *,
        burst: int = 1,
        auto: bool = False,
        start: Rate = START,
        margin: float = MARGIN,
        spacing: float = SPACING,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
        state: BucketState | None = None,
    ) -> None:
        if not rates and not auto:
            raise ValueError("a bucket needs at least one rate, or auto")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst!r}")
        self.configured = tuple(rates)
        self.burst, self.margin, self.spacing = burst, margin, spacing
        self.clock, self.rand = clock, rand
        self.auto = auto
        self.state = state if state is not None else BucketState()
        if auto and not self.state.pace:
            self.state.pace = start.per_second
        self._rates()

    def _rates(self) -> None:
        """The rates in force: the configured ones, the one the server announces and
        those inferred from 429s."""
        announced = self.state.announced
        inferred = tuple(Rate(int(e[0]), float(e[1])) for e in self.state.inferred)
        self.pacing = by_period(self.configured + ((Rate(*announced),) if announced else ()))
        self.rates = by_period(self.pacing + inferred)
        # While the limit inferred from the ramp's 429 climbs, it sets the pace but is not
        # yet a window: the ramp's last sends would hold the climb back for a whole one.
        self.windows = self.pacing if self.state.climbing else self.rates
        # The longest window looks back as many sends as its limit: older ones never count.
        keep = max([RECORD, *(r.limit for r in self.rates)])
        if self.state.sends.maxlen != keep:
            self.state.sends = deque(self.state.sends, maxlen=keep)

    # -------------------------------------------------------------- the rates

    @property
    def ramping(self) -> bool:
        """Auto, and nothing known yet of the limit: the pace ramps up."""
        return self.auto and not self.state.inferred and self.state.announced is None

    @property
    def interval(self) -> float:
        """Seconds between two sends at the pacing rate."""
        interval = self.pacing[0].interval if self.pacing else 0.0
        # Inferred limits are paced evenly at the slowest: a server bucket, which a
        # window only approximates, allows no bursts above its rate.
        for limit, period, *_ in self.state.inferred:
            interval = max(interval, period / limit)
        if self.ramping:
            interval = max(interval, 1 / self.state.pace)
        return interval / self.state.scale

    @property
    def guarded(self) -> bool:
        """Whether actual sends are kept at least an interval (plus SPACING) apart."""
        return self.burst == 1 and self.interval >= GUARD_MIN_INTERVAL

    def per_second(self) -> float:
        """The pace in use, in requests per second, all rates considered."""
        per_second = min((r.per_second for r in self.rates), default=math.inf)
        if self.ramping:
            per_second = min(per_second, self.state.pace)
        return per_second * self.state.scale

    def per_minute(self) -> float:
        """The pace in use, in requests per minute, all rates considered."""
        return 60 * self.per_second()

    def rates_changed(self) -> None:
        """The limits in force changed (learnt from a refusal): pace by them from now on,
        and book again what was booked at the old pace."""
        self._rates()
        self._void_bookings(self.clock())

    def keep_for(self) -> float:
        """Seconds a stored copy of this state still matters: while a window or a pause
        does, and a day at least."""
        s, longest = self.state, max((r.period for r in self.rates), default=0.0)
        return max(86_400.0, 2 * longest / s.scale, s.paused_until - self.clock())

    def adopt(self, rate: Rate) -> bool:
        """Take the quota the server announces as one more rate; True if it is new."""
        if (rate.limit, rate.period) == self.state.announced:
            return False
        self.state.announced = (rate.limit, rate.period)
        self._rates()
        self._void_bookings(self.clock())
        return True

    # -------------------------------------------------------------- booking

    def _earliest(self, now: float, not_before: float) -> tuple[float, float, bool]:
        """The earliest slot every rate allows, the part of it the server imposed, and
        whether it spends the budget the server announced."""
        s = self.state
        interval = self.interval * (1 + self.margin)
        at = max(now, not_before, s.paused_until, s.tat - (self.burst - 1) * interval)
        for rate in self.windows:
            if len(s.sends) >= rate.limit:
                at = max(at, s.sends[-rate.limit] + self._window(rate))
        imposed = s.paused_until
        if at < s.budget_until and s.budget_left <= 0:
            at = imposed = max(imposed, s.budget_until)
        return at, imposed, at < s.budget_until

    def _window(self, rate: Rate) -> float:
        """A rate's window as kept: a little longer than nominal (the margins above)."""
        window = rate.period / self.state.scale
        return window + max(window * self.margin, WINDOW_MARGIN if self.margin else 0.0)

    def _held(self, now: float) -> tuple[float, Rate | None]:
        """How long the next slot is held by an allowance spent, and by which rate: a
        window (not the pacing rate's, whose wait is the pace) full of sends made."""
        s, held, by = self.state, 0.0, None
        for rate in self.windows:
            if (self.pacing and rate == self.pacing[0]) or len(s.sends) < rate.limit:
                continue
            oldest = s.sends[-rate.limit]
            if oldest <= now and oldest + self._window(rate) - now > held:
                held, by = oldest + self._window(rate) - now, rate
        return held, by

    def reserve(self, not_before: float = -math.inf, longest: float = math.inf) -> Reservation:
        """Book the earliest slot every rate allows (not before ``not_before``); returns
        how long to wait for it. A slot that an allowance spent holds for more than
        ``longest`` seconds is not booked: the reservation says so (``held``)."""
        s, now = self.state, self.clock()
        at, imposed, spends = self._earliest(now, not_before)
        if at - now > longest:
            held, by = self._held(now)
            if held > longest:
                return Reservation(at - now, s.epoch, at, held=held, held_by=by)
        if spends:
            s.budget_left -= 1
        s.tat = max(s.tat, at) + self.interval * (1 + self.margin)
        s.sends.append(at)
        return Reservation(at - now, s.epoch, at, self.guarded, max(0.0, imposed - now))

    def last_booked(self) -> float:
        """Seconds until the last slot booked goes; 0 once it went (or none is booked), and
        a little while its time has come but it has not gone yet."""
        s = self.state
        if not s.sends or s.sends[-1] <= s.last_sent:
            return 0.0
        return max(s.sends[-1] - self.clock(), SPACING)

    def peek(self, not_before: float = -math.inf) -> Peek:
        """When a slot booked now would come, without booking it."""
        now = self.clock()
        s = self.state
        return Peek(self._earliest(now, not_before)[0], s.tat, s.retired_at, now)

    def retire(self) -> None:
        """The API refused this bucket's key: it is not to be used again, and the slots
        booked on it are void (their holders book on another key)."""
        now = self.clock()
        self.state.retired_at = max(self.state.retired_at, now)
        self._void_bookings(now)

    def confirm(self, slot: Reservation) -> Confirmation:
        """Called at the booked time, just before sending."""
        s, now = self.state, self.clock()
        if slot.epoch != s.epoch:
            return Confirmation(None, now)
        if self.guarded:
            wait = s.last_sent + self.interval * (1 + self.spacing) - now
            if wait > 0:
                return Confirmation(wait, now)
        s.last_sent = now
        self._record(slot.at, now)
        return Confirmation(0.0, now)

    def _record(self, booked: float, sent: float) -> None:
        """The windows count a send when it went, which may be later than booked."""
        sends = self.state.sends
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
        s = self.state
        s.epoch += 1
        while s.sends and s.sends[-1] > now:
            s.sends.pop()
        last = s.sends[-1] if s.sends else -math.inf
        s.tat = last + self.interval * (1 + self.margin)

    def restart(self) -> None:
        """The next send goes an interval from now at the soonest, and no booking made
        before stands: pacing starts again from this moment."""
        now = self.clock()
        self._void_bookings(now)
        self.state.tat = max(self.state.tat, now + self.interval * (1 + self.margin))

    # -------------------------------------------------------------- feedback

    def pause(self, seconds: float) -> Pause:
        """Hold every send for ``seconds`` (plus a little jitter); then resume one at a
        time, paced. A pause that falls within the current one changes nothing."""
        s, now = self.state, self.clock()
        until = now + seconds + self.rand() * min(JITTER * seconds, JITTER_MAX)
        if until <= s.paused_until:
            return Pause(started=False, remaining=s.paused_until - now, added=0.0)
        started = s.paused_until <= now
        if started:
            s.pause_began = now
        added = until - max(now, s.paused_until)
        s.paused_until = until
        self._void_bookings(now)
        # After the pause only one token is available: no burst on resume.
        s.tat = until + (self.burst - 1) * self.interval
        return Pause(started=started, remaining=until - now, added=added)

    def remaining_pause(self) -> float:
        return max(0.0, self.state.paused_until - self.clock())

    def budget(self, remaining: int, reset: float, sent_at: float) -> None:
        """The server says ``remaining`` requests are left for the next ``reset``
        seconds, as of when it received the request sent at ``sent_at``: the sends
        made since then are not counted in it yet."""
        s, now = self.state, self.clock()
        s.budget_until = now + reset
        s.budget_left = remaining - sum(1 for t in s.sends if t > sent_at)
        if s.budget_left < 0:
            self._void_bookings(now)
            s.budget_left = remaining - sum(1 for t in s.sends if t > sent_at)

    def refund(self, sent_at: float) -> None:
        """A send the server did not count (a free 304): out of the windows, its token back."""
        s = self.state
        if sent_at in s.sends:
            s.sends.remove(sent_at)
        self._void_bookings(self.clock())  # the slots booked after it are booked again, sooner
        s.last_sent = s.sends[-1] if s.sends else -math.inf
