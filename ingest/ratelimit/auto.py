"""An unknown limit: a cautious pace that grows until a 429, then the limit inferred from it."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ingest.ratelimit import learning
from ingest.ratelimit.inference import TOLERANCE, infer, whole
from ingest.ratelimit.rates import Rate
from ingest.ratelimit.slots import Lesson

if TYPE_CHECKING:
    from ingest.ratelimit.inference import Inference
    from ingest.ratelimit.state import BucketState


class Bucket(Protocol):
    """What learning from a 429 reads and changes of a token bucket."""

    state: BucketState
    clock: Callable[[], float]
    auto: bool
    configured: tuple[Rate, ...]
    rates: tuple[Rate, ...]

    @property
    def ramping(self) -> bool: ...

    def per_second(self) -> float: ...

    def inferred_changed(self) -> None: ...


START = Rate(60, 60)
# The ramp: each step held HOLD seconds (so that the short windows of the server's
# possible limits are seen full at that pace, and refuted by history if they are not
# the limit), the pace times GROWTH at each step. Slower growth spends less of a fixed
# window's quota before its end (the pause after the first 429 is shorter) but takes
# longer to get there; measured against fixed, sliding and token limits, this was the
# best of 1.1 to 1.5 every 1 to 3 s.
HOLD = 2.0
GROWTH = 1.35
# ... and only when at least USED of the pace's sends were made in the step: the ramp
# stops well above the pace a crawl held back by something else reaches.
USED = 0.7
# Sends remembered for the inference: enough for windows up to a minute or two at
# ten requests a second; a window reaching further back than the record is not judged.
RECORD = 1024
# The ramp's 429 leaves the limit uncertain (on a monotone ramp every window is at its
# fullest, and the one that explains the 429 best may not be the server's): unless it
# is round and the server's Retry-After named the wait it predicts, the limit inferred
# from it climbs, additively, by CLIMB of itself every HOLD seconds until the next
# 429, whose inference, made from a pace held near the limit, is taken instead.
CLIMB = 0.1
# A limit read from the ramp's 429 that is not round is most often a window at its
# fullest on that ramp, slower than the server's limit (a token bucket of 10/s with a
# burst reads as 72/10): its climb starts HALFWAY from it to the pace of the ramp's
# step before the refused one, which the server took whole.
HALFWAY = 0.5
# The sends of the last REFUSALS unexpected 429s, which a later inference explains too
# when it can.
REFUSALS = 8
# A configured rate is corrected only by an inference clearly slower than the pace in
# use (CONFIGURED_SLOWER); anything closer is timing noise (a bucket with no burst), met
# as before. An inferred limit is refined by one CLEARLY_SLOWER than the pace in use.
CONFIGURED_SLOWER = 0.9
CLEARLY_SLOWER = 0.95
# After this long without an unexpected 429 (and PROBE_PERIODS of the inferred
# limit's period), the inferred limits grow by PROBE_STEP of themselves (one at least).
PROBE_QUIET = 120.0
PROBE_PERIODS = 10
PROBE_STEP = 0.01


def ramp(state: BucketState, now: float) -> bool:
    """Step the pace up once it has been held HOLD seconds, if it was in use; True if
    it changed."""
    if state.ramped == -math.inf:
        state.ramped = now
        return False
    if now - state.ramped < HOLD:
        return False
    state.ramped = now
    if not in_use(state, state.pace, now):
        return False
    state.pace *= GROWTH
    return True


def in_use(state: BucketState, pace: float, now: float) -> bool:
    """Whether the last HOLD seconds (but a pause) saw at least USED of the sends
    ``pace`` allowed: a crawl held back by something else (its concurrency, a slow
    server) says nothing of the limit at a faster pace."""
    since, count = max(now - HOLD, state.paused_until), 0
    for t in reversed(state.sends):
        if t <= since:
            break
        count += t <= now  # later ones are only booked
    else:  # the record is shorter than that: judge by the part it holds
        since = max(since, state.sends[0]) if state.sends else now
    return now > since and count >= USED * pace * (now - since)


def learn(bucket: Bucket, sent_at: float, retry_after: float | None, offset: float) -> Lesson:
    """An unexpected 429 to the request sent at ``sent_at``: adopt the limit it shows
    when that is clearly slower than the pace in use (or while ramping); otherwise slow
    down as before. ``offset``: epoch seconds minus the bucket's clock."""
    s, now = bucket.state, bucket.clock()
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
            s.climbing = CLIMB * found.per_second
            if not found.round:
                start_climb(s, found, sent_at)
        s.limited_at = s.ramped = now
        bucket.inferred_changed()
        return Lesson(True, found, s.rejections, now - sent_at)
    if climbing:
        # Nothing explains it: the last step of the climb was one too many.
        for entry in s.inferred:
            entry[0] = max(1, entry[0] - climbed(climbing, entry[1]))
        s.limited_at = now
        bucket.inferred_changed()
        return Lesson(unexpected=True, rejections=s.rejections)
    if ramping:
        # Nothing explains it (too little record): the ramp goes on from a step back.
        s.pace /= GROWTH
        s.ramped = s.limited_at = now
        return Lesson(unexpected=True, rejections=s.rejections)
    learning.slow_down(s, sent_at, bucket.rates[0].period, now)
    return Lesson(unexpected=True, rejections=s.rejections)


def told(found: Inference, retry_after: float | None) -> bool:
    """Whether a Retry-After of more than a second (one agrees with anything) named the
    wait ``found`` predicts."""
    if retry_after is None or retry_after <= TOLERANCE:
        return False
    return abs(whole(found.wait) - retry_after) <= TOLERANCE


def step(state: BucketState, now: float, *, ramping: bool) -> bool:
    """An answer that was not rate limited: the ramp's step, the climb's, or after a
    quiet while a probe; True if the pace changed."""
    if ramping:
        return ramp(state, now)
    return climb(state, now) or probe(state, now)


def start_climb(state: BucketState, found: Inference, sent_at: float) -> None:
    """Raise the limit just read from the ramp's 429 HALFWAY to the pace of the ramp's
    step before the one that sent ``sent_at``, if that was faster."""
    held = state.pace / GROWTH ** (2 if sent_at < state.ramped else 1)
    if held > found.per_second:
        for entry in state.inferred:
            if entry[1] == found.period:
                pace = found.per_second + HALFWAY * (held - found.per_second)
                entry[0] = max(entry[0], math.floor(pace * found.period))


def climb(state: BucketState, now: float) -> bool:
    """Raise the limits inferred from the ramp's 429 a step, HOLD seconds after the
    last; True if they changed."""
    if not state.climbing or now - state.ramped < HOLD:
        return False
    state.ramped = now
    if not in_use(state, min(entry[0] / entry[1] for entry in state.inferred), now):
        return False
    for entry in state.inferred:
        entry[0] += climbed(state.climbing, entry[1])
    return True


def climbed(per_second: float, period: float) -> int:
    """What a step of the climb adds to a limit of ``period`` seconds."""
    return max(1, round(per_second * period))


def adopt(state: BucketState, found: Inference) -> None:
    """Pace by the inferred limit too: it replaces one inferred for the same period."""
    kept = [entry for entry in state.inferred if entry[1] != found.period]
    kept.append([found.limit, found.period, found.kind, state.rejections])
    state.inferred = sorted(kept, key=lambda entry: entry[1])


def probe(state: BucketState, now: float) -> bool:
    """After a long quiet stretch, raise the inferred limits a little; True if they changed."""
    if not state.inferred:
        return False
    quiet = max(PROBE_QUIET, PROBE_PERIODS * max(entry[1] for entry in state.inferred))
    if now - max(state.limited_at, state.probed) < quiet:
        return False
    if state.probed == -math.inf and state.limited_at == -math.inf:
        state.probed = now
        return False
    for entry in state.inferred:
        entry[0] += max(1, round(entry[0] * PROBE_STEP))
    state.probed = now
    return True


def inferred(bucket: Bucket) -> list[list[Any]]:
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
