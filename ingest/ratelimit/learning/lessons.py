"""What a refusal teaches, in every mode: the limit it shows adopted, or the pace slowed or
stepped back; and what an answer that was not refused moves. The two operations a
backend runs on a bucket for the middleware's feedback (:func:`limited`, :func:`succeeded`);
the rest is pure, on the bucket's state."""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ingest.ratelimit.learning import auto, correction, fitting
from ingest.ratelimit.learning.inference import TOLERANCE, Inference, infer, whole
from ingest.ratelimit.learning.windows import counter_wait
from ingest.ratelimit.pacing.rates import Rate

if TYPE_CHECKING:
    from ingest.ratelimit.pacing.bucket import TokenBucket
    from ingest.ratelimit.pacing.state import BucketState

# The sends of the last REFUSALS unexpected 429s, which a later inference explains too
# when it can.
REFUSALS = 8
# A configured rate is corrected only by an inference clearly slower than the pace in
# use (CONFIGURED_SLOWER); anything closer is timing noise (a bucket with no burst), met
# as before. An inferred limit is refined by one CLEARLY_SLOWER than the pace in use.
CONFIGURED_SLOWER = 0.9
CLEARLY_SLOWER = 0.95
# A 429 to one of the first EARLY sends after a pause teaches no rate.
EARLY = 2
# The period a rate spread over the ramp and its wait is kept as (fitting's, for buckets).
SPAN_PERIOD = 10.0


@dataclass(frozen=True, slots=True)
class Lesson:
    """What an unexpected 429 taught: whether it was news at all (``unexpected``: not an
    answer to a request sent before the current pause), and the limit inferred from it
    when one was adopted (``inferred``), from ``rejections`` unexpected 429s so far."""

    unexpected: bool
    inferred: Inference | None = None
    rejections: int = 0
    ago: float = 0.0  # seconds from the refused request's send to the lesson
    hold: float = 0.0  # seconds from the lesson until the limit taught lets one through

    def __bool__(self) -> bool:
        return self.unexpected


def limited(
    bucket: TokenBucket,
    sent_at: float,
    retry_after: float | None = None,
    epoch: float | None = None,
) -> Lesson:
    """A 429 the rates did not predict, to the request sent at ``sent_at`` (with its
    ``Retry-After``; ``epoch``: the wall clock now, which fixed windows are aligned on):
    adopt the limit it shows when that is clearly slower than the pace in use (or while
    ramping or climbing); otherwise slow down as before. An operation for a backend to run."""
    s, now = bucket.state, bucket.clock()
    offset = 0.0 if epoch is None else epoch - now
    if sent_at not in s.rejected:
        s.rejected.append(sent_at)
    if sent_at <= s.pause_began:
        return Lesson(unexpected=False)
    s.rejections += 1
    sends = sorted(s.sends)
    if (
        bucket.auto
        and s.paused_until > -math.inf
        and (bisect_left(sends, sent_at) - bisect_left(sends, s.paused_until) < EARLY)
    ):
        # Refused right after a pause: the wait was too short (a proxy's fixed
        # Retry-After, a window whose refusals count), which says nothing of the rate.
        s.refusals = [*s.refusals[1 - REFUSALS :], sent_at]
        return Lesson(unexpected=True, rejections=s.rejections)
    since = sends[0] if s.sends.maxlen is not None and len(s.sends) >= s.sends.maxlen else -math.inf
    ramping = bucket.ramping
    found = infer(
        sends,
        set(s.rejected),
        sent_at,
        retry_after,
        since=since,
        offset=offset,
        buckets=bool(s.inferred),
        periods=() if bucket.auto else {rate.period for rate in bucket.configured},
        pace=min((rate.per_second for rate in bucket.configured), default=math.inf),
        resumed=s.paused_until,
        refused=s.refusals,
        ramp=ramping,
    )
    s.refusals = [*s.refusals[1 - REFUSALS :], sent_at]
    if ramping:
        found = spanned(found, sends, set(s.rejected), sent_at, retry_after)
    slower = CLEARLY_SLOWER if bucket.auto or s.inferred else CONFIGURED_SLOWER
    climbing, s.climbing = s.climbing, 0.0
    if found is not None and (
        ramping or climbing or found.per_second < slower * bucket.per_second()
    ):
        before = {entry[1]: entry[0] for entry in s.inferred}
        adopt(s, found)
        if bucket.auto:
            lowered = found.limit < before.get(found.period, 0)
            climb_after(s, found, sends, ramping=ramping, retry_after=retry_after, lowered=lowered)
        s.limited_at = s.ramped = now
        bucket.rates_changed()
        return Lesson(True, found, s.rejections, now - sent_at, held_for(found, sends, now))
    if climbing:
        # Nothing explains it: the last step of the climb was one too many.
        for entry in s.inferred:
            entry[0] = max(1, entry[0] - auto.climbed(climbing, entry[1]))
        s.limited_at = now
        bucket.rates_changed()
        return Lesson(unexpected=True, rejections=s.rejections)
    if ramping:
        # Nothing explains it (too little record): the ramp goes on from a step back.
        s.pace /= auto.GROWTH
        s.ramped = s.limited_at = now
        return Lesson(unexpected=True, rejections=s.rejections)
    correction.slow_down(s, sent_at, bucket.rates[0].period, now)
    return Lesson(unexpected=True, rejections=s.rejections)


def climb_after(
    s: BucketState,
    found: Inference,
    sends: list[float],
    *,
    ramping: bool,
    retry_after: float | None,
    lowered: bool,
) -> None:
    """Whether the limit just adopted climbs, and how far (auto.climb steps it);
    ``lowered``: it replaced a faster one of the same period."""
    if found.kind == "span":
        # Spread over the ramp and its wait: exact against a sliding log, over a fixed
        # window's rate, and as good as the wait a proxy names.
        s.climbing = auto.SPAN_CLIMB * found.per_second
        s.climb_cap = auto.SPAN_CAP * found.per_second
        return
    if ramping:
        if not (found.round and told(found, retry_after)):
            s.climbing, s.climb_cap = auto.CLIMB * found.per_second, 0.0
            if not (found.round or told(found, retry_after)):
                auto.start_climb(s, found, found.at)
        return
    refused_at = fitting.pace_at(sends, found.at)
    pinned = found.kind == "token" and found.burst <= fitting.PINNED
    if refused_at and ((lowered and not found.confirmed) or pinned):
        # A slower limit in place of one that worked, that does not explain the earlier
        # 429s, may be a misreading (a window's burst after a pause, refused again), and
        # a bucket with (almost) no burst is read under the pace refused (fitting's
        # UNDER): either climbs back towards the least pace a 429 refused, while there is
        # room under it. A limit of another period (a second quota) does not.
        s.climb_cap = min(s.climb_cap or math.inf, auto.CAP * refused_at)
        if s.climb_cap > (1 + auto.ROOM) * found.per_second:
            s.climbing = auto.CLIMB * found.per_second


def spanned(
    found: Inference | None,
    sends: list[float],
    rejected: set[float],
    at: float,
    retry_after: float | None,
) -> Inference | None:
    """The ramp's 429 said to wait ``retry_after`` (more than a second): what the server
    took from the first send up to the refusal, spread over that span and the wait, is
    a rate it allowed over a whole window. A ramp makes every short window look fast (its
    last second held the most sends): a hypothesis faster than that is not believed; the
    spread rate is taken instead, to climb from."""
    if retry_after is None or retry_after <= TOLERANCE or not sends:
        return found
    if found is not None and told(found, retry_after):
        return found  # a window that stays full as long as the server said
    taken = sum(1 for t in sends if t < at and t not in rejected)
    span = at - sends[0] + retry_after
    rate = taken / span
    if found is not None and found.per_second <= rate:
        return found
    limit = max(1, math.floor(rate * SPAN_PERIOD))
    return Inference(limit, SPAN_PERIOD, "span", taken, at, wait=retry_after)


def held(retry_after: float, lesson: Lesson) -> float:
    """How long to pause after a 429 that said ``retry_after``: longer when the limit it
    taught stays full longer (a proxy's fixed Retry-After, shorter than the window's
    wait, would only draw another 429 on resuming)."""
    return max(retry_after, lesson.hold)


def held_for(found: Inference, sends: list[float], now: float) -> float:
    """Seconds from ``now`` until ``found`` lets a send through, every send so far counted
    where the server counts refusals too (those in flight at the 429 arrived after it)."""
    w, limit = found.period, found.limit
    if found.kind == "counter":
        origin = found.start - w
        return counter_wait([t for t in sends if t >= origin], w, origin, limit, now)
    if found.kind == "sliding":
        return max(0.0, sends[-limit] + w - now) if len(sends) >= limit else 0.0
    if math.isfinite(found.wait):
        return max(0.0, found.wait - (now - found.at))
    return 0.0


def succeeded(bucket: TokenBucket) -> bool:
    """An answer that was not rate limited: the ramp's step (auto, before any inference),
    the climb's, or after a quiet while a probe a little faster; else the climb back
    after 429s. Returns True if the pace changed. An operation for a backend to run."""
    now = bucket.clock()
    if auto.step(bucket.state, now, ramping=bucket.ramping):
        bucket.rates_changed()  # what was booked at the old pace is booked again
        return True
    return not bucket.ramping and correction.speed_up(bucket.state, bucket.rates[0].period, now)


def told(found: Inference, retry_after: float | None) -> bool:
    """Whether a Retry-After of more than a second (one agrees with anything) named the
    wait ``found`` predicts."""
    if retry_after is None or retry_after <= TOLERANCE:
        return False
    return abs(whole(found.wait) - retry_after) <= TOLERANCE


def adopt(state: BucketState, found: Inference) -> None:
    """Pace by the inferred limit too: it replaces one inferred for the same period."""
    kept = [entry for entry in state.inferred if entry[1] != found.period]
    kept.append([found.limit, found.period, found.kind, state.rejections])
    state.inferred = sorted(kept, key=lambda entry: entry[1])


def inferred(bucket: TokenBucket) -> list[list[Any]]:
    """A bucket's limits inferred so far, ``[limit, period, kind, 429s]`` each (an
    operation for a backend to run)."""
    return [list(entry) for entry in bucket.state.inferred]


def slowest(entries: list[list[Any]]) -> tuple[Rate, int] | None:
    """The slowest inferred limit, and from how many 429s it was inferred."""
    if not entries:
        return None
    limit, period, _kind, rejections = min(entries, key=lambda e: e[0] / e[1])
    return Rate(int(limit), float(period)), int(rejections)


def explain(found: Inference) -> str:
    """``100/10 s (fixed window)``, ``101/10 s (token bucket, burst 5 at least)``."""
    rate = Rate(found.limit, found.period)
    if found.kind == "token":
        return f"{rate} s (token bucket, burst {found.burst} at least)"
    return f"{rate} s ({found.kind} window)"
