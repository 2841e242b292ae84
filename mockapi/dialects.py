"""Providers' rate-limit dialects: how a quota's state is said (headers, status, body) per API."""

from __future__ import annotations

import functools
import hashlib
import json
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mockapi.formats import ceil_ms, decimal, go_duration, iso_minute, retry_seconds
from mockapi.limits import QuotaView, ceil_seconds


@dataclass(frozen=True)
class Quota:
    """What a dialect is told: every --limit's state in the order given, and, on a refusal for
    the quota (or before a time an earlier refusal named), the seconds until one is allowed."""

    views: tuple[QuotaView, ...]
    wait: float | None = None

    @property
    def second(self) -> QuotaView | None:
        return self.views[1] if len(self.views) > 1 else None


@dataclass
class Said:
    """A dialect's answer: headers for every answer; for a refusal its status, its body (None:
    the mock's own) and the wait it names, which --enforce-retry-after holds the client to."""

    headers: dict[str, str] = field(default_factory=dict)
    status: int | None = None
    body: bytes | None = None
    wait: float | None = None


Dialect = Callable[[Quota, float], Said]


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def _used(view: QuotaView) -> int:
    return view.capacity - view.remaining


GITHUB_DOCS = "https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api"
GITHUB_PRIMARY = "API rate limit exceeded for user ID 1."
GITHUB_SECONDARY = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
)


def github(quota: Quota, now: float, *, status: int = 403, retry_after: bool = True) -> Said:
    """GitHub REST, after "Rate limits for the REST API" (docs.github.com). The first limit is
    the primary one, in x-ratelimit-* (reset: UTC epoch seconds); when spent, `status` (403 or
    429) with remaining 0 and no retry-after. A second limit is a secondary one, never
    announced: its refusal has a retry-after in seconds, or none (`retry_after` off)."""
    primary = quota.views[0]
    reset = ceil_seconds(now + primary.reset_in)
    headers = {
        "x-ratelimit-limit": str(primary.capacity),
        "x-ratelimit-remaining": str(primary.remaining),
        "x-ratelimit-used": str(_used(primary)),
        "x-ratelimit-reset": str(reset),
        "x-ratelimit-resource": "core",
    }
    if quota.wait is None:
        return Said(headers)
    if primary.remaining == 0:
        body = _json({"message": GITHUB_PRIMARY, "documentation_url": GITHUB_DOCS})
        return Said(headers, status, body, wait=reset - now)
    body = _json({"message": GITHUB_SECONDARY, "documentation_url": GITHUB_DOCS})
    if not retry_after:
        return Said(headers, status, body)
    seconds = retry_seconds(quota.wait)
    return Said({**headers, "retry-after": str(seconds)}, status, body, wait=seconds)


def shopify(quota: Quota, now: float) -> Said:
    """Shopify Admin REST, after "REST Admin API rate limits" (shopify.dev): a leaky bucket's
    fill as `X-Shopify-Shop-Api-Call-Limit: 32/40`; full, a 429 with a fractional Retry-After
    ("2.0"), here the true wait rounded up to a tenth. The bucket is --algorithm token: its
    --burst is the capacity, its --limit the leak rate (40 leaking 2/s: --limit 2/1 --burst 40)."""
    bucket = quota.views[0]
    headers = {"X-Shopify-Shop-Api-Call-Limit": f"{_used(bucket)}/{bucket.capacity}"}
    if quota.wait is None:
        return Said(headers)
    tenths = max(1, math.ceil(quota.wait * 10 - 1e-6))
    return Said({**headers, "Retry-After": f"{tenths / 10:.1f}"}, 429, wait=tenths / 10)


# A bucket id is an opaque hash to clients; this one names the mock's single route.
DISCORD_BUCKET = hashlib.sha256(b"GET /items").hexdigest()[:32]


def discord(quota: Quota, now: float) -> Said:
    """Discord, after "Rate Limits" (docs.discord.com/developers/topics/rate-limits). The first
    limit is the route's bucket: X-RateLimit-Limit, -Remaining, -Reset (epoch seconds with
    milliseconds), -Reset-After (seconds), -Bucket. A 429 adds Retry-After (whole seconds),
    X-RateLimit-Scope and a JSON body {message, retry_after, global}. A second limit is the
    global one: refused by it alone, the 429 says only Retry-After, X-RateLimit-Global: true and
    X-RateLimit-Scope: global, with "global": true."""
    route = quota.views[0]
    headers = {
        "X-RateLimit-Limit": str(route.capacity),
        "X-RateLimit-Remaining": str(route.remaining),
        "X-RateLimit-Reset": decimal(ceil_ms(now + route.reset_in)),
        "X-RateLimit-Reset-After": decimal(ceil_ms(route.reset_in)),
        "X-RateLimit-Bucket": DISCORD_BUCKET,
    }
    if quota.wait is None:
        return Said(headers)
    wait = ceil_ms(quota.wait) / 1000
    is_global = route.remaining > 0 and any(view.remaining == 0 for view in quota.views[1:])
    retry = {"Retry-After": str(math.ceil(wait))}
    if is_global:
        headers = {**retry, "X-RateLimit-Global": "true", "X-RateLimit-Scope": "global"}
    else:
        headers = {**retry, **headers, "X-RateLimit-Scope": "user"}
    body = {"message": "You are being rate limited.", "retry_after": wait, "global": is_global}
    return Said(headers, 429, _json(body), wait=wait)


def openai(quota: Quota, now: float) -> Said:
    """OpenAI, after "Rate limits" (platform.openai.com/docs/guides/rate-limits): the first limit
    in x-ratelimit-{limit,remaining,reset}-requests, a second in the -tokens headers (each
    request costs one token here), resets as Go durations ("1s", "6m0s", "20ms"). A 429 names
    its wait in the error message only (no retry-after)."""
    named, headers = list(zip(("requests", "tokens"), quota.views, strict=False)), {}
    for kind, view in named:
        headers[f"x-ratelimit-limit-{kind}"] = str(view.capacity)
        headers[f"x-ratelimit-remaining-{kind}"] = str(view.remaining)
        headers[f"x-ratelimit-reset-{kind}"] = go_duration(ceil_ms(view.reset_in))
    if quota.wait is None:
        return Said(headers)
    kind, view = next(((k, v) for k, v in named if v.remaining == 0), named[0])
    ms = ceil_ms(quota.wait)
    message = (
        f"Rate limit reached in organization org-mockapi on {kind}: Limit {view.capacity}, "
        f"Used {_used(view)}, Requested 1. Please try again in {go_duration(ms)}."
    )
    error = {"message": message, "type": kind, "param": None, "code": "rate_limit_exceeded"}
    return Said(headers, 429, _json({"error": error}), wait=ms / 1000)


def azure(quota: Quota, now: float) -> Said:
    """Azure Resource Manager, after "Throttling Resource Manager requests" (learn.microsoft.com):
    x-ms-ratelimit-remaining-subscription-reads from the first limit (and -tenant-reads from a
    second); a 429 with Retry-After (seconds) and, as Azure SDKs read them first, retry-after-ms
    and x-ms-retry-after-ms (milliseconds)."""
    headers = {"x-ms-ratelimit-remaining-subscription-reads": str(quota.views[0].remaining)}
    if tenant := quota.second:
        headers["x-ms-ratelimit-remaining-tenant-reads"] = str(tenant.remaining)
    if quota.wait is None:
        return Said(headers)
    ms = max(1, ceil_ms(quota.wait))
    retry = {"Retry-After": str(retry_seconds(ms / 1000)), "retry-after-ms": str(ms)}
    retry["x-ms-retry-after-ms"] = str(ms)
    return Said({**headers, **retry}, 429, wait=ms / 1000)


def reddit(quota: Quota, now: float) -> Said:
    """Reddit, after its API rules (github.com/reddit-archive/reddit/wiki/API): X-Ratelimit-Used,
    X-Ratelimit-Remaining (a float, as served: "596.0"), X-Ratelimit-Reset (seconds to the end of
    the period). A refusal is a 429 with these headers alone."""
    period = quota.views[0]
    reset = ceil_seconds(period.reset_in)
    headers = {
        "X-Ratelimit-Used": str(_used(period)),
        "X-Ratelimit-Remaining": f"{period.remaining:.1f}",
        "X-Ratelimit-Reset": str(reset),
    }
    if quota.wait is None:
        return Said(headers)
    return Said(headers, 429, wait=reset if period.remaining == 0 else None)


def hubspot(quota: Quota, now: float) -> Said:
    """HubSpot, after "API usage guidelines" (developers.hubspot.com): the first limit is the
    interval one (X-HubSpot-RateLimit-Max, -Remaining, -Interval-Milliseconds), a second the
    daily one (X-HubSpot-RateLimit-Daily, -Daily-Remaining). A 429's JSON body names the policy
    hit: DAILY or TEN_SECONDLY_ROLLING."""
    interval, daily = quota.views[0], quota.second
    headers = {
        "X-HubSpot-RateLimit-Interval-Milliseconds": str(round(interval.limit.period * 1000)),
        "X-HubSpot-RateLimit-Max": str(interval.capacity),
        "X-HubSpot-RateLimit-Remaining": str(interval.remaining),
    }
    if daily:
        headers["X-HubSpot-RateLimit-Daily"] = str(daily.capacity)
        headers["X-HubSpot-RateLimit-Daily-Remaining"] = str(daily.remaining)
    if quota.wait is None:
        return Said(headers)
    policy = "DAILY" if daily and daily.remaining == 0 else "TEN_SECONDLY_ROLLING"
    # Ids as HubSpot's are UUIDs; these are derived from the time, so the answer stays pure.
    correlation, request = (uuid.uuid5(uuid.NAMESPACE_URL, f"{k}:{now!r}") for k in "cr")
    body = {
        "status": "error",
        "message": f"You have reached your {policy.lower()} limit.",
        "errorType": "RATE_LIMIT",
        "correlationId": str(correlation),
        "policyName": policy,
        "requestId": str(request),
    }
    return Said(headers, 429, _json(body))


def salesforce(quota: Quota, now: float) -> Said:
    """Salesforce REST, after "Limit Info Header" and "Status Codes and Error Responses"
    (developer.salesforce.com): `Sforce-Limit-Info: api-usage=18/15000` from the last limit,
    the 24-hour allowance (--algorithm sliding makes it rolling). A refusal is a 403 whose body
    is [{"message", "errorCode": "REQUEST_LIMIT_EXCEEDED"}], without Retry-After."""
    daily = quota.views[-1]
    headers = {"Sforce-Limit-Info": f"api-usage={_used(daily)}/{daily.capacity}"}
    if quota.wait is None:
        return Said(headers)
    kind = "TotalRequests" if daily.remaining == 0 else "ConcurrentRequests"
    body = [{"message": f"{kind} Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
    return Said(headers, 403, _json(body))


def atlassian(quota: Quota, now: float) -> Said:
    """Atlassian (Jira) Cloud, after "Rate limiting" (developer.atlassian.com): X-RateLimit-Limit
    and -Remaining from the first limit, X-RateLimit-NearLimit: true under 20% left. A 429 adds
    Retry-After (seconds), X-RateLimit-Reset (now + Retry-After, ISO 8601 to the minute, rounded
    up) and RateLimit-Reason: jira-burst-based, or jira-quota-global-based when only a second
    limit (the hourly quota) is spent."""
    first = quota.views[0]
    headers = {
        "X-RateLimit-Limit": str(first.capacity),
        "X-RateLimit-Remaining": str(first.remaining),
    }
    if first.remaining * 5 < first.capacity:
        headers["X-RateLimit-NearLimit"] = "true"
    if quota.wait is None:
        return Said(headers)
    seconds = retry_seconds(quota.wait)
    hourly = quota.second
    quota_based = first.remaining > 0 and hourly is not None and hourly.remaining == 0
    headers["Retry-After"] = str(seconds)
    headers["X-RateLimit-Reset"] = iso_minute(now + seconds)
    headers["RateLimit-Reason"] = "jira-quota-global-based" if quota_based else "jira-burst-based"
    return Said(headers, 429, wait=seconds)


def zendesk(quota: Quota, now: float) -> Said:
    """Zendesk, after "Rate limits" and "Best practices for avoiding rate limiting"
    (developer.zendesk.com): the first limit is the account's (x-rate-limit, ratelimit-limit,
    x-rate-limit-remaining, ratelimit-remaining, ratelimit-reset in seconds), a second an endpoint
    quota, `zendesk-ratelimit-tickets-index: total=100; remaining=99; resets=10`. A 429 adds
    Retry-After (seconds)."""
    account = quota.views[0]
    headers = {
        "x-rate-limit": str(account.capacity),
        "ratelimit-limit": str(account.capacity),
        "x-rate-limit-remaining": str(account.remaining),
        "ratelimit-remaining": str(account.remaining),
        "ratelimit-reset": str(ceil_seconds(account.reset_in)),
    }
    if endpoint := quota.second:
        resets = ceil_seconds(endpoint.reset_in)
        headers["zendesk-ratelimit-tickets-index"] = (
            f"total={endpoint.capacity}; remaining={endpoint.remaining}; resets={resets}"
        )
    if quota.wait is None:
        return Said(headers)
    seconds = retry_seconds(quota.wait)
    return Said({**headers, "Retry-After": str(seconds)}, 429, wait=seconds)


ALL = (github, shopify, discord, openai, azure, reddit, hubspot, salesforce, atlassian, zendesk)
DIALECTS: dict[str, Dialect] = {said.__name__: said for said in ALL}
NAMES = tuple(DIALECTS)


def make(name: str, *, status: int = 403, retry_after: bool = True) -> Dialect | None:
    """The dialect called `name` (None for "none"); GitHub's refusals use `status`, and its
    secondary ones carry retry-after only with `retry_after`."""
    if name == "none":
        return None
    said = functools.partial(github, status=status, retry_after=retry_after)
    return functools.partial(_announced, said if name == "github" else DIALECTS[name])


def _announced(said: Dialect, quota: Quota, now: float) -> Said:
    """No limit of its own announces nothing; a refusal then (the shared cap's) is a bare 429."""
    if quota.views:
        return said(quota, now)
    if quota.wait is None:
        return Said()
    seconds = retry_seconds(quota.wait)
    return Said({"Retry-After": str(seconds)}, 429, wait=seconds)
