"""Figures said for people: durations."""

from __future__ import annotations


def duration(seconds: float) -> str:
    """``3725`` → ``1h02m05s``; ``65`` → ``1m05s``; ``4.2`` → ``4.2s``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"
