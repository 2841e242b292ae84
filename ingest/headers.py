"""What a server's headers say about when to come back: pure parsing, no clock of its own."""

from __future__ import annotations

from datetime import UTC
from email.utils import parsedate_to_datetime


def http_date(value: str | bytes | None) -> float | None:
    """An HTTP-date (IMF-fixdate, RFC 850 or asctime) as epoch seconds, or None."""
    if value is None:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    try:
        parsed = parsedate_to_datetime(text.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:  # HTTP dates are always GMT
        return parsed.replace(tzinfo=UTC).timestamp()
    return parsed.timestamp()


def retry_after_seconds(
    value: str | bytes | None, *, now: float, date: str | bytes | None = None
) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta-seconds or an HTTP-date.

    The date form is measured against the response's own ``Date`` header when it
    has one, so a skew between the server's clock and ours does not matter; ``now``
    (epoch seconds) is used only without it. Returns None when the header is
    missing, malformed, zero or in the past: the caller backs off on its own.
    """
    if value is None:
        return None
    text = (value.decode("latin-1") if isinstance(value, bytes) else value).strip()
    if text.isdigit():
        seconds = float(int(text))
    else:
        when = http_date(text)
        if when is None:
            return None
        reference = http_date(date)
        seconds = when - (reference if reference is not None else now)
    return seconds if seconds > 0 else None
