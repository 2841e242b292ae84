"""Exponential backoff: the one formula of every wait that grows with each failure."""

from __future__ import annotations

from collections.abc import Callable


def exponential(attempt: int, *, base: float, cap: float) -> float:
    """``base``, doubled at each attempt after the first (1, 2, …), at most ``cap``."""
    # The exponent is bounded: a day-long outage must not overflow the float.
    return min(cap, base * 2.0 ** min(max(attempt - 1, 0), 64))


def full_jitter(attempt: int, *, base: float, cap: float, rand: Callable[[], float]) -> float:
    """A uniform draw from 0 up to ``exponential(attempt)``: clients that failed
    together do not come back together."""
    return rand() * exponential(attempt, base=base, cap=cap)
