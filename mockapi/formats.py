"""How dialects write waits and times: milliseconds, decimal seconds, Go durations, ISO minutes."""

from __future__ import annotations

import math
import time

from mockapi.limits import ceil_seconds


def ceil_ms(seconds: float) -> int:
    """Whole milliseconds, rounded up (so that a named time is never early), float noise aside."""
    return max(0, math.ceil(seconds * 1000 - 1e-3))


def retry_seconds(wait: float) -> int:
    """A Retry-After in whole seconds: rounded up, at least 1."""
    return max(1, ceil_seconds(wait))


def decimal(ms: int) -> str:
    """Milliseconds as seconds with up to three decimals: 64570 → "64.57", 1000 → "1"."""
    whole, rest = divmod(ms, 1000)
    return f"{whole}.{rest:03d}".rstrip("0").rstrip(".")


def go_duration(ms: int) -> str:
    """Milliseconds as Go's time.Duration prints them: "0s", "20ms", "1.5s", "6m0s", "1h0m0s"."""
    if ms < 1000:
        return f"{ms}ms" if ms else "0s"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    text = f"{hours}h" if hours else ""
    text += f"{minutes}m" if hours or minutes else ""
    return text + decimal(rest) + "s"


def iso_minute(epoch: float) -> str:
    """An ISO 8601 time to the minute, `yyyy-MM-ddTHH:mmZ`, rounded up to the next minute."""
    minute = math.ceil(epoch / 60 - 1e-9) * 60
    return time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime(minute))
