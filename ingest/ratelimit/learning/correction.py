"""A configured rate corrected: 429s it did not predict slow the pace, which then climbs back."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ingest.ratelimit.pacing.state import BucketState

# A lone unexpected 429 (timing noise against a bucket with no burst, a limit a hair
# lower than configured) lowers the pace a little; another within the pacing period
# means the limit really is lower, and the pace drops by DECREASE at each. It then
# climbs back by steps, fast while well under the pace of the last 429, slowly near it.
GENTLE_DECREASE = 0.97
DECREASE = 0.85
FAST_STEP, SLOW_STEP = 0.05, 0.01
MIN_SCALE = 0.05


def slow_down(state: BucketState, sent_at: float, period: float, now: float) -> bool:
    """Lower ``state.scale`` after an unexpected 429 to a request sent at ``sent_at``;
    False (and no change) when it was sent before the current pause began."""
    if sent_at <= state.pause_began:
        return False
    again = now - state.limited_at < period
    state.limited_at = now
    state.ceiling = state.scale
    state.scale = max(MIN_SCALE, state.scale * (DECREASE if again else GENTLE_DECREASE))
    state.changed = now
    return True


def speed_up(state: BucketState, period: float, now: float) -> bool:
    """Raise ``state.scale`` a step once a sixth of the pacing period has passed
    without a change; True if it changed."""
    if state.scale >= 1.0 or now - state.changed < period / 6:
        return False
    step = FAST_STEP if state.scale < 0.95 * state.ceiling else SLOW_STEP
    state.scale = min(1.0, state.scale + step)
    state.changed = now
    return True
