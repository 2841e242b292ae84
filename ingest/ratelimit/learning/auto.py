"""The pace's own moves between refusals: an unknown limit's ramp, the climb from the limit
its first 429 showed, and a probe up after a quiet while. Pure: state in, state out."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ingest.ratelimit.learning.inference import Inference
    from ingest.ratelimit.pacing.state import BucketState


# The ramp, a slow start: the pace doubles (GROWTH) every HOLD seconds until the first
# 429. A window or a bucket empty at the start lets a burst through before it, which the
# ramp spends rather than waits for; one pause then stops every request, and those in
# flight at that moment are few. Measured against every family of limiter servers keep
# (tests/benchmarks/auto_sim.py), this reached the limit in a few seconds where a ramp of
# x1.35 every 2 s took a third of a short run.
HOLD = 0.5
GROWTH = 2.0
# ... and only when at least USED of the pace's sends were made in the step: the ramp
# stops well above the pace a crawl held back by something else reaches.
USED = 0.7
# The ramp's 429 leaves the limit uncertain (on a monotone ramp every window is at its
# fullest, and the one that explains the 429 best may not be the server's): unless it
# is round and the server's Retry-After named the wait it predicts, the limit inferred
# from it climbs, additively, by CLIMB of itself every CLIMB_HOLD seconds until the next
# 429, whose inference, made from a pace held near the limit, is taken instead. A token
# bucket inferred from a later 429 (an estimate to a few percent, often under) climbs
# back the same way, up to CAP of the pace the server refused: a slower hypothesis is
# refuted by the server accepting a faster pace, not only replaced by a slower one.
CLIMB = 0.1
CLIMB_HOLD = 1.0
CAP = 0.975
ROOM = 0.01  # under this much room between the estimate and its cap, no climb
# A rate spread over the ramp and the wait its 429 named climbs by SPAN_CLIMB of itself up
# to SPAN_CAP times itself.
SPAN_CLIMB, SPAN_CAP = 0.1, 1.5
# A limit read from the ramp's 429 that is neither round nor named by the Retry-After is
# most often a window at its fullest on that ramp, slower than the server's limit (a
# token bucket of 10/s with a burst reads as 72/10): its climb starts HALFWAY from it to
# the pace of the ramp's step before the refused one, which the server took whole.
HALFWAY = 0.5
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


def in_use(state: BucketState, pace: float, now: float, hold: float = HOLD) -> bool:
    """Whether the last ``hold`` seconds (but a pause) saw at least USED of the sends
    ``pace`` allowed: a crawl held back by something else (its concurrency, a slow
    server) says nothing of the limit at a faster pace."""
    since, count = max(now - hold, state.paused_until), 0
    for t in reversed(state.sends):
        if t <= since:
            break
        count += t <= now  # later ones are only booked
    else:  # the record is shorter than that: judge by the part it holds
        since = max(since, state.sends[0]) if state.sends else now
    return now > since and count >= USED * pace * (now - since)


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
    """Raise the limits inferred a step, CLIMB_HOLD seconds after the last, up to the cap
    if there is one; True if they changed."""
    if not state.climbing or now - state.ramped < CLIMB_HOLD:
        return False
    state.ramped = now
    slowest = min(entry[0] / entry[1] for entry in state.inferred)
    if not in_use(state, slowest, now, CLIMB_HOLD):
        return False
    if state.climb_cap and slowest + state.climbing >= state.climb_cap:
        scale = state.climb_cap / slowest
        state.climbing = 0.0  # the last step: held there
        if scale <= 1:
            return False
        for entry in state.inferred:
            entry[0] = max(entry[0], math.floor(entry[0] * scale))
        return True
    for entry in state.inferred:
        entry[0] += climbed(state.climbing, entry[1])
    return True


def climbed(per_second: float, period: float) -> int:
    """What a step of the climb adds to a limit of ``period`` seconds."""
    return max(1, round(per_second * period))


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
