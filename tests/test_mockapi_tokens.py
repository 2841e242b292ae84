"""The mock API's tokens, each with its own quota, their shared cap, and fixed Retry-After."""

from __future__ import annotations

import email.utils
import hashlib
import json
import urllib.error
from collections.abc import Callable

import pytest

from mockapi.calls import Call
from mockapi.limits import Limit
from mockapi.settings import Settings
from mockapi.state import MockState
from tests.support.clock import FakeClock
from tests.support.mockapi import MockAPI
from tests.support.mockapi import fetch as get

StartMock = Callable[..., MockAPI]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def statuses_as(api: MockAPI, token: str, n: int) -> list[int]:
    return [get(api.url(i), bearer(token))[0] for i in range(n)]


def fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:8]


def test_each_token_has_its_own_quota_and_headers(mockapi: StartMock) -> None:
    api = mockapi(
        "--tokens", "alpha,beta", "--token", "gamma", "--limit", "2/60",
        "--token-limit", "beta=3/60", "--headers", "x-ratelimit", "--algorithm", "sliding",
    )  # fmt: skip
    assert statuses_as(api, "alpha", 3) == [200, 200, 429]
    # alpha is blocked by its Retry-After; beta and gamma are not.
    status, headers, _ = get(api.url(1), bearer("beta"))
    assert (status, headers["X-RateLimit-Limit"], headers["X-RateLimit-Remaining"]) == (
        200,
        "3",
        "2",
    )
    assert statuses_as(api, "beta", 3) == [200, 200, 429]
    assert statuses_as(api, "gamma", 3) == [200, 200, 429]
    assert get(api.url(1), bearer("alpha"))[0] == 429
    record = api.requests()
    by_token = [(e["token"], e["reason"]) for e in record]
    a, b, g = fingerprint("alpha"), fingerprint("beta"), fingerprint("gamma")
    assert by_token == [
        (a, "ok"), (a, "ok"), (a, "limit"), (b, "ok"), (b, "ok"), (b, "ok"), (b, "limit"),
        (g, "ok"), (g, "ok"), (g, "limit"), (a, "early"),
    ]  # fmt: skip


def test_a_missing_or_unknown_token_is_a_401(mockapi: StartMock) -> None:
    api = mockapi("--tokens", "alpha,beta", "--limit", "1/60")
    for headers in [{}, bearer("gamma"), {"Authorization": "Basic YWxwaGE6"}, bearer("")]:
        status, answer_headers, body = get(api.url(1), headers)
        assert (status, answer_headers["WWW-Authenticate"]) == (401, "Bearer")
        assert json.loads(body) == {"error": "unauthorized"}
    # A 401 takes nothing from any quota.
    assert get(api.url(1), {"Authorization": "bearer alpha"})[0] == 200
    record = api.requests()
    assert [(e["auth"], e["token"]) for e in record] == [
        (False, None), (False, fingerprint("gamma")), (False, None), (False, None),
        (True, fingerprint("alpha")),
    ]  # fmt: skip


def test_a_revoked_token_gets_401_and_the_others_carry_on(mockapi: StartMock) -> None:
    api = mockapi("--tokens", "alpha,beta", "--limit", "none")
    assert get(api.url(1), bearer("beta"))[0] == 200
    api.revoke("beta")
    assert get(api.url(2), bearer("beta"))[0] == 401
    assert get(api.url(3), bearer("alpha"))[0] == 200
    with pytest.raises(urllib.error.HTTPError, match="400"):
        api.revoke("delta")
    api.reset()  # back to the start: beta is valid again
    assert get(api.url(4), bearer("beta"))[0] == 200


def test_the_shared_limit_caps_every_token_together(mockapi: StartMock) -> None:
    api = mockapi(
        "--tokens", "alpha,beta", "--limit", "2/60", "--shared-limit", "3/60",
        "--headers", "ietf",
    )  # fmt: skip
    answers = [get(api.url(1), bearer(t)) for t in ["alpha", "alpha", "beta", "beta"]]
    assert [status for status, _, _ in answers] == [200, 200, 200, 429]
    assert int(answers[3][1]["Retry-After"]) >= 1
    # The headers tell each token its own quota, not the shared cap.
    assert answers[2][1]["RateLimit"].startswith('"default";r=1;')
    assert [e["reason"] for e in api.requests()] == ["ok", "ok", "ok", "limit"]


def test_the_shared_limit_applies_without_tokens_too() -> None:
    clock = FakeClock()
    state = MockState(Settings(limits=[Limit(10, 60)], shared_limits=[Limit(2, 60)]), clock)
    assert [state.handle(Call.item("1")).status for _ in range(3)] == [200, 200, 429]


def test_tokens_appear_in_the_record_and_logs_as_fingerprints_only(mockapi: StartMock) -> None:
    secrets = ["s3cret-one", "s3cret-two"]
    api = mockapi("--tokens", ",".join(secrets), "--limit", "none", "--access-log")
    for secret in [*secrets, "wrong-s3cret"]:
        get(api.url(1), bearer(secret))
    api.revoke(secrets[1])
    record = api.requests()
    assert [e["token"] for e in record] == [
        "2ed45968", "93cf9e8e", fingerprint("wrong-s3cret"),
    ]  # fmt: skip
    api.stop()
    assert "GET /items/1" in api.stderr()
    assert "s3cret" not in api.stderr() + json.dumps(record)


def test_a_fixed_retry_after_value_is_named_and_enforced() -> None:
    clock = FakeClock(1000.0)
    state = MockState(Settings(limits=[Limit(1, 60)], retry_after_value=5), clock)
    answers = []
    for t in [1000.0, 1001.0, 1003.0, 1008.5, 1020.0]:
        clock.now = t
        answers.append(state.handle(Call.item("1")))
    assert [(a.reason, a.headers.get("Retry-After")) for a in answers] == [
        ("ok", None),
        ("limit", "5"),  # although the window frees up at 1020
        ("early", "5"),  # before 1006: refused, and told 5 s again
        ("limit", "5"),  # after 1008, but the window is still full
        ("ok", None),
    ]
    dates = MockState(
        Settings(limits=[Limit(1, 60)], retry_after_value=0, retry_after="http-date"), clock
    )
    dates.handle(Call.item("1"))
    clock.now = 1020.25
    retry_at = dates.handle(Call.item("1")).headers["Retry-After"]
    assert retry_at == email.utils.formatdate(1021, usegmt=True)  # now, rounded up


def test_a_fixed_retry_after_value_over_http(mockapi: StartMock) -> None:
    api = mockapi("--limit", "1/3600", "--retry-after-value", "7", "--no-enforce-retry-after")
    answers = [get(api.url(1)) for _ in range(3)]
    assert [(status, headers["Retry-After"]) for status, headers, _ in answers] == [
        (200, None),
        (429, "7"),
        (429, "7"),
    ]
