"""What limit the server enforces, inferred from the times of what was sent and what it refused.

Pure: :func:`infer` looks at a record of send times (ours: every request that left,
accepted or refused), the send times of the requests the server refused, and one
refusal to explain (a 429 to the request sent at ``at``, with the ``Retry-After`` it
named, if any). Each hypothesis is a window length ``w`` and a kind:

- **sliding**: at most L sends in any ``w`` seconds, refused ones counted too (a
  sliding log). The refusal says the window ending at ``at`` was over: L is its
  count minus one.
- **fixed**: at most L accepted sends in each window of ``w`` seconds aligned on the
  epoch (refusals are free). L is the accepted count in ``at``'s window before it.
- **token** (from a second 429 on): a bucket refilled at some rate, with some burst
  (:mod:`ingest.ratelimit.learning.fitting`).

Sends after ``at`` are left out: the server had not seen them (they were in flight).
A hypothesis is refuted by history when an earlier accepted send would have been over
its limit, and by a ``Retry-After`` shorter than the wait it predicts; one that agrees
only with much slower ones (a proxy that always says the same) is ignored; one that
explains the earlier 429s too is preferred. Of those left, the fastest wins: a guess too
fast costs one more 429, which then refutes it; one too slow costs the rest of the crawl.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace

from ingest.ratelimit.learning import fitting

# Candidate window lengths, seconds. Limits are quoted per second, minute and hour, but
# also per 2, 5, 10, 15 or 30 seconds, 2, 5, 10 or 15 minutes: a length that is not a
# candidate is read as a longer one (150/30 as about 150/60), which paces too slowly.
WINDOWS = (1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 3600.0)
KINDS = ("sliding", "fixed")
# Retry-After is whole seconds, rounded up; the clocks at both ends differ a little.
TOLERANCE = 1.0
# A hypothesis whose window stays full longer than Retry-After (plus this, for the way
# to the server) is refuted whatever else is said: rounded up, the header is never short.
SOONER = 0.1
# Of hypotheses this close to the fastest, the one with the longest window is taken: a
# ramp's last seconds make every short window look a little faster than it is.
NEAR = 0.9
# A Retry-After chooses among the hypotheses only when one that agrees with it is at
# least this fast: one that agrees only with much slower ones is more likely a proxy's
# fixed answer than a coincidence of the server's windows.
AGREEING = 0.8
# People set limits in round numbers: a fixed window's count, which the server counts
# exactly as we do, that is a multiple of ROUND and agrees with the Retry-After is
# believed even when it is much slower; of near hypotheses, a round one is preferred.
ROUND = 5
# ... when at least 1/FRESH as many sends went before its window as in it.
FRESH = 10


@dataclass(frozen=True, slots=True)
class Inference:
    """At most ``limit`` requests per ``period`` seconds (``kind``: sliding, fixed or
    token), as read from the window that held ``sent`` sends when the request sent at
    ``at`` was refused."""

    limit: int
    period: float
    kind: str
    sent: int
    at: float
    burst: int = 0  # a token bucket's, at least
    start: float = -math.inf  # when the window that held ``sent`` began
    wait: float = math.nan  # how long the server would refuse after ``at``, by it

    @property
    def per_second(self) -> float:
        return self.limit / self.period

    @property
    def round(self) -> bool:
        """Limits are set by people: 100, 150, 5000, rarely 97."""
        return self.limit % ROUND == 0


def infer(
    sends: Sequence[float],
    rejected: Collection[float],
    at: float,
    retry_after: float | None = None,
    *,
    windows: Sequence[float] = WINDOWS,
    since: float = -math.inf,
    offset: float = 0.0,
    buckets: bool = False,
    periods: Collection[float] = (),
    resumed: float = -math.inf,
    refused: Sequence[float] = (),
) -> Inference | None:
    """The fastest limit that explains the refusal of the request sent at ``at`` and
    every acceptance before it; None if none does.

    ``sends``: send times in order, refused ones included; ``rejected``: those refused;
    ``since``: the record is complete from then on (a window reaching further back is
    not judged); ``offset``: added to our times to get the epoch seconds that fixed
    windows are aligned on; ``buckets``: also consider a token bucket (only once the
    record holds more than one 429: before, a bucket just under the pace of the
    moment, with the burst the last seconds spent, always explains it); ``periods``:
    the configured rates' periods, preferred when a hypothesis of that period survives;
    ``resumed``: when the last pause ended (with ``periods``, a window holding it is not
    judged); ``refused``: the sends of the 429s learnt from before this one.
    """
    end = bisect_right(sends, at)
    if end == 0:
        return None
    seen = sends[:end]
    accepted = [t for t in seen if t != at and t not in rejected]
    survivors: list[tuple[Inference, float]] = []
    for w in windows:
        for kind in KINDS:
            found = _hypothesis(kind, w, seen, accepted, at=at, since=since, offset=offset)
            if found is not None:
                survivors.append(found)
    bucket = buckets and fitting.fastest(
        seen, rejected, at, since=since, resumed=resumed, round_to=ROUND
    )
    if bucket:
        limit, burst, sent = bucket
        token = Inference(limit, fitting.PERIOD, "token", sent, at, burst)
        survivors.append((token, 1 / token.per_second))  # until the next token
    if retry_after is not None:
        # A server that says "come back sooner" than a hypothesis would let it refutes
        # that hypothesis; one that says "later" may be a proxy adding its own wait.
        survivors = [(h, w) for h, w in survivors if w <= retry_after + SOONER]
    if not survivors:
        return None
    survivors = _explaining_earlier(
        survivors, seen, accepted, rejected, refused, at=at, offset=offset, since=since
    )
    # The periods configured: a rate is more often documented with the right period and
    # the wrong count than the other way round. If none of them explains the 429, a
    # window reaching back before the first send (which holds every send so far, and
    # would explain any 429) is not believed against a rate configured: a lone 429 at
    # the configured rate is timing noise more often than a limit that slow.
    if periods:
        # And a fixed window is believed only once a whole one before it was seen: at
        # the configured pace, the part of a window before a lone 429 explains it as well;
        # no window that holds a pause is (its count is low because we waited).
        survivors = [
            (h, w)
            for h, w in survivors
            if h.start >= resumed
            and (h.kind != "fixed" or h.start - h.period >= max(seen[0], resumed))
        ]
        preferred = [(h, w) for h, w in survivors if h.period in periods]
        survivors = preferred or [(h, w) for h, w in survivors if h.start > seen[0]]
        if not survivors:
            return None
    fastest = max(h.per_second for h, _ in survivors)
    if retry_after is not None:
        agreeing = [(h, w) for h, w in survivors if abs(whole(w) - retry_after) <= TOLERANCE]
        if agreeing and (
            max(h.per_second for h, _ in agreeing) >= AGREEING * fastest
            or any(_counted(h, seen) and h.round for h, _ in agreeing)
        ):
            survivors = agreeing
            fastest = max(h.per_second for h, _ in survivors)
    near = [(h, w) for h, w in survivors if h.per_second >= NEAR * fastest]
    return max((replace(h, wait=w) for h, w in near), key=_preferred)


def _preferred(h: Inference) -> tuple[bool, bool, float, bool, float]:
    """Of near hypotheses: a round limit, a window rather than a token bucket (a bucket
    a little under the pace explains any refusal at that pace), the longest window, a
    sliding one, the fastest."""
    return (h.round, h.kind != "token", h.period, h.kind == "sliding", h.per_second)


def _counted(h: Inference, seen: Sequence[float]) -> bool:
    """A fixed window that began well after the first send: its count is not merely
    every send so far (which, at the first 429, any window reaching back that far holds)."""
    return h.kind == "fixed" and bisect_left(seen, h.start) * FRESH >= h.sent


def whole(seconds: float) -> int:
    """Seconds as Retry-After says them: whole, rounded up, at least 1."""
    return max(1, math.ceil(seconds - 1e-9))


def _hypothesis(
    kind: str,
    w: float,
    seen: Sequence[float],
    accepted: Sequence[float],
    *,
    at: float,
    since: float,
    offset: float,
) -> tuple[Inference, float] | None:
    """The hypothesis of this kind and length, with the wait it predicts, or None if
    the record cannot judge it or history refutes it."""
    if kind == "sliding":
        start = at - w
        if start < since:
            return None
        first = bisect_right(seen, start)
        count = len(seen) - first
        limit = count - 1
        if limit < 1 or _sliding_exceeded(seen, accepted, w, limit):
            return None
        # The server's log is full until its oldest entries leave.
        wait = seen[min(first + 1, len(seen) - 1)] + w - at
    else:
        start = _window_start(at, w, offset)
        if start < since:
            return None
        count = len(accepted) - bisect_left(accepted, start)
        limit = count
        if limit < 1 or _fixed_exceeded(accepted, w, limit, offset):
            return None
        wait = start + w - at
    return Inference(limit, w, kind, count, at, start=start), wait


def _explaining_earlier(
    survivors: list[tuple[Inference, float]],
    seen: Sequence[float],
    accepted: Sequence[float],
    rejected: Collection[float],
    refused: Sequence[float],
    *,
    at: float,
    offset: float,
    since: float,
) -> list[tuple[Inference, float]]:
    """One limit behind every 429 is likelier than one for each: of the survivors, those
    that would have refused the earlier sends ``refused`` too (those the record holds,
    within a send: the server saw them a little later or sooner than they left), if one
    of them is near the fastest (AGREEING); else all of them."""
    refused = [t for t in refused if since <= t < at]

    def refuses_all(h: Inference) -> bool:
        if h.kind == "token":
            record = fitting.record_of(seen, since)
            return fitting.refuses_all(record, rejected, h.per_second, h.burst, refused)
        for t in refused:
            if h.kind == "sliding":
                count = bisect_right(seen, t) - bisect_right(seen, t - h.period)
            else:  # itself and the accepted ones before it in its window
                start = _window_start(t, h.period, offset)
                count = 1 + bisect_left(accepted, t) - bisect_left(accepted, start)
            if count < h.limit:
                return False
        return True

    every = [(h, w) for h, w in survivors if refuses_all(h)] if refused else []
    fastest = max(h.per_second for h, _ in survivors)
    if every and max(h.per_second for h, _ in every) >= AGREEING * fastest:
        return every
    return survivors


def _window_start(t: float, w: float, offset: float) -> float:
    """When the epoch-aligned window of ``w`` seconds that holds ``t`` began."""
    return math.floor((t + offset) / w) * w - offset


def _sliding_exceeded(
    seen: Sequence[float], accepted: Sequence[float], w: float, limit: int
) -> bool:
    """Whether some accepted send found more than ``limit`` sends in the ``w`` seconds
    ending with it (sends refused before it counted too)."""
    lo = hi = 0
    for t in accepted:
        while hi < len(seen) and seen[hi] <= t:
            hi += 1
        while seen[lo] <= t - w:
            lo += 1
        if hi - lo > limit:
            return True
    return False


def _fixed_exceeded(accepted: Sequence[float], w: float, limit: int, offset: float) -> bool:
    """Whether some epoch-aligned window of ``w`` seconds held more than ``limit``
    accepted sends."""
    window, count = None, 0
    for t in accepted:
        current = math.floor((t + offset) / w)
        if current != window:
            window, count = current, 0
        count += 1
        if count > limit:
            return True
    return False
