"""When a job's requests go, at its rates: their span, and the allowances of a long quota.

Pure arithmetic on the rates as the bucket keeps them (:mod:`ingest.ratelimit.pacing`):
requests evenly spaced at the rate of the shortest period, and never more than a rate's
limit in any of its periods. A rate of a longer period then cuts the requests into
allowances: its limit goes at the pace of the shorter rates, and the next allowance
begins a period after the first request of the one before (a sliding window frees a send
a period after it went), or at the reset the server named.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ingest.ratelimit.pacing.rates import Rate, by_period


def span(n: int, rates: Sequence[Rate]) -> float:
    """Seconds from the first of ``n`` requests to the last, at ``rates``."""
    if n <= 1 or not rates:
        return 0.0
    *shorter, longest = by_period(rates)
    if not shorter:
        return (n - 1) * longest.interval
    if span(longest.limit + 1, shorter) >= longest.period:
        return span(n, shorter)  # the shorter rates never let its limit fill a period
    periods, rest = divmod(n - 1, longest.limit)
    return periods * longest.period + span(rest + 1, shorter)


def allowance_of(rates: Sequence[Rate]) -> Rate | None:
    """The rate of the longest period whose limit the shorter ones would spend within it:
    the allowance the requests are cut into; None when no such rate binds."""
    ordered = by_period(rates)
    for i in range(len(ordered) - 1, 0, -1):
        rate = ordered[i]
        if span(rate.limit + 1, ordered[:i]) < rate.period:
            return rate
    return None


@dataclass(frozen=True, slots=True)
class Allowance:
    """One period's allowance: ``requests`` going from ``starts`` to ``ends`` (epoch
    seconds); ``next_at``: when the next allowance begins, if more requests wait for it."""

    requests: int
    starts: float
    ends: float
    next_at: float | None


@dataclass(frozen=True, slots=True)
class Schedule:
    """``requests`` from ``starts`` to ``ends``; ``allowances``: how they fall into the
    periods of ``allowance`` (none when no long rate binds)."""

    requests: int
    starts: float
    ends: float
    allowance: Rate | None
    allowances: tuple[Allowance, ...]


def schedule(
    n: int,
    rates: Sequence[Rate],
    *,
    start: float,
    first: int | None = None,
    renews: float | None = None,
) -> Schedule:
    """``n`` requests at ``rates`` from ``start``. ``first``: how much of the long rate's
    allowance is left now (a server's daily quota seen before), renewed in full at
    ``renews`` (else a period after ``start``)."""
    long = allowance_of(rates)
    if long is None or n <= 0:
        return Schedule(n, start, start + span(n, rates), None, ())
    ordered = by_period(rates)
    shorter = ordered[: ordered.index(long)]
    allowances: list[Allowance] = []
    left, at = n, start
    next_at = renews if renews is not None else start + long.period
    capacity = long.limit if first is None else max(0, min(first, long.limit))
    while left > 0:
        count = min(capacity, left)
        left -= count
        if count:
            ends = at + span(count, shorter)
            allowances.append(Allowance(count, at, ends, next_at if left else None))
        at, next_at, capacity = next_at, next_at + long.period, long.limit
    return Schedule(n, allowances[0].starts, allowances[-1].ends, long, tuple(allowances))
