"""Token buckets fitted to send times: a rate and a burst that explain a refusal.

Pure, like :mod:`ingest.ratelimit.learning.inference`, which weighs these against windows. A
bucket refilled at ``rate`` tokens a second holding at most ``burst``: a send takes a
token or is refused (and takes none). Before each send, the tokens missing from a full
bucket (its deficit) follow Lindley's recursion over the record.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator, Sequence

# Looked for from the fastest pace of LEAST sends in a row (but at most UNDER of the
# pace the refused send came at) down, in steps of STEP, to SLOWEST of it, over the last
# RECORD sends; adopted as a rate per PERIOD seconds, rounded down to a round one
# within ROUNDED when that fits as well.
LEAST, RECORD = 10, 1024
STEP, SLOWEST = 0.005, 0.5
PERIOD = 10.0
UNDER, ROUNDED = 0.95, 0.97
# A bucket of at most this burst is read under the pace it refused by UNDER, not at its
# rate: the one reading a climb back may refute.
PINNED = 2


def record_of(seen: Sequence[float], since: float) -> list[float]:
    """The sends a bucket is judged on: the last RECORD of those since ``since``."""
    return [t for t in seen if t >= since][-RECORD:]


def fastest(
    seen: Sequence[float],
    rejected: Collection[float],
    at: float,
    *,
    since: float,
    resumed: float,
    round_to: int,
) -> tuple[int, int, int] | None:
    """The fastest bucket that accepts every accepted send and refuses the one at
    ``at``, as (limit per PERIOD seconds, least burst, sends judged); None if none does
    at a useful rate, or if fewer than LEAST sends went since the last pause ended (at
    ``resumed``): the pace the refused one came at is not known. A limit within ROUNDED
    of a multiple of ``round_to`` under it is rounded down to that when it fits as well."""
    record = record_of(seen, since)
    if len(record) < LEAST or record[-LEAST] < resumed:
        return None
    paces = [
        (LEAST - 1) / (record[i + LEAST - 1] - record[i] or 1e-9)
        for i in range(len(record) - LEAST + 1)
    ]
    # A bucket just under the pace the refused send came at explains any refusal at
    # that pace (its burst spent since): only one clearly slower says something.
    top = min(max(paces), UNDER * paces[-1])
    rate = top
    while rate > top * SLOWEST:
        burst = least_burst(record, rejected, at, rate)
        if burst is not None:
            limit = max(1, math.floor(rate * PERIOD))
            rounded = limit - limit % round_to  # the rate is read to a few percent
            if rounded >= ROUNDED * limit:  # the round one just under, if it fits
                fits = least_burst(record, rejected, at, rounded / PERIOD)
                limit, burst = (rounded, fits) if fits else (limit, burst)
            return limit, burst, len(record)
        rate *= 1 - STEP
    return None


def pace_at(seen: Sequence[float], at: float) -> float | None:
    """Requests a second the last LEAST sends up to ``at`` went at; None with fewer."""
    upto = [t for t in seen[-(2 * RECORD) :] if t <= at][-LEAST:]
    if len(upto) < LEAST or upto[-1] <= upto[0]:
        return None
    return (LEAST - 1) / (upto[-1] - upto[0])


def least_burst(
    record: Sequence[float], rejected: Collection[float], at: float, rate: float
) -> int | None:
    """The least burst with which a bucket refilled at ``rate`` accepts every accepted
    send of ``record`` and refuses the last (at ``at``); None if no burst does: a send
    needs a burst of at least its deficit plus one."""
    worst = 0.0
    for t, deficit in _deficits(record, rejected, rate):
        if t == at:
            return math.floor(worst) + 1 if deficit > worst else None
        if t not in rejected:
            worst = max(worst, deficit)
    return None


def refuses_all(
    record: Sequence[float],
    rejected: Collection[float],
    rate: float,
    burst: int,
    sends: Collection[float],
) -> bool:
    """Whether a bucket of ``rate`` and ``burst`` would have refused each of ``sends``
    the record holds (within a token: the server saw them a little later or sooner)."""
    return all(
        deficit > burst - 2 for t, deficit in _deficits(record, rejected, rate) if t in sends
    )


def _deficits(
    record: Sequence[float], rejected: Collection[float], rate: float
) -> Iterator[tuple[float, float]]:
    """Each send of ``record`` with the tokens missing from a full bucket before it."""
    deficit, previous = 0.0, None
    for t in record:
        if previous is not None:
            deficit = max(0.0, deficit + (previous not in rejected) - rate * (t - previous))
        yield t, deficit
        previous = t
