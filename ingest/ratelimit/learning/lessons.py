"""What a refusal teaches, in every mode: the limit it shows adopted, or the pace slowed or
stepped back; and what an answer that was not refused moves. The two operations a
backend runs on a bucket for the middleware's feedback (:func:`limited`, :func:`succeeded`);
the rest is pure, on the bucket's state."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ingest.ratelimit.learning import auto, correction
from ingest.ratelimit.learning.inference import TOLERANCE, Inference, infer, whole
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


@dataclass(frozen=True, slots=True)
class Lesson:
    """What an unexpected 429 taught: whether it was news at all (``unexpected``: not an
    answer to a request sent before the current pause), and the limit inferred from it
    when one was adopted (``inferred``), from ``rejections`` unexpected 429s so far."""

    unexpected: bool
    inferred: Inference | None = None
    rejections: int = 0
    ago: float = 0.0  # seconds from the refused request's send to the lesson

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
        resumed=s.paused_until,
        refused=s.refusals,
    )
    s.refusals = [*s.refusals[1 - REFUSALS :], sent_at]
    slower = CLEARLY_SLOWER if bucket.auto or s.inferred else CONFIGURED_SLOWER
    climbing, s.climbing = s.climbing, 0.0
    if found is not None and (
        ramping or climbing or found.per_second < slower * bucket.per_second()
    ):
        adopt(s, found)
        if ramping and not (found.round and told(found, retry_after)):
            s.climbing = auto.CLIMB * found.per_second
            if not found.round:
                auto.start_climb(s, found, sent_at)
        s.limited_at = s.ramped = now
        bucket.rates_changed()
        return Lesson(True, found, s.rejections, now - sent_at)
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
