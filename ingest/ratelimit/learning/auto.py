"""The pace's own moves between refusals: an unknown limit's ramp, the climb from the limit
its first 429 showed, and a probe up after a quiet while. Pure: state in, state out."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ingest.ratelimit.learning.inference import Inference
    from ingest.ratelimit.pacing.state import BucketState


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
