"""What a bucket remembers between two calls, and its text form for a shared store."""

from __future__ import annotations

import json
import math
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

# Refused sends remembered, for the inference (a fixed window does not count them).
REJECTED_KEPT = 256


@dataclass(slots=True)
class BucketState:
    """Everything a bucket remembers between two calls."""

    epoch: int = 0  # bumped when booked slots become void (a pause, a new quota)
    scale: float = 1.0  # the share of the configured pace in use; < 1 after 429s
    ceiling: float = 1.0  # the scale at the last unexpected 429
    changed: float = -math.inf  # when the scale last changed
    limited_at: float = -math.inf  # the last unexpected 429
    paused_until: float = -math.inf
    pause_began: float = -math.inf
    budget_until: float = -math.inf  # the server said how many are left until then
    budget_left: int = 0
    tat: float = -math.inf  # theoretical arrival time of the next token (GCRA)
    last_sent: float = -math.inf
    announced: tuple[int, float] | None = None  # the quota the server announces
    retired_at: float = -math.inf  # when the API last refused this bucket's key
    sends: deque[float] = field(default_factory=deque)  # booked or sent, oldest first
    # What the inference needs and what it found (RATELIMIT_RATE=auto, or a wrong rate).
    pace: float = 0.0  # auto: requests a second the ramp allows, before any inference
    ramped: float = -math.inf  # when the ramp last stepped up
    inferred: list[list[Any]] = field(default_factory=list)  # [limit, period, kind, 429s]
    rejections: int = 0  # unexpected 429s the inference has looked at
    probed: float = -math.inf  # when an inferred limit was last probed up
    # auto: requests a second the limit read from the ramp's 429 gains at each step of
    # its climb, until the next 429 (0: not climbing)
    climbing: float = 0.0
    climb_cap: float = 0.0  # requests a second the climb stops at (0: none)
    refusals: list[float] = field(default_factory=list)  # the last unexpected 429s' sends
    rejected: deque[float] = field(default_factory=lambda: deque(maxlen=REJECTED_KEPT))

    def dumps(self) -> str:
        fields = asdict(self)
        fields["sends"] = list(self.sends)
        fields["rejected"] = list(self.rejected)
        return json.dumps(fields, separators=(",", ":"))

    @classmethod
    def loads(cls, text: str | bytes) -> BucketState:
        fields: dict[str, Any] = json.loads(text)
        fields["sends"] = deque(fields["sends"])
        fields["rejected"] = deque(fields.get("rejected", ()), maxlen=REJECTED_KEPT)
        if fields["announced"] is not None:
            fields["announced"] = tuple(fields["announced"])
        return cls(**fields)
