"""What a server's headers say about its quota and when to come back: pure parsing, no clock."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Protocol


def parse_http_date(value: str | bytes | None) -> float | None:
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
        when = parse_http_date(text)
        if when is None:
            return None
        reference = parse_http_date(date)
        seconds = when - (reference if reference is not None else now)
    return seconds if seconds > 0 else None


# A reset larger than ten years of seconds can only be an epoch timestamp.
_EPOCH_FLOOR = 315_360_000
_EPOCH_MS_FLOOR = 1e12

# RFC 9651 bare items (decimal, integer, string, token, boolean, byte sequence), parameters
# and list members; matching a member at a time keeps commas inside strings where they belong.
_ITEM = (
    r"(?:-?(?:[0-9]{1,12}\.[0-9]{1,3}|[0-9]{1,15})(?![0-9.])"
    r'|"(?:[ !#-\[\]-~]|\\["\\])*"'
    r"|[A-Za-z*][A-Za-z0-9!#$%&'*+\-.^_`|~:/]*|\?[01]|:[A-Za-z0-9+/=]*:)"
)
_PARAM = re.compile(rf";[ ]*(?P<key>[a-z*][a-z0-9_\-.*]*)(?:=(?P<value>{_ITEM}))?")
_MEMBER = re.compile(rf"(?P<item>{_ITEM})(?P<params>(?:{_PARAM.pattern})*)")
_COMMA = re.compile(r"[ \t]*,[ \t]*")
_DIGITS = re.compile(r"[0-9]{1,15}")
_DECIMAL = re.compile(r"[0-9]{1,15}(?:\.[0-9]{1,6})?")

Bare = int | float | str | bytes | bool
Member = tuple[Bare, dict[str, Bare]]
Policy = tuple[int, float | None]  # (quota, window seconds)


class HeaderSource(Protocol):
    """What ``quota`` reads: ``scrapy.http.Headers`` or anything alike."""

    def get(self, key: str, /) -> bytes | None: ...
    def getlist(self, key: str, /) -> list[bytes]: ...


@dataclass(frozen=True, slots=True)
class Quota:
    """The server's word on its quota; a field is None when the server did not say."""

    remaining: int | None = None  # requests left now (>= 0)
    reset: float | None = None  # seconds from the response until capacity frees (>= 0)
    limit: int | None = None  # requests allowed per window
    window: float | None = None  # the window in seconds

    @property
    def exhausted(self) -> bool:
        """Nothing is left, and the server said when that changes."""
        return self.remaining == 0 and self.reset is not None


def rate_limited(status: int, q: Quota | None) -> bool:
    """Whether the server refused for quota: 429, or 403 with nothing left (GitHub)."""
    return status == 429 or (status == 403 and q is not None and q.remaining == 0)


def _names_quota(name: str | bytes) -> bool:
    lowered = (name.decode("latin-1") if isinstance(name, bytes) else name).lower()
    return "ratelimit" in lowered or "rate-limit" in lowered


def quota_of(headers: HeaderSource, *, now: float) -> Quota | None:
    """The quota a response announces, or None when it announces none usably.

    Reads the IETF draft's current ``RateLimit``/``RateLimit-Policy`` pair, else its
    older ``RateLimit-Limit/-Remaining/-Reset``, else ``X-RateLimit-*``. The first
    form that yields anything wins whole, so numbers from different policies are
    never mixed; a malformed field counts as absent. Epoch resets are measured
    against the response's ``Date`` when it has one, else against ``now``.
    """
    names = getattr(headers, "keys", None)
    if names is not None and not any(_names_quota(name) for name in names()):
        return None  # the common case, answered before parsing any date
    date = parse_http_date(headers.get("Date"))
    reference = date if date is not None else now
    for form in (_current_draft, _older_draft, _x_ratelimit):
        found = form(headers, reference)
        if found is not None:
            return found
    return None


def _current_draft(headers: HeaderSource, reference: float) -> Quota | None:
    policies: dict[str, Policy] = {}
    other_units: set[str] = set()
    for name, params in _sf_list(headers.getlist("RateLimit-Policy")):
        if not isinstance(name, str):
            continue
        if params.get("qu", "requests") != "requests":  # a byte quota is no request quota
            other_units.add(name)
        elif (q := _count(params.get("q"))) is not None:
            policies[name] = (q, _positive(params.get("w")))
    states: list[tuple[int, float | None, str]] = []
    for name, params in _sf_list(headers.getlist("RateLimit")):
        if isinstance(name, str) and name not in other_units:
            r, t = _count(params.get("r")), _seconds(params.get("t"), reference)
            if r is not None and (t is not None or "t" not in params):
                states.append((r, t, name))
    if states:
        # The closest to exhaustion binds; on a tie, the one that frees up last.
        r, t, name = min(states, key=lambda s: (s[0], s[1] is None, -(s[1] or 0.0)))
        limit, window = policies.get(name, (None, None))
        return Quota(remaining=r, reset=t, limit=limit, window=window)
    if policies:
        limit, window = _strictest(policies.values())
        return Quota(limit=limit, window=window)
    return None


def _older_draft(headers: HeaderSource, reference: float) -> Quota | None:
    # Before RateLimit-Policy existed, -Limit listed the policies after the current limit.
    limits = _sf_list(headers.getlist("RateLimit-Limit"))
    policies = [
        (q, _positive(params.get("w")))
        for item, params in _sf_list(headers.getlist("RateLimit-Policy")) + limits[1:]
        if (q := _count(item)) is not None
    ]
    limit = _count(limits[0][0]) if limits else None
    window = _positive(limits[0][1].get("w")) if limit is not None else None
    if limit is not None and window is None:
        window = next((w for q, w in policies if q == limit and w is not None), None)
    if limit is None and policies:
        limit, window = _strictest(policies)
    remaining = _count(_sf_item(headers.getlist("RateLimit-Remaining")))
    reset = _seconds(_sf_item(headers.getlist("RateLimit-Reset")), reference)
    found = Quota(remaining=remaining, reset=reset, limit=limit, window=window)
    return None if found == Quota() else found


def _x_ratelimit(headers: HeaderSource, reference: float) -> Quota | None:
    def field(suffix: str) -> str | None:
        raw = headers.get(f"X-RateLimit-{suffix}") or headers.get(f"X-Rate-Limit-{suffix}")
        return raw.decode("ascii", "replace").strip() if raw is not None else None

    limit, remaining, reset = field("Limit"), field("Remaining"), field("Reset")
    found = Quota(
        remaining=int(remaining) if remaining and _DIGITS.fullmatch(remaining) else None,
        reset=_seconds(float(reset), reference) if reset and _DECIMAL.fullmatch(reset) else None,
        limit=int(limit) if limit and _DIGITS.fullmatch(limit) else None,
    )
    return None if found == Quota() else found


def _seconds(value: Bare | None, reference: float) -> float | None:
    """Seconds until a reset given as delta seconds or an epoch timestamp (s or ms)."""
    seconds = _number(value)
    if seconds is None or seconds < 0:
        return None
    if seconds > _EPOCH_MS_FLOOR:
        seconds /= 1000
    if seconds > _EPOCH_FLOOR:
        seconds -= reference
    return max(seconds, 0.0)


def _number(value: Bare | None) -> float | None:
    return float(value) if type(value) is int or type(value) is float else None  # not bool


def _count(value: Bare | None) -> int | None:
    return value if type(value) is int and value >= 0 else None  # not bool


def _positive(value: Bare | None) -> float | None:
    return number if (number := _number(value)) is not None and number > 0 else None


def _strictest(policies: Iterable[Policy]) -> Policy:
    """The policy allowing the lowest rate; one without a window ranks after, by quota."""
    return min(policies, key=lambda p: (p[0] / p[1] if p[1] else math.inf, p[0]))


def _sf_item(lines: list[bytes]) -> Bare | None:
    members = _sf_list(lines)
    return members[0][0] if len(members) == 1 else None


def _sf_list(lines: list[bytes]) -> list[Member]:
    """An RFC 9651 List of Items (no inner lists); empty when absent or malformed."""
    try:
        text = b",".join(lines).decode("ascii").strip(" \t")
    except UnicodeDecodeError:
        return []
    members: list[Member] = []
    pos = 0
    while member := _MEMBER.match(text, pos):
        params = {
            p["key"]: _sf_bare(p["value"]) if p["value"] else True
            for p in _PARAM.finditer(member["params"])
        }
        members.append((_sf_bare(member["item"]), params))
        if member.end() == len(text):
            return members
        if (comma := _COMMA.match(text, member.end())) is None:
            return []
        pos = comma.end()
    return []  # empty, or a stray comma


def _sf_bare(text: str) -> Bare:
    if text[0] == '"':
        return re.sub(r"\\(.)", r"\1", text[1:-1])
    if text[0] in "?:":
        return text == "?1" if text[0] == "?" else text[1:-1].encode()
    if text[0] in "-0123456789":
        return float(text) if "." in text else int(text)
    return text
