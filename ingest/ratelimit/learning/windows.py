"""The limits a refusal shows, window by window: each kind of window servers keep, refuted by
the history of sends and refusals.

Pure. A hypothesis is a window length ``w`` and a kind, each as servers implement it:

- **sliding**: at most L sends in any ``w`` seconds, refused ones counted too (a sliding
  log that logs every arrival); **sliding-accepted**: the same, refusals free.
- **fixed**: at most L accepted sends in each window of ``w`` seconds aligned on the
  epoch; **fixed-first**: windows following each other from the first send (a counter
  that expires ``w`` after its first hit).
- **counter**: HAProxy's ``http_req_rate(w)`` (a sliding window counter): every send
  counts, refused or not, and one is refused when its period's count plus the previous
  period's, weighted by the share of it still inside the last ``w`` seconds, is over L;
  periods follow each other from the first send.

The refusal of the send at ``at`` gives L (the count it found, less one); any earlier
accepted send that would have been over L refutes the hypothesis.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

KINDS = ("sliding", "sliding-accepted", "fixed", "fixed-first", "counter")
# People set limits in round numbers: 100, 150, 5000, rarely 97.
ROUND = 5


@dataclass(frozen=True, slots=True)
class Inference:
    """At most ``limit`` requests per ``period`` seconds (``kind``: a window's, or token),
    as read from the window that held ``sent`` sends when the request sent at ``at`` was
    refused."""

    limit: int
    period: float
    kind: str
    sent: int
    at: float
    burst: int = 0  # a token bucket's, at least
    start: float = -math.inf  # when the window that held ``sent`` began
    wait: float = math.nan  # how long the server would refuse after ``at``, by it
    confirmed: bool = False  # it would have refused the earlier 429s' sends too

    @property
    def per_second(self) -> float:
        return self.limit / self.period

    @property
    def round(self) -> bool:
        """Limits are set by people: 100, 150, 5000, rarely 97."""
        return self.limit % ROUND == 0


@dataclass(frozen=True, slots=True)
class Record:
    """What a hypothesis is judged on: every send in order (``seen``, refused ones
    included, up to the refusal explained), the accepted ones, where the record is
    complete from (``since``), epoch seconds minus our clock (``offset``), and the first
    send the server saw from us (``origin``; None when the record no longer holds it)."""

    seen: Sequence[float]
    accepted: Sequence[float]
    since: float
    offset: float
    origin: float | None


def hypothesis(kind: str, w: float, r: Record, at: float) -> tuple[Inference, float] | None:
    """The hypothesis of this kind and length, with the wait it predicts after ``at``, or
    None if the record cannot judge it or history refutes it."""
    if kind in ("sliding", "sliding-accepted"):
        return _sliding(kind, w, r, at)
    if kind == "counter":
        return _counter(w, r, at)
    return _fixed(kind, w, r, at)


def _sliding(kind: str, w: float, r: Record, at: float) -> tuple[Inference, float] | None:
    start = at - w
    if start < r.since:
        return None
    counted = r.seen if kind == "sliding" else [*r.accepted, at]
    first = bisect_right(counted, start)
    count = len(counted) - first
    limit = count - 1
    if limit < 1 or _sliding_exceeded(counted, r.accepted, w, limit):
        return None
    # The server's log is full until its oldest entries leave.
    wait = counted[min(first + 1, len(counted) - 1)] + w - at
    return Inference(limit, w, kind, count, at, start=start), wait


def _counter(w: float, r: Record, at: float) -> tuple[Inference, float] | None:
    if r.origin is None or r.origin < r.since:
        return None
    estimates = counter_estimates(r.seen, w, r.origin)
    limit = estimates[-1] - 1
    accepted = set(r.accepted)
    over = (e > limit for t, e in zip(r.seen, estimates, strict=True) if t in accepted)
    if limit < 1 or any(over):
        return None
    start = _start(at, w, r.origin)
    wait = counter_wait(r.seen, w, r.origin, limit, at)
    return Inference(limit, w, "counter", estimates[-1], at, start=start), wait


def _fixed(kind: str, w: float, r: Record, at: float) -> tuple[Inference, float] | None:
    origin = r.origin if kind == "fixed-first" else -r.offset
    if origin is None:
        return None
    start = _start(at, w, origin)
    if start < r.since:
        return None
    count = len(r.accepted) - bisect_left(r.accepted, start)
    if count < 1 or _fixed_exceeded(r.accepted, w, count, origin):
        return None
    return Inference(count, w, kind, count, at, start=start), start + w - at


def refuses(h: Inference, t: float, r: Record) -> bool:
    """Whether ``h`` would have refused the send at ``t`` (within a send: the server saw
    it a little later or sooner than it left)."""
    if h.kind in ("sliding", "sliding-accepted"):
        counted = r.seen if h.kind == "sliding" else r.accepted
        count = bisect_right(counted, t) - bisect_right(counted, t - h.period)
        return count + (h.kind != "sliding") >= h.limit
    if h.kind == "counter":
        if r.origin is None:
            return False
        upto = [s for s in r.seen if s <= t]
        return bool(upto) and counter_estimates(upto, h.period, r.origin)[-1] >= h.limit
    origin = r.origin if h.kind == "fixed-first" else -r.offset
    if origin is None:
        return False
    start = _start(t, h.period, origin)
    count = 1 + bisect_left(r.accepted, t) - bisect_left(r.accepted, start)
    return count >= h.limit


def counter_estimates(seen: Sequence[float], w: float, origin: float) -> list[int]:
    """For each send, the rate HAProxy reads with it counted: its period's count so far,
    itself included, plus the previous period's weighted by what is left of this one."""
    estimates, start, curr, prev = [], origin, 0, 0
    for t in seen:
        passed = math.floor((t - start) / w)
        if passed >= 1:
            prev, curr, start = (curr if passed == 1 else 0), 0, start + passed * w
        curr += 1
        estimates.append(curr + math.floor(prev * max(0.0, start + w - t) / w))
    return estimates


def counter_wait(seen: Sequence[float], w: float, origin: float, limit: int, at: float) -> float:
    """Seconds after ``at`` until a send would find the counter at ``limit`` at most."""
    start, curr, prev = origin, 0, 0
    for t in seen:
        passed = math.floor((t - start) / w)
        if passed >= 1:
            prev, curr, start = (curr if passed == 1 else 0), 0, start + passed * w
        curr += 1
    end = start + w
    if curr + 1 <= limit:
        left = (limit - curr) * w / prev if prev else w
        return max(0.0, end - left - at)
    left = limit * w / curr
    return max(0.0, end + w - left - at)


def _start(t: float, w: float, origin: float) -> float:
    """When the window of ``w`` seconds that holds ``t`` began, windows following each
    other from ``origin`` (minus the epoch offset for epoch-aligned ones)."""
    return origin + math.floor((t - origin) / w) * w


def _sliding_exceeded(
    counted: Sequence[float], accepted: Sequence[float], w: float, limit: int
) -> bool:
    """Whether some accepted send found more than ``limit`` counted sends in the ``w``
    seconds ending with it."""
    lo = hi = 0
    for t in accepted:
        while hi < len(counted) and counted[hi] <= t:
            hi += 1
        while counted[lo] <= t - w:
            lo += 1
        if hi - lo > limit:
            return True
    return False


def _fixed_exceeded(accepted: Sequence[float], w: float, limit: int, origin: float) -> bool:
    """Whether some window of ``w`` seconds from ``origin`` held more than ``limit``
    accepted sends."""
    window, count = None, 0
    for t in accepted:
        current = math.floor((t - origin) / w)
        if current != window:
            window, count = current, 0
        count += 1
        if count > limit:
            return True
    return False
