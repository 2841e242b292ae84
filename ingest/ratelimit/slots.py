"""What a bucket answers: a slot booked or confirmed, a pause, a look ahead, a lesson."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ingest.ratelimit.inference import Inference


@dataclass(frozen=True, slots=True)
class Reservation:
    """A send slot: wait ``delay`` seconds, then confirm it (``at``: the slot's time).
    ``precise``: the send is guarded, so the waits must end on time to tens of µs
    rather than to the millisecond of the event loop's timers. ``imposed``: the part
    of the delay the server imposed (a pause, a quota spent until its reset), as
    opposed to the pacing of the configured rates."""

    delay: float
    epoch: int
    at: float
    precise: bool = False
    imposed: float = 0.0


@dataclass(frozen=True, slots=True)
class Confirmation:
    """At the slot's time: ``wait`` None means the slot is void (a pause or a new
    quota came in between): book again; a positive ``wait`` means wait that much
    more and confirm again; 0 means go: the send counts as made ``at``."""

    wait: float | None
    at: float


@dataclass(frozen=True, slots=True)
class Pause:
    """The outcome of asking for a pause: whether it began a new one, how long is
    left, and how many seconds it added to the time already paused."""

    started: bool
    remaining: float
    added: float


@dataclass(frozen=True, slots=True)
class Peek:
    """When a slot booked now would come (``at``), without booking it; when the bucket's
    next token came or comes (``ready``: the longer ago, the longer it has been idle);
    when the API last refused this bucket's key (``retired_at``); the bucket's time."""

    at: float
    ready: float
    retired_at: float
    now: float


@dataclass(frozen=True, slots=True)
class Lesson:
    """What an unexpected 429 taught: whether it was news at all (``unexpected``: not an
    answer to a request sent before the current pause), and the limit inferred from it
    when one was adopted (``inferred``), from ``rejections`` unexpected 429s so far."""

    unexpected: bool
    inferred: Inference | None = None
    rejections: int = 0
    ago: float = 0.0  # seconds from the refused request's send to the lesson

    def __bool__(self) -> bool:
        return self.unexpected
