"""Each provider's quota headers and refusals, read as docs/dialects.md quotes them; then what
the feedback does with them, on a fake clock."""

from __future__ import annotations

import asyncio
import json
import random
from email.utils import formatdate
from types import SimpleNamespace
from typing import Any

import pytest
from scrapy import Request
from scrapy.http import Headers, Response
from scrapy.utils.test import get_crawler

from ingest.ratelimit.backends.memory import MemoryBackend
from ingest.ratelimit.dialects import Said, duration, hear
from ingest.ratelimit.feedback import Feedback, Pauses
from ingest.ratelimit.headers import Quota
from ingest.ratelimit.pacing.bucket import TokenBucket
from ingest.ratelimit.pacing.rates import Rate
from ingest.signals import quota_heard
from tests.support.clock import FakeClock

SERVER_NOW = 1_700_000_000  # 2023-11-14T22:13:20Z
DATE = formatdate(SERVER_NOW, usegmt=True)


def said(status: int, fields: dict[str, str], body: Any = None) -> Said:
    raw = b"" if body is None else json.dumps(body).encode()
    return hear(status, Headers({"Date": DATE, **fields}), raw, now=SERVER_NOW + 1000)


# ---------------------------------------------------------------- what each provider says


def test_go_durations() -> None:
    cases = {"1s": 1.0, "6m0s": 360.0, "20ms": 0.02, "1.5s": 1.5, "1h2m3.5s": 3723.5, "0s": 0.0}
    assert {text: duration(text) for text in cases} == pytest.approx(cases)
    assert [duration(text) for text in ("", "1", "s", "1d", "1.5.2s", "-1s")] == [None] * 6


def test_github_primary_limit() -> None:
    headers = {
        "x-ratelimit-limit": "5000",
        "x-ratelimit-remaining": "4999",
        "x-ratelimit-used": "1",
        "x-ratelimit-reset": str(SERVER_NOW + 2800),  # epoch: against the answer's Date
        "x-ratelimit-resource": "core",
    }
    assert said(200, headers) == Said((Quota(4999, 2800.0, 5000),))
    spent = {**headers, "x-ratelimit-remaining": "0", "x-ratelimit-used": "5000"}
    body = {"message": "API rate limit exceeded for user ID 1.", "documentation_url": "…"}
    refusal = said(403, spent, body)
    # Refused for the rate, not a refused token; the quota's reset is the wait.
    assert refusal.refused and refusal.wait is None
    assert refusal.binding == Quota(0, 2800.0, 5000)


@pytest.mark.parametrize("status", [403, 429])
def test_github_secondary_limits_wait_what_they_say_or_a_minute(status: int) -> None:
    headers = {
        "x-ratelimit-limit": "5000",
        "x-ratelimit-remaining": "4000",
        "x-ratelimit-reset": str(SERVER_NOW + 2800),
        "x-ratelimit-resource": "core",
    }
    body = {"message": "You have exceeded a secondary rate limit. Please wait a few minutes."}
    told = said(status, {**headers, "retry-after": "30"}, body)
    assert (told.refused, told.wait, told.why) == (True, 30.0, "Retry-After")
    untold = said(status, headers, body)
    assert (untold.refused, untold.wait) == (True, 60.0)
    # A 403 of GitHub's that is about permissions is no refusal for the rate.
    assert not said(403, headers, {"message": "Resource not accessible by integration"}).refused


def test_shopify_leaky_bucket() -> None:
    # A bucket of 40 drains in 20 s: 2 a second, one unit freed every half second.
    assert said(200, {"X-Shopify-Shop-Api-Call-Limit": "32/40"}).quotas == (
        Quota(8, 0.5, 40, 20.0, "bucket", exact=True),
    )
    refusal = said(429, {"X-Shopify-Shop-Api-Call-Limit": "40/40", "Retry-After": "2.0"})
    assert (refusal.refused, refusal.wait) == (True, 2.0)
    assert refusal.binding == Quota(0, 0.5, 40, 20.0, "bucket", exact=True)


def test_discord_route_bucket_and_its_refusals() -> None:
    bucket = "e3d0efeb28dc918b08bade7ab4234744"
    headers = {
        "X-RateLimit-Limit": "5",
        "X-RateLimit-Remaining": "4",
        "X-RateLimit-Reset": "1470173023.123",
        "X-RateLimit-Reset-After": "0.877",
        "X-RateLimit-Bucket": bucket,
    }
    assert said(200, headers).quotas == (Quota(4, 0.877, 5, None, bucket, exact=True),)
    body = {"message": "You are being rate limited.", "retry_after": 64.57, "global": False}
    refusal = said(429, {**headers, "X-RateLimit-Remaining": "0", "Retry-After": "65"}, body)
    assert (refusal.wait, refusal.why) == (64.57, "retry_after")  # the body's, to the ms
    global_ = {"Retry-After": "65", "X-RateLimit-Global": "true", "X-RateLimit-Scope": "global"}
    refusal = said(429, global_, {**body, "global": True})
    assert (refusal.refused, refusal.wait, refusal.quotas) == (True, 64.57, ())


def test_openai_requests_and_tokens() -> None:
    headers = {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-limit-tokens": "150000",
        "x-ratelimit-remaining-requests": "59",
        "x-ratelimit-remaining-tokens": "149984",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-reset-tokens": "6m0s",
    }
    requests = Quota(59, 1.0, 60, name="requests", exact=True)
    tokens = Quota(149984, 360.0, 150000, name="tokens", unit="tokens", exact=True)
    assert said(200, headers).quotas == (requests, tokens)
    assert said(200, headers).binding == requests  # tokens never pace requests
    message = (
        "Rate limit reached in organization org-x on requests: Limit 60, Used 60, "
        "Requested 1. Please try again in 1.5s."
    )
    body = {"error": {"message": message, "type": "requests", "code": "rate_limit_exceeded"}}
    refusal = said(429, {**headers, "x-ratelimit-remaining-requests": "0"}, body)
    assert (refusal.wait, refusal.why) == (1.5, "the error's message")


def test_azure_remaining_and_millisecond_waits() -> None:
    headers = {"x-ms-ratelimit-remaining-subscription-reads": "11999"}
    assert said(200, headers).quotas == (Quota(11999, name="subscription-reads"),)
    waits = {"Retry-After": "2", "retry-after-ms": "1500", "x-ms-retry-after-ms": "1500"}
    refusal = said(429, {**headers, **waits})
    assert (refusal.refused, refusal.wait, refusal.why) == (True, 1.5, "retry-after-ms")
    refusal = said(429, {"Retry-After": "2", "x-ms-retry-after-ms": "250"})
    assert (refusal.wait, refusal.why) == (0.25, "x-ms-retry-after-ms")


def test_reddit_float_remaining() -> None:
    headers = {
        "X-Ratelimit-Used": "4",
        "X-Ratelimit-Remaining": "596.0",
        "X-Ratelimit-Reset": "523",
    }
    # Reddit says no limit: the used and remaining counts together are it.
    assert said(200, headers).quotas == (Quota(596, 523.0, 600),)


def test_hubspot_interval_and_daily() -> None:
    headers = {
        "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
        "X-HubSpot-RateLimit-Max": "100",
        "X-HubSpot-RateLimit-Remaining": "99",
        "X-HubSpot-RateLimit-Daily": "250000",
        "X-HubSpot-RateLimit-Daily-Remaining": "249999",
    }
    assert said(200, headers).quotas == (
        Quota(99, None, 100, 10.0, "interval"),
        Quota(249999, None, 250000, 86400.0, "daily"),
    )
    body = {"status": "error", "errorType": "RATE_LIMIT", "policyName": "DAILY"}
    assert said(429, {**headers, "X-HubSpot-RateLimit-Daily-Remaining": "0"}, body).refused


def test_salesforce_daily_allowance_and_its_403() -> None:
    headers = {"Sforce-Limit-Info": "api-usage=18/15000"}
    assert said(200, headers).quotas == (Quota(14982, None, 15000, 86400.0, "api-usage"),)
    several = {"Sforce-Limit-Info": "per-app-api-usage=17/250(appName=x); api-usage=18/15000"}
    assert said(200, several).quotas == said(200, headers).quotas
    body = [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
    refusal = said(403, headers, body)
    assert (refusal.refused, refusal.wait) == (True, None)
    assert not said(
        403, headers, [{"message": "No access", "errorCode": "INSUFFICIENT_ACCESS"}]
    ).refused


def test_atlassian_iso_reset_and_retry_after() -> None:
    headers = {
        "X-RateLimit-Limit": "10",
        "X-RateLimit-Remaining": "1",
        "X-RateLimit-NearLimit": "true",
    }
    assert said(200, headers).quotas == (Quota(1, None, 10),)
    refusal = said(
        429,
        {
            **headers,
            "X-RateLimit-Remaining": "0",
            "Retry-After": "3",
            "X-RateLimit-Reset": "2023-11-14T22:14Z",  # 40 s after the answer's Date
            "RateLimit-Reason": "jira-burst-based",
        },
    )
    assert (refusal.wait, refusal.binding, refusal.unreadable) == (3.0, Quota(0, 40.0, 10), ())


def test_zendesk_account_and_endpoint_quotas() -> None:
    headers = {
        "x-rate-limit": "700",
        "ratelimit-limit": "700",
        "x-rate-limit-remaining": "699",
        "ratelimit-remaining": "699",
        "ratelimit-reset": "41",
        "zendesk-ratelimit-tickets-index": "total=100; remaining=99; resets=41",
    }
    endpoint = Quota(99, 41.0, 100, name="tickets-index")
    assert said(200, headers).quotas == (Quota(699, 41.0, 700), endpoint)
    assert said(200, headers).binding == endpoint


# ---------------------------------------------------------------- what cannot be read


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"X-Shopify-Shop-Api-Call-Limit": "41/40"}, "x-shopify-shop-api-call-limit"),
        ({"x-ratelimit-reset-requests": "soon"}, "x-ratelimit-reset-requests"),
        ({"Sforce-Limit-Info": "api-usage=lots"}, "sforce-limit-info"),
        ({"zendesk-ratelimit-tickets-index": "total=100"}, "zendesk-ratelimit-tickets-index"),
        ({"X-HubSpot-RateLimit-Max": "-1"}, "x-hubspot-ratelimit-max"),
        ({"retry-after-ms": "1e3"}, "retry-after-ms"),
        ({"Retry-After": "soon"}, "retry-after"),
        ({"X-RateLimit-Reset-After": "-1"}, "x-ratelimit-reset-after"),
        ({"X-RateLimit-Remaining": "lots"}, "x-ratelimit-remaining"),
        ({"RateLimit": '"default";r=5.5'}, "ratelimit"),
    ],
)
def test_a_field_that_cannot_be_read_is_named_and_ignored(
    fields: dict[str, str], name: str
) -> None:
    heard = said(429, fields)
    assert heard.unreadable == (name,)
    assert heard.refused and heard.wait is None


def test_garbage_never_raises() -> None:
    rng = random.Random(25)
    alphabet = b'"\\;=,:/?*-.0123456789 \tTZmsh\xe9abcdefghijklmnopqrstuvwxyz'
    names = [
        "X-Shopify-Shop-Api-Call-Limit", "x-ratelimit-reset-requests", "x-ratelimit-limit-tokens",
        "Sforce-Limit-Info", "zendesk-ratelimit-x", "X-HubSpot-RateLimit-Daily", "retry-after-ms",
        "Retry-After", "X-RateLimit-Reset-After", "X-RateLimit-Reset", "X-RateLimit-Remaining",
        "x-ms-ratelimit-remaining-x", "RateLimit", "Date",
    ]  # fmt: skip
    for _ in range(2000):
        fields = {name: bytes(rng.choices(alphabet, k=rng.randrange(14))) for name in names}
        body = bytes(rng.choices(alphabet, k=rng.randrange(30)))
        heard = hear(rng.choice([200, 403, 429]), Headers(fields), body, now=SERVER_NOW)
        assert all(q.reset is None or q.reset >= 0 for q in heard.quotas)
        assert heard.wait is None or heard.wait > 0


# ---------------------------------------------------------------- what the feedback does


class Heard:
    """A Feedback on a memory bucket and a fake clock, its API answering with ``answer``."""

    def __init__(self, rates: list[Rate], max_pause: float = 900) -> None:
        self.clock = FakeClock(float(SERVER_NOW))
        self.crawler = get_crawler()
        assert self.crawler.stats is not None
        self.crawler.stats.open_spider()
        self.backend = MemoryBackend(rates, clock=self.clock, rand=lambda: 0.0)
        pauses = Pauses(self.crawler, self.backend, max_pause=max_pause, clock=self.clock)
        self.feedback = Feedback(
            self.crawler, self.backend, pauses, self.crawler.stats, max_retries=5, clock=self.clock
        )
        self.crawler.engine = SimpleNamespace(running=False)  # the crawl is not running
        self.heard: list[dict[str, Any]] = []
        self.crawler.signals.connect(self.told, signal=quota_heard)

    def told(self, **kwargs: Any) -> None:
        self.heard.append(kwargs)

    def answer(self, status: int, fields: dict[str, str], body: Any = None) -> Any:
        raw = b"" if body is None else json.dumps(body).encode()
        fields = {"Date": formatdate(self.clock.now, usegmt=True), **fields}
        response = Response("http://api/items/1", status=status, headers=fields, body=raw)
        request = Request("http://api/items/1", meta={"ratelimit_sent": self.clock.now})
        return asyncio.run(self.feedback.answered("api", request, response))

    def stat(self, key: str) -> Any:
        assert self.crawler.stats is not None
        return self.crawler.stats.get_value(key)

    def next_slot(self) -> float:
        """Seconds until the next send may go."""
        return asyncio.run(self.backend.run("api", TokenBucket.reserve)).delay


def test_spent_tokens_hold_requests_until_their_reset() -> None:
    heard = Heard([Rate(100, 1)])
    fields = {"x-ratelimit-remaining-requests": "50", "x-ratelimit-reset-requests": "1s"}
    heard.answer(
        200, {**fields, "x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "7.5s"}
    )
    assert heard.next_slot() == pytest.approx(7.5)


def test_a_secondary_limit_with_no_wait_pauses_a_minute() -> None:
    heard = Heard([Rate(100, 1)])
    fields = {"x-ratelimit-remaining": "4000", "x-ratelimit-resource": "core"}
    retry = heard.answer(403, fields, {"message": "You have exceeded a secondary rate limit."})
    assert isinstance(retry, Request)  # back to the queue, not a refused token
    assert heard.next_slot() == pytest.approx(60.0)


def test_a_window_announced_is_paced_by_and_a_daily_quota_told() -> None:
    heard = Heard([Rate(200, 10)])
    fields = {
        "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
        "X-HubSpot-RateLimit-Max": "100",
        "X-HubSpot-RateLimit-Remaining": "99",
        "X-HubSpot-RateLimit-Daily": "250000",
        "X-HubSpot-RateLimit-Daily-Remaining": "249999",
    }
    heard.answer(200, fields)
    assert heard.stat("ratelimit/current_rate") == pytest.approx(600.0)  # 100/10, not 200/10
    assert [(h["bucket"], h["quota"].name, h["quota"].remaining) for h in heard.heard] == [
        ("api", "daily", 249999)
    ]


def test_a_daily_quota_spent_without_a_reset_stops_the_crawl_for_a_day_at_most() -> None:
    heard = Heard([Rate(100, 1)])
    heard.answer(200, {"Sforce-Limit-Info": "api-usage=15000/15000"})
    assert heard.stat("ratelimit/resume_after") == "2023-11-15T22:13:20+00:00"


def test_an_unreadable_header_is_a_stat_not_an_error() -> None:
    heard = Heard([Rate(100, 1)])
    heard.answer(200, {"X-Shopify-Shop-Api-Call-Limit": "many"})
    heard.answer(200, {"X-Shopify-Shop-Api-Call-Limit": "many"})
    assert heard.stat("ratelimit/header_unreadable") == 2
    assert heard.stat("ratelimit/header_unreadable/x-shopify-shop-api-call-limit") == 2


def test_a_refusal_that_names_its_wait_is_not_held_to_the_quotas_later_reset() -> None:
    heard = Heard([Rate(100, 1)])
    fields = {"X-RateLimit-Limit": "10", "X-RateLimit-Remaining": "0", "Retry-After": "3"}
    heard.answer(429, {**fields, "X-RateLimit-Reset": "2023-11-14T22:15Z"})  # 100 s later
    assert heard.next_slot() == pytest.approx(3.0, abs=0.01)
