"""Providers' own ways of saying a quota and a refusal, read into :class:`Quota`: pure, no clock.

:func:`hear` is the one reading of an answer the rate limiter follows: the standard forms
(:mod:`ingest.ratelimit.headers`) and each provider's below, as docs/dialects.md lists them
with their sources. Every quota found is kept (several at once: an interval's and a day's,
an endpoint's beside the account's, requests and tokens); a field that cannot be read is
named in ``unreadable`` and otherwise ignored.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from ingest.ratelimit.headers import (
    REQUESTS,
    HeaderSource,
    Quota,
    binding,
    parse_http_date,
    retry_after_seconds,
    standard_quotas,
)

DAY = 86_400.0
# Shopify's leaky bucket empties in 20 seconds on every plan: 40 leaking 2 a second,
# 80 leaking 4, 400 leaking 20 (Shopify's staff, community.shopify.com/t/232461).
SHOPIFY_DRAIN = 20.0
# GitHub: a secondary limit that names no wait asks for "at least a minute".
GITHUB_LEAST = 60.0
# A refusal's body is read for its wait only when it is this short.
BODY_MAX = 65_536

_COUNT = re.compile(r"[0-9]{1,15}")
_DECIMAL = re.compile(r"[0-9]{1,15}(?:\.[0-9]{1,6})?")
_GO_PART = re.compile(r"([0-9]{1,15}(?:\.[0-9]{1,9})?)(h|ms|m|s|us|µs|ns)")
_GO_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_TRY_AGAIN = re.compile(r"try again in ([0-9hmsuµn.]{2,40})", re.IGNORECASE)
_USAGE = re.compile(r"\s*api-usage\s*=\s*([0-9]{1,15})\s*/\s*([0-9]{1,15})\s*")
_FILL = re.compile(r"\s*([0-9]{1,9})\s*/\s*([0-9]{1,9})\s*")


@dataclass(frozen=True, slots=True)
class Said:
    """What one answer says about the rate: every quota it announces, whether it is a refusal
    for the rate, the wait it names (``why``: where that was read), and the quota headers that
    could not be read (lower-case names)."""

    quotas: tuple[Quota, ...] = ()
    refused: bool = False
    wait: float | None = None
    why: str = ""
    unreadable: tuple[str, ...] = ()

    @property
    def binding(self) -> Quota | None:
        """The quota of requests closest to exhaustion: the one a budget follows."""
        return binding(self.quotas)


def duration(text: str) -> float | None:
    """A Go duration as OpenAI writes resets (``6m0s``, ``1.5s``, ``20ms``) in seconds, or None."""
    text, seconds, pos = text.strip(), 0.0, 0
    while pos < len(text):
        part = _GO_PART.match(text, pos)
        if part is None:
            return None
        seconds += float(part[1]) * _GO_UNITS[part[2]]
        pos = part.end()
    return seconds if text else None


def _text(headers: HeaderSource, name: str) -> str | None:
    raw = headers.get(name)
    return None if raw is None else raw.decode("ascii", "replace").strip()


def _number(
    headers: HeaderSource, name: str, unreadable: list[str], pattern: re.Pattern[str] = _COUNT
) -> float | None:
    """A header's number, or None: absent, or unreadable (then named)."""
    text = _text(headers, name)
    if text is None:
        return None
    if pattern.fullmatch(text):
        return float(text)
    unreadable.append(name)
    return None


def _whole(value: float | None) -> int | None:
    return None if value is None else math.floor(value)


# ------------------------------------------------------------------ each provider's headers


def shopify(headers: HeaderSource, unreadable: list[str]) -> list[Quota]:
    """``X-Shopify-Shop-Api-Call-Limit: 32/40``: a leaky bucket's fill and size. It drains
    in SHOPIFY_DRAIN seconds, so its size in that window is its rate; one unit frees each
    drain / size seconds."""
    name = "X-Shopify-Shop-Api-Call-Limit"
    text = _text(headers, name)
    if text is None:
        return []
    fill = _FILL.fullmatch(text)
    if fill is None or not 0 <= int(fill[1]) <= int(fill[2]) or int(fill[2]) == 0:
        unreadable.append(name)
        return []
    used, size = int(fill[1]), int(fill[2])
    return [Quota(size - used, SHOPIFY_DRAIN / size, size, SHOPIFY_DRAIN, "bucket", exact=True)]


def openai(headers: HeaderSource, unreadable: list[str]) -> list[Quota]:
    """``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``, resets as Go durations. The
    tokens are another unit: they never pace requests, only hold them when spent."""
    quotas = []
    for unit in (REQUESTS, "tokens"):
        limit = _number(headers, f"x-ratelimit-limit-{unit}", unreadable)
        remaining = _number(headers, f"x-ratelimit-remaining-{unit}", unreadable)
        reset, text = None, _text(headers, f"x-ratelimit-reset-{unit}")
        if text is not None and (reset := duration(text)) is None:
            unreadable.append(f"x-ratelimit-reset-{unit}")
        if limit is not None or remaining is not None or reset is not None:
            left, most = _whole(remaining), _whole(limit)
            quotas.append(Quota(left, reset, most, name=unit, unit=unit, exact=reset is not None))
    return quotas


def azure(headers: HeaderSource, unreadable: list[str]) -> list[Quota]:
    """``x-ms-ratelimit-remaining-subscription-reads: 11999`` and the like: a count left, with
    neither limit nor reset."""
    quotas = []
    for raw in getattr(headers, "keys", list)():
        name = (raw.decode("latin-1") if isinstance(raw, bytes) else raw).lower()
        if name.startswith("x-ms-ratelimit-remaining-"):
            remaining = _number(headers, name, unreadable)
            if remaining is not None:
                quotas.append(Quota(int(remaining), name=name[len("x-ms-ratelimit-remaining-") :]))
    return quotas


def hubspot(headers: HeaderSource, unreadable: list[str]) -> list[Quota]:
    """``X-HubSpot-RateLimit-Max/-Remaining`` per ``-Interval-Milliseconds``, and
    ``-Daily``/``-Daily-Remaining`` (a day, reset at the account's midnight: not said)."""
    prefix, quotas = "X-HubSpot-RateLimit-", []
    interval = _number(headers, prefix + "Interval-Milliseconds", unreadable)
    most = _number(headers, prefix + "Max", unreadable)
    left = _number(headers, prefix + "Remaining", unreadable)
    if most is not None or left is not None:
        window = interval / 1000 if interval else None
        quotas.append(Quota(_whole(left), None, _whole(most), window, "interval"))
    daily = _number(headers, prefix + "Daily", unreadable)
    daily_left = _number(headers, prefix + "Daily-Remaining", unreadable)
    if daily is not None or daily_left is not None:
        quotas.append(Quota(_whole(daily_left), None, _whole(daily), DAY, "daily"))
    return quotas


def salesforce(headers: HeaderSource, unreadable: list[str]) -> list[Quota]:
    """``Sforce-Limit-Info: api-usage=18/15000``: calls used of the org's allowance over the
    last 24 hours (rolling: no reset is said)."""
    name = "Sforce-Limit-Info"
    text = _text(headers, name)
    if text is None:
        return []
    for part in text.split(";"):
        usage = _USAGE.fullmatch(part)
        if usage is not None:
            used, allowed = int(usage[1]), int(usage[2])
            return [Quota(max(0, allowed - used), None, allowed, DAY, "api-usage")]
    unreadable.append(name)
    return []


def zendesk(headers: HeaderSource, unreadable: list[str]) -> list[Quota]:
    """Endpoint quotas such as ``zendesk-ratelimit-tickets-index: total=100; remaining=99;
    resets=41`` (seconds), beside the account's limit in the standard headers."""
    quotas = []
    for raw in getattr(headers, "keys", list)():
        name = (raw.decode("latin-1") if isinstance(raw, bytes) else raw).lower()
        if not name.startswith("zendesk-ratelimit-"):
            continue
        fields = dict(
            part.strip().partition("=")[::2] for part in (_text(headers, name) or "").split(";")
        )
        values = [fields.get(key, "").strip() for key in ("total", "remaining", "resets")]
        if not all(_DECIMAL.fullmatch(value) for value in values):
            unreadable.append(name)
            continue
        total, remaining, resets = (float(value) for value in values)
        quotas.append(
            Quota(int(remaining), resets, int(total), name=name[len("zendesk-ratelimit-") :])
        )
    return quotas


def discord(headers: HeaderSource, unreadable: list[str], quotas: list[Quota]) -> list[Quota]:
    """``X-RateLimit-Reset-After`` (seconds, to the millisecond) is the route bucket's reset,
    said more exactly than its epoch ``X-RateLimit-Reset``; ``X-RateLimit-Bucket`` names it."""
    name = "X-RateLimit-Reset-After"
    after = _number(headers, name, unreadable, _DECIMAL)
    if after is None:
        return quotas
    bucket = _text(headers, "X-RateLimit-Bucket") or "route"
    first = quotas[0] if quotas else Quota()
    route = Quota(first.remaining, after, first.limit, first.window, bucket, exact=True)
    return [route, *quotas[1:]]


# Each provider's reader, and how its headers' names begin (lower case): it is read only
# when an answer has one of them.
PROVIDERS: tuple[tuple[str, Callable[[HeaderSource, list[str]], list[Quota]]], ...] = (
    ("x-shopify-shop-api-call-limit", shopify),
    ("x-ratelimit-limit-", openai),
    ("x-ratelimit-remaining-", openai),
    ("x-ratelimit-reset-", openai),
    ("x-ms-ratelimit-remaining-", azure),
    ("x-hubspot-ratelimit-", hubspot),
    ("sforce-limit-info", salesforce),
    ("zendesk-ratelimit-", zendesk),
)


# ------------------------------------------------------------------ refusals


def body_of(status: int, body: bytes) -> object:
    """The JSON of a refusal's body (403, 429), when it has one short enough; else None."""
    if status not in (403, 429) or not body or len(body) > BODY_MAX:
        return None
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


def _message(document: object) -> str:
    """The error message of a body: GitHub's ``message``, OpenAI's ``error.message``."""
    if not isinstance(document, dict):
        return ""
    error = document.get("error")
    message = error.get("message") if isinstance(error, dict) else document.get("message")
    return message if isinstance(message, str) else ""


def named_wait(
    headers: HeaderSource, document: object, *, now: float, unreadable: list[str]
) -> tuple[float | None, str]:
    """The wait an answer names, and where it was read: milliseconds first (``retry-after-ms``,
    ``x-ms-retry-after-ms``: Azure's SDKs read them before the rest), then Discord's body
    ``retry_after`` (to the millisecond), then ``Retry-After``, then an error message's
    "try again in 1.5s" (OpenAI)."""
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        ms = _number(headers, name, unreadable, _DECIMAL)
        if ms:
            return ms / 1000, name
    if isinstance(document, dict):
        after = document.get("retry_after")
        if isinstance(after, int | float) and not isinstance(after, bool) and 0 < after < math.inf:
            return float(after), "retry_after"
    raw = headers.get("Retry-After")
    wait = retry_after_seconds(raw, now=now, date=headers.get("Date"))
    if wait is not None:
        return wait, "Retry-After"
    if raw is not None and raw.strip() and not _zero(raw):
        unreadable.append("Retry-After")
    found = _TRY_AGAIN.search(_message(document))
    seconds = duration(found[1].rstrip(".")) if found else None
    return (seconds, "the error's message") if seconds else (None, "")


def _zero(raw: bytes) -> bool:
    """A Retry-After of zero or a past date: readable, and a wait of none."""
    text = raw.decode("latin-1").strip()
    return bool(_DECIMAL.fullmatch(text)) or parse_http_date(text) is not None


def _salesforce_refusal(document: object) -> bool:
    return isinstance(document, list) and any(
        isinstance(error, dict) and error.get("errorCode") == "REQUEST_LIMIT_EXCEEDED"
        for error in document
    )


def hear(status: int, headers: HeaderSource, body: bytes = b"", *, now: float) -> Said:
    """What an answer says about the rate (``now``: epoch seconds, for dates without a
    ``Date`` header; ``body``: read only on a 403 or 429).

    Refused for the rate: a 429; a 403 with a quota of requests spent (GitHub's primary
    limit), naming a wait, saying "rate limit" (GitHub) or ``REQUEST_LIMIT_EXCEEDED``
    (Salesforce). GitHub's refusal that names no wait while requests remain is a secondary
    limit: at least a minute.
    """
    unreadable: list[str] = []
    present = [
        (raw.decode("latin-1") if isinstance(raw, bytes) else raw).lower()
        for raw in getattr(headers, "keys", list)()
    ]
    quotas = standard_quotas(headers, now=now, unreadable=unreadable)
    if "x-ratelimit-reset-after" in present:
        quotas = discord(headers, unreadable, quotas)
    read: set[Callable[[HeaderSource, list[str]], list[Quota]]] = set()
    for prefix, provider in PROVIDERS:
        if provider not in read and any(name.startswith(prefix) for name in present):
            read.add(provider)
            quotas += provider(headers, unreadable)
    document = body_of(status, body)
    wait, why = named_wait(headers, document, now=now, unreadable=unreadable)
    message = _message(document).lower()
    spent = any(q.of_requests and q.remaining == 0 for q in quotas)
    refused = status == 429 or (
        status == 403
        and (spent or wait is not None or "rate limit" in message or _salesforce_refusal(document))
    )
    github = headers.get("x-ratelimit-resource") is not None or "secondary rate limit" in message
    if refused and wait is None and github and not spent:
        wait, why = GITHUB_LEAST, "a secondary limit: at least a minute"
    names = tuple(dict.fromkeys(name.lower() for name in unreadable))
    return Said(tuple(quotas), refused, wait, why, names)
