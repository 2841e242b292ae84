"""What a server's headers say about its quota and when to come back: pure parsing, no clock.

The standard forms are read here (``Retry-After``, the IETF ``RateLimit``/``RateLimit-Policy``
drafts, ``X-RateLimit-*``); providers' own forms are read by :mod:`ingest.ratelimit.dialects`
into the same :class:`Quota`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Protocol

# What a quota counts when it counts requests; another unit (tokens, bytes) never paces them.
REQUESTS = "requests"


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


def parse_iso_time(text: str) -> float | None:
    """An ISO 8601 time with its offset (``2023-11-14T22:14Z``) as epoch seconds, or None."""
    if not _ISO.fullmatch(text):
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def retry_after_seconds(
    value: str | bytes | None, *, now: float, date: str | bytes | None = None
) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta-seconds (``2``, or ``2.0`` as some
    servers write it) or an HTTP-date.

    The date form is measured against the response's own ``Date`` header when it
    has one, so a skew between the server's clock and ours does not matter; ``now``
    (epoch seconds) is used only without it. Returns None when the header is
    missing, malformed, zero or in the past: the caller backs off on its own.
    """
    if value is None:
        return None
    text = (value.decode("latin-1") if isinstance(value, bytes) else value).strip()
    if _DECIMAL.fullmatch(text):
        seconds = float(text)
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
_ISO = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]{5,15}(?:Z|[+-][0-9]{2}:?[0-9]{2})")

Bare = int | float | str | bytes | bool
Member = tuple[Bare, dict[str, Bare]]
Policy = tuple[int, float | None]  # (quota, window seconds)
POLICY, STATE = "RateLimit-Policy", "RateLimit"


class HeaderSource(Protocol):
    """What the readers read: ``scrapy.http.Headers`` or anything alike."""

    def get(self, key: str, /) -> bytes | None: ...
    def getlist(self, key: str, /) -> list[bytes]: ...


@dataclass(frozen=True, slots=True)
class Quota:
    """The server's word on one of its quotas; a field is None when the server did not say."""

    remaining: int | None = None  # units left now (>= 0)
    reset: float | None = None  # seconds from the response until capacity frees (>= 0)
    limit: int | None = None  # units allowed per window
    window: float | None = None  # the window in seconds
    name: str = ""  # which of the server's quotas, when it names them ("daily", "tokens", …)
    unit: str = REQUESTS  # what it counts: only a quota of requests paces them
    exact: bool = False  # the reset is said to the millisecond, not in whole seconds

    @property
    def exhausted(self) -> bool:
        """Nothing is left, and the server said when that changes."""
        return self.remaining == 0 and self.reset is not None

    @property
    def of_requests(self) -> bool:
        return self.unit == REQUESTS


def binding(quotas: Iterable[Quota]) -> Quota | None:
    """The quota of requests that binds: the closest to exhaustion (on a tie, the one that
    frees up last, then one that says when); without any remaining count, the strictest."""
    counted = [q for q in quotas if q.of_requests]
    stated = [q for q in counted if q.remaining is not None]
    if stated:
        return min(stated, key=lambda q: (q.remaining, q.reset is None, -(q.reset or 0.0)))
    windowed = [q for q in counted if q.limit is not None]
    return min(windowed, key=_strictness, default=counted[0] if counted else None)


def _strictness(q: Quota) -> tuple[float, int]:
    return (q.limit / q.window if q.limit is not None and q.window else math.inf, q.limit or 0)


def rate_limited(status: int, q: Quota | None) -> bool:
    """Whether the server refused for quota: 429, or 403 with nothing left (GitHub)."""
    return status == 429 or (status == 403 and q is not None and q.remaining == 0)


def _names_quota(name: str | bytes) -> bool:
    lowered = (name.decode("latin-1") if isinstance(name, bytes) else name).lower()
    return "ratelimit" in lowered or "rate-limit" in lowered


def quota_of(headers: HeaderSource, *, now: float) -> Quota | None:
    """The binding quota a response announces in a standard form, or None when it announces
    none usably (see :func:`standard_quotas`)."""
    return binding(standard_quotas(headers, now=now, unreadable=[]))


def standard_quotas(headers: HeaderSource, *, now: float, unreadable: list[str]) -> list[Quota]:
    """The quotas a response announces in a standard form: every policy of the IETF draft's
    current ``RateLimit``/``RateLimit-Policy`` pair, else its older ``RateLimit-Limit/
    -Remaining/-Reset``, else ``X-RateLimit-*``. The first form that yields anything wins
    whole, so numbers from different forms are never mixed; a field that cannot be read
    counts as absent, and its name is added to ``unreadable``. Epoch resets are measured
    against the response's ``Date`` when it has one, else against ``now``.
    """
    names = getattr(headers, "keys", None)
    if names is not None and not any(_names_quota(name) for name in names()):
        return []  # the common case, answered before parsing any date
    reference = reference_time(headers, now)
    for form in (_current_draft, _older_draft, _x_ratelimit):
        found = form(headers, reference, unreadable)
        if found:
            return found
    return []


def reference_time(headers: HeaderSource, now: float) -> float:
    """The server's time of the answer: its ``Date`` when it has one, else ``now``."""
    date = parse_http_date(headers.get("Date"))
    return date if date is not None else now


def _current_draft(headers: HeaderSource, reference: float, unreadable: list[str]) -> list[Quota]:
    policies: dict[str, Policy] = {}
    other_units: set[str] = set()
    for name, params in _sf_list(headers.getlist(POLICY), POLICY, unreadable):
        if not isinstance(name, str):
            continue
        if params.get("qu", REQUESTS) != REQUESTS:  # a byte quota is no request quota
            other_units.add(name)
        elif (q := _count(params.get("q"))) is not None:
            policies[name] = (q, _positive(params.get("w")))
        else:
            unreadable.append(POLICY)
    states: list[Quota] = []
    for name, params in _sf_list(headers.getlist(STATE), STATE, unreadable):
        if isinstance(name, str) and name not in other_units:
            r, t = _count(params.get("r")), _seconds(params.get("t"), reference)
            if r is not None and (t is not None or "t" not in params):
                limit, window = policies.get(name, (None, None))
                states.append(Quota(r, t, limit, window, name=name))
            else:
                unreadable.append(STATE)
    if states:
        return states
    return [Quota(limit=q, window=w, name=name) for name, (q, w) in policies.items()]


def _older_draft(headers: HeaderSource, reference: float, unreadable: list[str]) -> list[Quota]:
    # Before RateLimit-Policy existed, -Limit listed the policies after the current limit.
    limits = _sf_list(headers.getlist("RateLimit-Limit"), "RateLimit-Limit", unreadable)
    given = _sf_list(headers.getlist("RateLimit-Policy"), "RateLimit-Policy", unreadable)
    policies = [
        (q, _positive(params.get("w")))
        for item, params in given + limits[1:]
        if (q := _count(item)) is not None
    ]
    limit = _count(limits[0][0]) if limits else None
    window = _positive(limits[0][1].get("w")) if limit is not None else None
    if limit is not None and window is None:
        window = next((w for q, w in policies if q == limit and w is not None), None)
    if limit is None and policies:
        limit, window = min(policies, key=lambda p: (p[0] / p[1] if p[1] else math.inf, p[0]))
    remaining = _count(_sf_item(headers, "RateLimit-Remaining", unreadable, _count))
    reset = _seconds(_sf_item(headers, "RateLimit-Reset", unreadable, _number), reference)
    found = Quota(remaining=remaining, reset=reset, limit=limit, window=window)
    return [] if found == Quota() else [found]


def _x_ratelimit(headers: HeaderSource, reference: float, unreadable: list[str]) -> list[Quota]:
    """``X-RateLimit-*`` (or ``X-Rate-Limit-*``): a reset as delta seconds, epoch seconds or
    milliseconds, or an ISO 8601 time (Atlassian); a remaining count written as a decimal
    (Reddit's ``596.0``) taken whole, rounded down; the limit, when not said, as the used
    and remaining counts together (Reddit)."""

    def field(suffix: str) -> tuple[str, str] | None:
        for prefix in ("X-RateLimit-", "X-Rate-Limit-"):
            raw = headers.get(prefix + suffix)
            if raw is not None:
                return prefix + suffix, raw.decode("ascii", "replace").strip()
        return None

    def read(suffix: str, pattern: re.Pattern[str]) -> str | None:
        found = field(suffix)
        if found is None:
            return None
        if pattern.fullmatch(found[1]):
            return found[1]
        if suffix != "Reset" or parse_iso_time(found[1]) is None:
            unreadable.append(found[0])
        return None

    limit, remaining, used = (
        read("Limit", _DIGITS),
        read("Remaining", _DECIMAL),
        read("Used", _DIGITS),
    )
    reset_text, reset = read("Reset", _DECIMAL), None
    if reset_text is not None:
        reset = _seconds(float(reset_text), reference)
    elif (iso := field("Reset")) is not None and (when := parse_iso_time(iso[1])) is not None:
        reset = max(0.0, when - reference)
    left = math.floor(float(remaining)) if remaining is not None else None
    total = int(limit) if limit is not None else None
    if total is None and left is not None and used is not None:
        total = left + int(used)
    found = Quota(remaining=left, reset=reset, limit=total)
    return [] if found == Quota() else [found]


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


def _sf_item(
    headers: HeaderSource, name: str, unreadable: list[str], kind: Callable[[Bare], object]
) -> Bare | None:
    """The one item of a header, when it is one of the ``kind`` wanted (else None, and
    the header's name added to ``unreadable``)."""
    members = _sf_list(headers.getlist(name), name, unreadable)
    if len(members) == 1 and kind(members[0][0]) is not None:
        return members[0][0]
    if members:
        unreadable.append(name)
    return None


def _sf_list(lines: list[bytes], name: str, unreadable: list[str]) -> list[Member]:
    """An RFC 9651 List of Items (no inner lists); empty when absent or malformed (then
    ``name`` is added to ``unreadable``)."""
    members = _sf_members(lines)
    if not members and any(line.strip() for line in lines):
        unreadable.append(name)
    return members


def _sf_members(lines: list[bytes]) -> list[Member]:
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
