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
from dataclasses import replace

from ingest.ratelimit.learning import fitting
from ingest.ratelimit.learning.windows import KINDS, ROUND, Inference, Record, hypothesis, refuses

# Candidate window lengths, seconds. Limits are quoted per second, minute and hour, but
# also per 2, 5, 10, 15 or 30 seconds, 2, 5, 10 or 15 minutes: a length that is not a
# candidate is read as a longer one (150/30 as about 150/60), which paces too slowly.
WINDOWS = (1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 3600.0)
# Retry-After is whole seconds, rounded up; the clocks at both ends differ a little.
TOLERANCE = 1.0
# A hypothesis whose window stays full longer than Retry-After (plus this, for the way
# to the server) is refuted whatever else is said: rounded up, the header is never short.
# At a ramp's 429, TOLERANCE instead: a proxy's fixed Retry-After may fall a little short
# of the window's wait.
SOONER = 0.1
# Of hypotheses this close to the fastest, the one with the longest window is taken: a
# ramp's last seconds make every short window look a little faster than it is.
NEAR = 0.9
# A Retry-After chooses among the hypotheses only when one that agrees with it is at
# least this fast: one that agrees only with much slower ones is more likely a proxy's
# fixed answer than a coincidence of the server's windows.
AGREEING = 0.8
# People set limits in round numbers (windows.ROUND): a fixed window's count, which the
# server counts exactly as we do, that is round and agrees with the Retry-After is
# believed even when it is much slower; of near hypotheses, a round one is preferred.
# ... when at least 1/FRESH as many sends went before its window as in it.
FRESH = 10
# At a ramp's 429 the count ahead of the refused send may be a few high: requests that
# left just before it can reach the server just after it (a network's jitter, a busy
# host), their answers still on the way. A limit at most this share above a round one is
# read as the round one.
ROUNDED = 0.04
# Against a configured pace, a window reaching back before the first send is believed
# when its limit is at least this share of the pace (or the Retry-After names its wait).
ALMOST = 0.8


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
    origin: float | None = None,
    ramp: bool = False,
    pace: float = math.inf,
    announced: Collection[int] = (),
) -> Inference | None:
    """The fastest limit that explains the refusal of the request sent at ``at`` and
    every acceptance before it; None if none does.

    ``sends``: send times in order, refused ones included; ``rejected``: those refused;
    ``since``: the record is complete from then on (a window reaching further back is
    not judged); ``offset``: added to our times to get the epoch seconds that fixed
    windows are aligned on; ``buckets``: also consider a token bucket (only once the
    record holds more than one 429: before, a bucket just under the pace of the
    moment, with the burst the last seconds spent, always explains it); ``periods``:
    the configured rates' periods, preferred when a hypothesis of that period survives
    (``pace``: the configured pace, requests a second);
    ``resumed``: when the last pause ended (with ``periods``, a window holding it is not
    judged); ``refused``: the sends of the 429s learnt from before this one; ``origin``:
    the first send the server saw from us, which windows following each other from it
    (fixed-first, counter) start at (by default the first send, if the record holds it);
    ``ramp``: the refusal ended a ramp from the first send, when a window that agrees with
    a Retry-After of more than a second is believed first, however slow (the ramp made
    its last seconds the fastest: every short window looks fast); ``announced``: limits
    the server said with no window, which a window holding that many sends is believed by.
    """
    end = bisect_right(sends, at)
    if end == 0:
        return None
    seen = sends[:end]
    accepted = [t for t in seen if t != at and t not in rejected]
    if origin is None and since == -math.inf:
        origin = seen[0]
    record = Record(seen, accepted, since, offset, origin)
    survivors: list[tuple[Inference, float]] = []
    for w in windows:
        for kind in KINDS:
            found = hypothesis(kind, w, record, at)
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
        slack = TOLERANCE if ramp else SOONER
        survivors = [(h, w) for h, w in survivors if w <= retry_after + slack]
    if not survivors:
        return None
    survivors, confirmed = _explaining_earlier(survivors, record, rejected, refused, at=at)
    if ramp and (told := _told(survivors, seen[0], retry_after)):
        h, w = told
        return replace(h, wait=w, confirmed=confirmed)
    if periods and not (
        survivors := _configured(
            survivors,
            periods,
            first=seen[0],
            resumed=resumed,
            retry_after=retry_after,
            pace=pace,
            confirmed=confirmed,
            announced=announced,
        )
    ):
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
    return max((replace(h, wait=w, confirmed=confirmed) for h, w in near), key=_preferred)


def _configured(
    survivors: list[tuple[Inference, float]],
    periods: Collection[float],
    *,
    first: float,
    resumed: float,
    retry_after: float | None,
    pace: float,
    confirmed: bool = False,
    announced: Collection[int] = (),
) -> list[tuple[Inference, float]]:
    """The survivors believed against a rate configured. No window reaching back before
    the ``first`` send (which holds every send so far, and would explain any 429) unless
    it is of a period configured and the server's Retry-After (of more than a second)
    names its wait or it is at least ALMOST as fast as the configured ``pace``: a lone
    429 at the configured rate is timing noise (a bucket with no burst) more often than a
    limit that much slower. A fixed window only once a whole one before it was seen (at
    the configured pace, the part of a window before a lone 429 explains it as well); no
    window that holds a pause (its count is low because we waited, ``resumed``). A wait
    said finer than whole seconds (``retry-after-ms``, a body's ``retry_after``) names
    its wait when within SOONER of it. A limit of a period configured that explains the
    earlier 429s too (``confirmed``), or whose count the server ``announced``, is believed
    whatever its window holds: noise does not repeat on one limit's schedule, nor fall on
    the number said. Of those, the periods configured if any: a rate is
    more often documented with the right period and the wrong count than the other way
    round."""

    def told(w: float) -> bool:
        if retry_after is None:
            return False
        if retry_after > TOLERANCE:
            return abs(whole(w) - retry_after) <= TOLERANCE
        return not retry_after.is_integer() and abs(w - retry_after) <= SOONER

    def believed(h: Inference, w: float) -> bool:
        if (confirmed and h.period in periods) or h.limit in announced:
            return True
        if h.start < resumed or (
            h.kind.startswith("fixed") and h.start - h.period < max(first, resumed)
        ):
            return False
        if h.start > first:
            return True
        if h.period not in periods:
            return False
        return h.per_second >= ALMOST * pace or told(w)

    survivors = [(h, w) for h, w in survivors if believed(h, w)]
    preferred = [(h, w) for h, w in survivors if h.period in periods]
    return preferred or survivors


def _told(
    survivors: list[tuple[Inference, float]], first: float, retry_after: float | None
) -> tuple[Inference, float] | None:
    """Of the hypotheses that agree with a Retry-After of more than a second: a round
    limit first (when none is, each read a little lower if that makes it round, the
    least lowered first, then one whose wait is the one said: ROUNDED), then a window
    that held every send since the ``first`` (nothing before it hides a part of its count),
    then the one whose wait is the one said, then the fastest. None if none agrees."""
    if retry_after is None or retry_after <= TOLERANCE:
        return None
    told = [(h, w, 0) for h, w in survivors if abs(whole(w) - retry_after) <= TOLERANCE]
    if not any(h.round for h, _, _ in told):
        told = [_rounded(h, w) for h, w, _ in told]
    if not told:
        return None
    h, w, _ = max(
        told,
        key=lambda hwl: (
            hwl[0].round,
            -hwl[2],
            hwl[2] > 0 and whole(hwl[1]) == retry_after,
            hwl[0].start <= first,
            whole(hwl[1]) == retry_after,
            hwl[0].per_second,
        ),
    )
    return h, w


def _rounded(h: Inference, w: float) -> tuple[Inference, float, int]:
    """``h`` read as the round limit just under it if that is within ROUNDED, with the
    wait it named (the sends it counted that the server did not are the last ones: they
    reached it after the refusal), and by how much it was lowered."""
    less = h.limit % ROUND
    if h.kind == "token" or h.limit - less < 1 or less > ROUNDED * (h.limit - less):
        return h, w, 0
    return replace(h, limit=h.limit - less), w, less


def _preferred(h: Inference) -> tuple[bool, bool, float, bool, float]:
    """Of near hypotheses: a round limit, a window rather than a token bucket (a bucket
    a little under the pace explains any refusal at that pace), the longest window, a
    sliding one, the fastest."""
    return (h.round, h.kind != "token", h.period, h.kind == "sliding", h.per_second)


def _counted(h: Inference, seen: Sequence[float]) -> bool:
    """A fixed window that began well after the first send: its count is not merely
    every send so far (which, at the first 429, any window reaching back that far holds)."""
    return h.kind.startswith("fixed") and bisect_left(seen, h.start) * FRESH >= h.sent


def whole(seconds: float) -> int:
    """Seconds as Retry-After says them: whole, rounded up, at least 1."""
    return max(1, math.ceil(seconds - 1e-9))


def _explaining_earlier(
    survivors: list[tuple[Inference, float]],
    record: Record,
    rejected: Collection[float],
    refused: Sequence[float],
    *,
    at: float,
) -> tuple[list[tuple[Inference, float]], bool]:
    """One limit behind every 429 is likelier than one for each: of the survivors, those
    that would have refused the earlier sends ``refused`` too (those the record holds,
    within a send: the server saw them a little later or sooner than they left), if one
    of them is near the fastest (AGREEING), and True; else all of them, and False."""
    refused = [t for t in refused if record.since <= t < at]

    def refuses_all(h: Inference) -> bool:
        if h.kind == "token":
            sends = fitting.record_of(record.seen, record.since)
            return fitting.refuses_all(sends, rejected, h.per_second, h.burst, refused)
        return all(refuses(h, t, record) for t in refused)

    every = [(h, w) for h, w in survivors if refuses_all(h)] if refused else []
    fastest = max(h.per_second for h, _ in survivors)
    if every and max(h.per_second for h, _ in every) >= AGREEING * fastest:
        return every, True
    return survivors, False
