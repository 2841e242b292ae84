"""Figures said for people: durations."""

from __future__ import annotations


def duration(seconds: float) -> str:
    """``3725`` → ``1h02m05s``; ``65`` → ``1m05s``; ``4.2`` → ``4.2s``; from a day on,
    to the minute: ``178800`` → ``2d01h40m``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole >= 86_400:
        days, rest = divmod(round(seconds / 60), 1440)
        return f"{days}d{rest // 60:02d}h{rest % 60:02d}m"
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"
