"""The mock's --dialect: each provider's quota headers, refusal status and body, on a fake clock,
then two of them over HTTP from the real server."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from mockapi.calls import Answer, Call
from mockapi.dialects import DISCORD_BUCKET, GITHUB_DOCS
from mockapi.flags import parse_args, settings_from
from mockapi.formats import ceil_ms, decimal, go_duration, iso_minute
from mockapi.limits import Limit, ceil_seconds, parse_limits
from mockapi.settings import Settings
from mockapi.state import MockState
from tests.support.clock import FakeClock
from tests.support.mockapi import MockAPI
from tests.support.mockapi import fetch as get

StartMock = Callable[..., MockAPI]
# What the content and the server add to every answer, whatever the dialect.
CONTENT_HEADERS = {"Date", "ETag", "Last-Modified"}
DEFAULT_BODY = {"error": "rate limit exceeded"}


def state_for(clock: FakeClock, dialect: str, limits: str, **settings: Any) -> MockState:
    return MockState(Settings(dialect=dialect, limits=parse_limits(limits), **settings), clock)


def ask(state: MockState, clock: FakeClock, at: float | None = None) -> Answer:
    if at is not None:
        clock.now = at
    return state.handle(Call.item("1"))


def said(answer: Answer) -> dict[str, str]:
    """The headers the dialect added: all but the content's own."""
    return {k: v for k, v in answer.headers.items() if k not in CONTENT_HEADERS}


def body(answer: Answer) -> Any:
    assert answer.content_type == "application/json"
    return json.loads(answer.body)


# How waits and times are written


def test_go_durations_decimal_seconds_and_iso_minutes() -> None:
    durations = {0: "0s", 20: "20ms", 999: "999ms", 1000: "1s", 1500: "1.5s", 59_999: "59.999s"}
    durations |= {360_000: "6m0s", 90_500: "1m30.5s", 3_600_000: "1h0m0s", 3_723_500: "1h2m3.5s"}
    assert {ms: go_duration(ms) for ms in durations} == durations
    assert [decimal(ms) for ms in (64_570, 1000, 0, 1_470_173_023_123)] == [
        "64.57", "1", "0", "1470173023.123",
    ]  # fmt: skip
    assert ceil_ms(64.5701) == 64_571
    assert ceil_ms(1.0 + 1e-12) == 1000  # float noise is not a millisecond more
    # 1700000000 is 2023-11-14T22:13:20Z; a time is rounded up to the next whole minute.
    assert iso_minute(1_700_000_000) == "2023-11-14T22:14Z"
    assert iso_minute(1_699_999_980) == "2023-11-14T22:13Z"


# GitHub


def test_github_primary_limit_403_with_remaining_0_and_an_epoch_reset() -> None:
    clock = FakeClock(1000.25)
    state = state_for(clock, "github", "2/3600", limit_status=403)
    first, second, refused = (ask(state, clock) for _ in range(3))
    window = {"x-ratelimit-limit": "2", "x-ratelimit-reset": "3600", "x-ratelimit-resource": "core"}
    assert (first.status, said(first)) == (
        200, {**window, "x-ratelimit-remaining": "1", "x-ratelimit-used": "1"},
    )  # fmt: skip
    spent = {**window, "x-ratelimit-remaining": "0", "x-ratelimit-used": "2"}
    assert (second.status, said(second)) == (200, spent)
    assert (refused.status, refused.reason, said(refused)) == (403, "limit", spent)
    assert body(refused) == {
        "message": "API rate limit exceeded for user ID 1.",
        "documentation_url": GITHUB_DOCS,
    }
    # Told to wait for x-ratelimit-reset: earlier is refused as early, then a new window.
    assert ask(state, clock, at=3599.5).reason == "early"
    fresh = ask(state, clock, at=3600.5)
    assert (fresh.status, fresh.headers["x-ratelimit-reset"]) == (200, "7200")
    assert fresh.headers["x-ratelimit-remaining"] == "1"


def test_github_secondary_limit_retry_after_or_none() -> None:
    clock = FakeClock(1000.25)
    state = state_for(clock, "github", "100/3600,1/60", limit_status=429)
    ask(state, clock)
    refused = ask(state, clock)
    secondary = "You have exceeded a secondary rate limit. Please wait a few minutes before you "
    assert (refused.status, body(refused)["message"]) == (429, secondary + "try again.")
    # The secondary limit is never announced: the primary one has 99 left (a refusal is free).
    assert said(refused) == {
        "x-ratelimit-limit": "100", "x-ratelimit-remaining": "99", "x-ratelimit-used": "1",
        "x-ratelimit-reset": "3600", "x-ratelimit-resource": "core", "retry-after": "20",
    }  # fmt: skip
    silent = state_for(clock, "github", "100/3600,1/60", limit_status=403, retry_after="none")
    ask(silent, clock)
    refused = ask(silent, clock)
    assert (refused.status, "retry-after" in refused.headers) == (403, False)
    assert ask(silent, clock, at=1001).reason == "limit"  # nothing named, nothing to be early for


# Shopify


def test_shopify_leaky_bucket_fill_and_fractional_retry_after() -> None:
    clock = FakeClock(1000.0)
    state = state_for(clock, "shopify", "2/1", algorithm="token", burst=40)
    answers = [ask(state, clock) for _ in range(41)]
    fills = [a.headers["X-Shopify-Shop-Api-Call-Limit"] for a in answers]
    assert fills[:3] == ["1/40", "2/40", "3/40"]
    assert fills[39:] == ["40/40", "40/40"]
    refused = answers[40]
    assert (refused.status, said(refused)) == (
        429, {"X-Shopify-Shop-Api-Call-Limit": "40/40", "Retry-After": "0.5"},
    )  # fmt: skip
    assert body(refused) == DEFAULT_BODY  # Shopify's 429 body is not documented: the mock's own
    assert ask(state, clock, at=1000.4).reason == "early"
    assert said(ask(state, clock, at=1000.5)) == {"X-Shopify-Shop-Api-Call-Limit": "40/40"}
    # Ten idle seconds leak 20 calls.
    assert said(ask(state, clock, at=1010.5)) == {"X-Shopify-Shop-Api-Call-Limit": "21/40"}


# Discord


def test_discord_route_bucket_headers_and_429_body() -> None:
    clock = FakeClock(1003.4567)
    state = state_for(clock, "discord", "2/10")
    first, _, refused = (ask(state, clock) for _ in range(3))
    bucket = {
        "X-RateLimit-Limit": "2", "X-RateLimit-Reset": "1010",
        "X-RateLimit-Reset-After": "6.544", "X-RateLimit-Bucket": DISCORD_BUCKET,
    }  # fmt: skip
    assert (first.status, said(first)) == (200, {**bucket, "X-RateLimit-Remaining": "1"})
    assert refused.status == 429
    assert said(refused) == {
        **bucket, "X-RateLimit-Remaining": "0", "Retry-After": "7", "X-RateLimit-Scope": "user",
    }  # fmt: skip
    assert "X-RateLimit-Global" not in refused.headers
    assert body(refused) == {
        "message": "You are being rate limited.", "retry_after": 6.544, "global": False,
    }  # fmt: skip
    assert ask(state, clock, at=1010.0).headers["X-RateLimit-Reset-After"] == "10"


def test_discord_global_limit_refusal_says_only_retry_after_and_global() -> None:
    clock = FakeClock(1000.75)
    state = state_for(clock, "discord", "5/10,2/1")  # the route's bucket, then the global one
    ask(state, clock)
    ask(state, clock)
    refused = ask(state, clock)
    assert (refused.status, said(refused)) == (
        429, {"Retry-After": "1", "X-RateLimit-Global": "true", "X-RateLimit-Scope": "global"},
    )  # fmt: skip
    assert body(refused) == {
        "message": "You are being rate limited.", "retry_after": 0.25, "global": True,
    }  # fmt: skip


# OpenAI


def test_openai_requests_and_tokens_headers_with_go_durations() -> None:
    clock = FakeClock(1000.25)
    state = state_for(clock, "openai", "2/60,5/360")  # windows end at 1020 and 1080
    first, _, refused = (ask(state, clock) for _ in range(3))
    assert said(first) == {
        "x-ratelimit-limit-requests": "2", "x-ratelimit-remaining-requests": "1",
        "x-ratelimit-reset-requests": "19.75s", "x-ratelimit-limit-tokens": "5",
        "x-ratelimit-remaining-tokens": "4", "x-ratelimit-reset-tokens": "1m19.75s",
    }  # fmt: skip
    assert refused.status == 429
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert "retry-after" not in {name.lower() for name in refused.headers}
    assert body(refused) == {
        "error": {
            "message": "Rate limit reached in organization org-mockapi on requests: Limit 2, "
            "Used 2, Requested 1. Please try again in 19.75s.",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
    tokens = state_for(clock, "openai", "10/60,1/60")
    ask(tokens, clock)
    assert body(ask(tokens, clock))["error"]["type"] == "tokens"


# Azure


def test_azure_remaining_reads_and_three_retry_after_headers() -> None:
    clock = FakeClock(1000.25)
    state = state_for(clock, "azure", "2/3600,5/3600")
    first, _, refused = (ask(state, clock) for _ in range(3))
    assert said(first) == {
        "x-ms-ratelimit-remaining-subscription-reads": "1",
        "x-ms-ratelimit-remaining-tenant-reads": "4",
    }
    assert (refused.status, said(refused)) == (
        429,
        {
            "x-ms-ratelimit-remaining-subscription-reads": "0",
            "x-ms-ratelimit-remaining-tenant-reads": "3",
            "Retry-After": "2600", "retry-after-ms": "2599750", "x-ms-retry-after-ms": "2599750",
        },
    )  # fmt: skip
    assert body(refused) == DEFAULT_BODY


# Reddit


def test_reddit_used_float_remaining_and_seconds_to_reset() -> None:
    clock = FakeClock(1000.25)
    state = state_for(clock, "reddit", "2/600")
    first, second, refused = (ask(state, clock) for _ in range(3))
    assert said(first) == {
        "X-Ratelimit-Used": "1", "X-Ratelimit-Remaining": "1.0", "X-Ratelimit-Reset": "200",
    }  # fmt: skip
    spent = {"X-Ratelimit-Used": "2", "X-Ratelimit-Remaining": "0.0", "X-Ratelimit-Reset": "200"}
    assert said(second) == spent
    assert (refused.status, said(refused), body(refused)) == (429, spent, DEFAULT_BODY)
    assert ask(state, clock, at=1100).reason == "early"  # before the reset it named
    assert said(ask(state, clock, at=1200.5))["X-Ratelimit-Remaining"] == "1.0"


# HubSpot


def test_hubspot_interval_and_daily_headers_and_the_policy_hit() -> None:
    clock = FakeClock(1000.25)
    state = state_for(clock, "hubspot", "2/10,3/86400")
    first, _, interval = (ask(state, clock) for _ in range(3))
    limits = {"X-HubSpot-RateLimit-Interval-Milliseconds": "10000", "X-HubSpot-RateLimit-Max": "2"}
    daily = {"X-HubSpot-RateLimit-Daily": "3"}
    assert said(first) == {
        **limits, **daily, "X-HubSpot-RateLimit-Remaining": "1",
        "X-HubSpot-RateLimit-Daily-Remaining": "2",
    }  # fmt: skip
    assert (interval.status, body(interval)["policyName"]) == (429, "TEN_SECONDLY_ROLLING")
    assert body(interval)["message"] == "You have reached your ten_secondly_rolling limit."
    assert ask(state, clock, at=1010.5).status == 200
    day_spent = ask(state, clock)
    assert said(day_spent) == {
        **limits, **daily, "X-HubSpot-RateLimit-Remaining": "1",
        "X-HubSpot-RateLimit-Daily-Remaining": "0",
    }  # fmt: skip
    error = body(day_spent)
    assert list(error) == [
        "status", "message", "errorType", "correlationId", "policyName", "requestId",
    ]  # fmt: skip
    assert (error["status"], error["errorType"]) == ("error", "RATE_LIMIT")
    assert (error["policyName"], error["message"]) == (
        "DAILY",
        "You have reached your daily limit.",
    )
    assert uuid.UUID(error["correlationId"]) != uuid.UUID(error["requestId"])
    assert "Retry-After" not in day_spent.headers
    # Without a daily limit, no daily headers.
    assert (
        "X-HubSpot-RateLimit-Daily" not in ask(state_for(clock, "hubspot", "100/10"), clock).headers
    )


# Salesforce


def test_salesforce_daily_api_usage_and_403_request_limit_exceeded() -> None:
    clock = FakeClock(1000.25)
    state = state_for(clock, "salesforce", "3/86400", algorithm="sliding")
    answers = [ask(state, clock) for _ in range(4)]
    assert [said(a) for a in answers] == [
        {"Sforce-Limit-Info": f"api-usage={n}/3"} for n in (1, 2, 3, 3)
    ]
    refused = answers[3]
    assert (refused.status, body(refused)) == (
        403, [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}],
    )  # fmt: skip
    assert "Retry-After" not in refused.headers
    # With a pacing limit first, the header is the last (daily) one's.
    paced = state_for(clock, "salesforce", "1/10,15000/86400", algorithm="sliding")
    assert said(ask(paced, clock)) == {"Sforce-Limit-Info": "api-usage=1/15000"}
    assert body(ask(paced, clock))[0]["message"] == "ConcurrentRequests Limit exceeded."


# Atlassian


def test_atlassian_near_limit_under_20_percent_and_iso_reset_on_429() -> None:
    clock = FakeClock(1_700_000_000.25)  # 2023-11-14T22:13:20.25Z
    state = state_for(clock, "atlassian", "10/10")
    answers = [ask(state, clock) for _ in range(11)]
    near = ["X-RateLimit-NearLimit" in a.headers for a in answers]
    assert near == [False] * 8 + [True] * 3  # remaining 1 and 0 are under 20% of 10
    assert said(answers[0]) == {"X-RateLimit-Limit": "10", "X-RateLimit-Remaining": "9"}
    refused = answers[10]
    assert (refused.status, said(refused)) == (
        429,
        {
            "X-RateLimit-Limit": "10", "X-RateLimit-Remaining": "0",
            "X-RateLimit-NearLimit": "true", "Retry-After": "10",
            "X-RateLimit-Reset": "2023-11-14T22:14Z", "RateLimit-Reason": "jira-burst-based",
        },
    )  # fmt: skip
    hourly = state_for(clock, "atlassian", "10/10,1/3600")
    ask(hourly, clock)
    assert ask(hourly, clock).headers["RateLimit-Reason"] == "jira-quota-global-based"


# Zendesk


def test_zendesk_account_and_endpoint_quota_headers_and_retry_after() -> None:
    clock = FakeClock(1000.25)
    state = state_for(clock, "zendesk", "2/60,100/60")
    first, _, refused = (ask(state, clock) for _ in range(3))
    assert said(first) == {
        "x-rate-limit": "2", "ratelimit-limit": "2", "x-rate-limit-remaining": "1",
        "ratelimit-remaining": "1", "ratelimit-reset": "20",
        "zendesk-ratelimit-tickets-index": "total=100; remaining=99; resets=20",
    }  # fmt: skip
    assert (refused.status, refused.headers["Retry-After"]) == (429, "20")
    assert refused.headers["ratelimit-remaining"] == "0"
    # Early: it named 1000.25 + 20 s, so 10.25 s are left.
    assert ask(state, clock, at=1010.0).headers["Retry-After"] == "11"
    assert (
        "zendesk-ratelimit-tickets-index"
        not in ask(state_for(clock, "zendesk", "5/60"), clock).headers
    )


# Every dialect


@pytest.mark.parametrize("dialect", ["github", "discord", "salesforce", "zendesk"])
def test_no_limit_of_its_own_announces_nothing_and_the_shared_cap_is_a_bare_429(
    dialect: str,
) -> None:
    clock = FakeClock(1000.5)
    state = state_for(clock, dialect, "none", shared_limits=[Limit(1, 60)])
    allowed, refused = ask(state, clock), ask(state, clock)
    assert (allowed.status, said(allowed)) == (200, {})
    assert (refused.status, said(refused)) == (
        429,
        {"Retry-After": "20"},
    )  # the window ends at 1020


def test_without_a_dialect_answers_are_unchanged() -> None:
    clock = FakeClock(1000.25)
    state = state_for(clock, "none", "1/60", headers="x-ratelimit")
    ask(state, clock)
    refused = ask(state, clock)
    assert (refused.status, refused.headers["Retry-After"], body(refused)) == (
        429,
        "20",
        DEFAULT_BODY,
    )
    assert refused.headers["X-RateLimit-Remaining"] == "0"


# Flags


@pytest.mark.parametrize(
    "argv",
    [
        ["--dialect", "discord", "--headers", "both"],
        ["--dialect", "github", "--headers", "x-ratelimit"],
        ["--dialect", "zendesk", "--limit-status", "429"],
        ["--dialect", "reddit", "--retry-after", "none"],
        ["--dialect", "github", "--retry-after", "http-date"],
        ["--dialect", "atlassian", "--reset-format", "epoch"],
        ["--dialect", "azure", "--retry-after-value", "5"],
        ["--dialect", "twitter"],
    ],
)
def test_flags_a_dialect_decides_are_argparse_errors(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2
    assert argv[-2] in capsys.readouterr().err


def test_dialect_flag_defaults_and_githubs_own_choices() -> None:
    assert (settings_from(parse_args([])).dialect, settings_from(parse_args([])).limit_status) == (
        "none", 429,
    )  # fmt: skip
    assert settings_from(parse_args(["--limit-status", "403"])).limit_status == 403
    github = settings_from(parse_args(["--dialect", "github"]))
    assert (github.dialect, github.limit_status) == ("github", 403)
    argv = ["--dialect", "github", "--limit-status", "429", "--retry-after", "none"]
    assert settings_from(parse_args(argv)).limit_status == 429
    assert settings_from(parse_args(["--dialect", "shopify"])).limit_status == 429
    with pytest.raises(ValueError, match="dialect"):
        Settings(dialect="twitter")


# The real server


def test_github_dialect_over_http(mockapi: StartMock) -> None:
    # A sliding log: no window boundary can fall between the requests.
    api = mockapi("--dialect", "github", "--limit", "2/3600", "--algorithm", "sliding")
    answers = [get(api.url(i)) for i in range(3)]
    record = api.requests()
    assert [status for status, _, _ in answers] == [200, 200, 403]
    assert [e["status"] for e in record] == [200, 200, 403]
    assert [h["x-ratelimit-remaining"] for _, h, _ in answers] == ["1", "0", "0"]
    assert [h["x-ratelimit-used"] for _, h, _ in answers] == ["1", "2", "2"]
    assert {h["x-ratelimit-limit"] for _, h, _ in answers} == {"2"}
    assert {h["x-ratelimit-resource"] for _, h, _ in answers} == {"core"}
    # The oldest arrival still counted leaves the log an hour after it arrived.
    oldest = [record[0]["t"], record[0]["t"], record[1]["t"]]
    resets = [int(h["x-ratelimit-reset"]) for _, h, _ in answers]
    assert resets == [ceil_seconds(t + 3600) for t in oldest]
    _, headers, raw = answers[2]
    assert headers["Retry-After"] is None
    assert json.loads(raw)["message"] == "API rate limit exceeded for user ID 1."


def test_discord_dialect_over_http(mockapi: StartMock) -> None:
    api = mockapi("--dialect", "discord", "--limit", "2/60", "--algorithm", "sliding")
    answers = [get(api.url(i)) for i in range(3)]
    assert [status for status, _, _ in answers] == [200, 200, 429]
    assert [h["X-RateLimit-Remaining"] for _, h, _ in answers] == ["1", "0", "0"]
    assert {h["X-RateLimit-Bucket"] for _, h, _ in answers} == {DISCORD_BUCKET}
    assert answers[0][1]["X-RateLimit-Scope"] is None
    _, headers, raw = answers[2]
    assert headers.get_content_type() == "application/json"
    refusal = json.loads(raw)
    assert (refusal["message"], refusal["global"]) == ("You are being rate limited.", False)
    assert (headers["X-RateLimit-Scope"], headers["X-RateLimit-Global"]) == ("user", None)
    retry_after = refusal["retry_after"]
    assert 0 < retry_after <= 60
    assert headers["X-RateLimit-Reset-After"] == decimal(ceil_ms(retry_after))
    assert int(headers["Retry-After"]) == math.ceil(retry_after)
    refused_at = api.requests()[2]["t"]
    assert float(headers["X-RateLimit-Reset"]) == pytest.approx(refused_at + retry_after, abs=0.002)
