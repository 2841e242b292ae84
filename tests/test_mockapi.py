"""The mock API: its window algorithms on a fake clock, then the real server over HTTP."""

from __future__ import annotations

import email.utils
import json
import math
import time
import urllib.error
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import jsonschema
import pytest

from mockapi.calls import Answer, Call
from mockapi.flags import parse_args, settings_from
from mockapi.limits import Limit, RateLimiter, parse_limits
from mockapi.settings import IdSet, Settings, parse_id_list
from mockapi.state import Injection, MockState
from tests.support.clock import FakeClock
from tests.support.mockapi import (
    REPO_ROOT,
    MockAPI,
    ids_requested_more_than_once,
    span,
    statuses,
)
from tests.support.mockapi import fetch as get

StartMock = Callable[..., MockAPI]
SCHEMA_PATH = REPO_ROOT / "mockapi" / "item.schema.json"


def allowed_at(limiter: RateLimiter, clock: FakeClock, times: Iterable[float]) -> list[bool]:
    result = []
    for t in times:
        clock.now = t
        result.append(limiter.hit() == 0.0)
    return result


def ask(state: MockState, item_id: object = 1) -> Answer:
    return state.handle(Call.item(str(item_id)))


def answers_at(state: MockState, clock: FakeClock, times: Iterable[float]) -> list[str]:
    """The record's reasons, after one more request at each time."""
    for t in times:
        clock.now = t
        ask(state)
    return [entry["reason"] for entry in state.record]


def state_for(clock: FakeClock, **settings: Any) -> MockState:
    return MockState(Settings(**settings), clock=clock)


# Window algorithms


def test_token_bucket_with_burst_1_paces_requests() -> None:
    clock = FakeClock()
    limiter = RateLimiter([Limit(10, 1)], "token", burst=1, clock=clock)
    times = [1000, 1000.05, 1000.1, 1000.15, 1000.2, 1000.3]
    assert allowed_at(limiter, clock, times) == [True, False, True, False, True, True]


def test_token_bucket_rejections_take_no_tokens() -> None:
    clock = FakeClock()
    limiter = RateLimiter([Limit(10, 1)], "token", clock=clock)
    times = [1000, 1000.02, 1000.04, 1000.06, 1000.1]
    assert allowed_at(limiter, clock, times) == [True, False, False, False, True]


def test_token_bucket_burst_goes_at_once_then_refills_at_the_rate() -> None:
    clock = FakeClock()
    limiter = RateLimiter([Limit(1, 1)], "token", burst=3, clock=clock)
    assert allowed_at(limiter, clock, [1000] * 4) == [True, True, True, False]
    assert limiter.hit() == pytest.approx(1.0)
    assert allowed_at(limiter, clock, [1001, 1001, 1005]) == [True, False, True]


def test_sliding_log_counts_rejected_requests() -> None:
    clock = FakeClock()
    limiter = RateLimiter([Limit(2, 10)], "sliding", clock=clock)
    # At 1010.5 only one allowed request is within 10 s, but the rejected one at 1002 counts.
    assert allowed_at(limiter, clock, [1000, 1001, 1002, 1010.5]) == [True, True, False, False]
    assert limiter.wait() == pytest.approx(1.5)  # until 1002 leaves the window
    assert allowed_at(limiter, clock, [1012.0]) == [True]


def test_a_fixed_window_from_the_first_request_resets_a_period_after_it() -> None:
    clock = FakeClock()
    limiter = RateLimiter([Limit(3, 10)], "fixed-first", clock=clock)
    times = [1005.0, 1005.1, 1005.2, 1005.3, 1014.9, 1015.0, 1015.1]
    assert allowed_at(limiter, clock, times) == [True, True, True, False, False, True, True]
    assert limiter.wait() == 0.0 and limiter.quota(1016.0).reset_in == pytest.approx(9.0)


def test_a_sliding_log_of_accepted_requests_lets_refusals_go_free() -> None:
    clock = FakeClock()
    limiter = RateLimiter([Limit(2, 10)], "sliding-accepted", clock=clock)
    # Unlike a sliding log that counts them, the refusal at 1002 does not hold 1010.5 back.
    assert allowed_at(limiter, clock, [1000, 1001, 1002, 1010.5]) == [True, True, False, True]


def test_haproxys_window_counter_weighs_the_previous_period_by_what_is_left_of_it() -> None:
    clock = FakeClock()
    limiter = RateLimiter([Limit(10, 10)], "counter", clock=clock)
    burst = [1000.0 + i / 10 for i in range(10)]
    assert allowed_at(limiter, clock, burst) == [True] * 10  # the first period, from 1000
    # 1010: a new period, the last one's 10 weigh in whole; the refusal counts too.
    # 1012: 2 + 10 x 0.8 = 10 at most: let through; 1012.1: 3 + 7 = 10; 1012.2: 4 + 7 > 10.
    times = [1010.0, 1012.0, 1012.1, 1012.2]
    assert allowed_at(limiter, clock, times) == [False, True, True, False]
    # With 4 counted in this period (a refusal among them), the next is let through once
    # the last period's weight is 5 at most: under 6 s of it left, from 1014 on.
    assert limiter.wait(1012.2) == pytest.approx(1.8 + 0.001)


@pytest.mark.parametrize(
    ("burst", "times", "expected"),
    [
        (0, [1000, 1000.05, 1000.1, 1000.15, 1000.2], [True, False, True, False, True]),
        (2, [1000, 1000.01, 1000.02, 1000.03, 1000.13], [True, True, True, False, True]),
    ],
)
def test_nginx_limit_req_leaks_its_excess_on_a_millisecond_clock(
    burst: int, times: list[float], expected: list[bool]
) -> None:
    clock = FakeClock()
    limiter = RateLimiter([Limit(10, 1)], "nginx", burst=burst, clock=clock)
    assert allowed_at(limiter, clock, times) == expected


def test_nginx_limit_req_without_nodelay_holds_what_the_burst_let_through() -> None:
    clock = FakeClock()
    limiter = RateLimiter([Limit(10, 1)], "nginx", burst=2, clock=clock, nodelay=False)
    assert allowed_at(limiter, clock, [1000, 1000.01, 1000.02]) == [True, True, True]
    # Its excess: 0.9 after 1000.01, then 0.9 - 0.1 + 1 = 1.8 requests, at 10 a second.
    assert limiter.delay() == pytest.approx(0.18)


def test_fixed_window_resets_at_the_epoch_aligned_boundary() -> None:
    clock = FakeClock()
    limiter = RateLimiter([Limit(2, 10)], "fixed", clock=clock)
    times = [1003, 1004, 1009.99, 1010, 1010.5, 1011]
    assert allowed_at(limiter, clock, times) == [True, True, False, True, True, False]
    assert limiter.hit() == pytest.approx(9.0)


def test_several_limits_all_apply_and_a_rejection_uses_none() -> None:
    clock = FakeClock()
    limiter = RateLimiter(parse_limits("2/1,3/10"), "fixed", clock=clock)
    # 1000.2 is refused by 2/1; had it used 3/10, 1001.0 would be refused too.
    times = [1000.0, 1000.1, 1000.2, 1001.0, 1001.5]
    assert allowed_at(limiter, clock, times) == [True, True, False, True, False]
    assert limiter.hit() == pytest.approx(8.5)  # 3/10 frees up at 1010


def test_no_limits_allow_everything_and_announce_nothing() -> None:
    clock = FakeClock()
    limiter = RateLimiter(parse_limits("none"), "sliding", clock=clock)
    assert all(allowed_at(limiter, clock, [1000] * 1000))
    assert limiter.quota() is None


@pytest.mark.parametrize("algorithm", ["sliding", "token"])
def test_requests_paced_exactly_at_the_rate_are_allowed_despite_float_noise(algorithm: str) -> None:
    clock = FakeClock(0.0)
    limiter = RateLimiter([Limit(3, 0.9)], algorithm, clock=clock)
    assert all(allowed_at(limiter, clock, [i * 0.3 for i in range(1, 200)]))


# Retry-After, enforcement and headers (the state on a fake clock)


def test_retry_after_seconds_is_the_ceiling_of_the_wait() -> None:
    clock = FakeClock(1000.25)
    state = state_for(clock, limits=[Limit(2, 60)])
    answers = [ask(state, 1) for _ in range(3)]
    assert [a.status for a in answers] == [200, 200, 429]
    assert "Retry-After" not in answers[0].headers
    assert answers[2].headers["Retry-After"] == "20"  # the window ends at 1020


def test_retry_after_seconds_is_at_least_1() -> None:
    clock = FakeClock(1000.0)
    state = state_for(clock, limits=[Limit(10, 1)], algorithm="token")
    assert answers_at(state, clock, [1000.0, 1000.05]) == ["ok", "limit"]
    assert ask(state, 1).headers["Retry-After"] == "1"  # 0.05 s, rounded up


def test_retry_after_http_date_names_the_unlock_second_and_date_says_now() -> None:
    clock = FakeClock(1000.25)
    state = state_for(clock, limits=[Limit(1, 60)], retry_after="http-date", limit_status=403)
    ask(state, 1)
    clock.now = 1010.75
    answer = ask(state, 2)
    assert answer.status == 403
    assert answer.headers["Retry-After"] == email.utils.formatdate(1020, usegmt=True)
    assert answer.headers["Date"] == email.utils.formatdate(1010, usegmt=True)


def test_retry_after_none_sends_no_header() -> None:
    clock = FakeClock()
    state = state_for(clock, limits=[Limit(1, 60)], retry_after="none")
    answers = [ask(state, 1) for _ in range(3)]
    assert [a.reason for a in answers] == ["ok", "limit", "limit"]  # nothing named: no block
    assert "Retry-After" not in answers[1].headers


def test_requests_before_the_named_time_are_refused_only_when_enforcing() -> None:
    clock = FakeClock()
    strict = state_for(clock, limits=[Limit(2, 60)])
    assert answers_at(strict, clock, [1000.25, 1000.5, 1001]) == ["ok", "ok", "limit"]
    assert strict.record[2]["status"] == 429
    # That 429 said "Retry-After: 19": come back at 1020.0 at the earliest.
    assert answers_at(strict, clock, [1020.1, 1020.3])[3:] == ["ok", "ok"]
    early = state_for(clock, limits=[Limit(2, 60)])
    times = [1000.25, 1000.5, 1001, 1019.9]
    assert answers_at(early, clock, times) == ["ok", "ok", "limit", "early"]
    lax = state_for(clock, limits=[Limit(2, 60)], enforce_retry_after=False)
    assert answers_at(lax, clock, times) == ["ok", "ok", "limit", "limit"]


def test_early_requests_count_in_the_sliding_log() -> None:
    clock = FakeClock()
    state = state_for(clock, limits=[Limit(1, 10)], algorithm="sliding")
    assert answers_at(state, clock, [1000, 1001, 1005]) == ["ok", "limit", "early"]
    # The 429 at 1001 blocked until 1011; the early arrival at 1005 keeps the log full to 1015.
    assert ask(state, 1).headers["Retry-After"] == "10"


@pytest.mark.parametrize(
    ("reset_format", "reset"), [("delta", "20"), ("epoch", "1020")], ids=["delta", "epoch"]
)
def test_x_ratelimit_headers(reset_format: str, reset: str) -> None:
    clock = FakeClock(1000.25)
    state = state_for(
        clock, limits=[Limit(5, 60)], headers="x-ratelimit", reset_format=reset_format
    )
    headers = ask(state, 1).headers
    assert headers["X-RateLimit-Limit"] == "5"
    assert headers["X-RateLimit-Remaining"] == "4"
    assert headers["X-RateLimit-Reset"] == reset
    assert "RateLimit" not in headers


def test_ietf_headers_on_allowed_and_refused_answers() -> None:
    clock = FakeClock(1000.25)
    state = state_for(clock, limits=[Limit(1, 60)], headers="ietf")
    first, second = ask(state, 1), ask(state, 2)
    assert (first.status, second.status) == (200, 429)
    for answer in (first, second):
        assert answer.headers["RateLimit-Policy"] == '"default";q=1;w=60'
        assert answer.headers["RateLimit"] == '"default";r=0;t=20'
        assert "X-RateLimit-Limit" not in answer.headers


def test_headers_announce_the_most_restrictive_limit() -> None:
    clock = FakeClock(1000.0)
    state = state_for(clock, limits=parse_limits("100/60,10/1"), headers="both")
    headers = ask(state, 1).headers
    assert headers["X-RateLimit-Limit"] == "10"
    assert headers["RateLimit"] == '"default";r=9;t=1'
    # Equal remaining: the lower rate (5 per minute) is the tighter one.
    tie = state_for(clock, limits=parse_limits("5/1,5/60"), headers="both")
    assert ask(tie, 1).headers["RateLimit-Policy"] == '"default";q=5;w=60'


def test_token_bucket_headers_count_whole_tokens() -> None:
    clock = FakeClock(1000.0)
    state = state_for(clock, limits=[Limit(10, 1)], algorithm="token", burst=5, headers="both")
    ask(state, 1)
    headers = ask(state, 2).headers
    assert headers["X-RateLimit-Remaining"] == "3"
    assert headers["X-RateLimit-Reset"] == "1"  # a token every 0.1 s, rounded up
    clock.now = 1000.45
    assert ask(state, 3).headers["RateLimit"] == '"default";r=4;t=1'


def test_injections_wait_their_turn_then_answer_count_requests() -> None:
    state = state_for(FakeClock(), limits=[], enforce_retry_after=False)
    state.injections.append(Injection(503, count=2, after=1, retry_after=3))
    answers = [ask(state, i) for i in range(4)]
    assert [a.status for a in answers] == [200, 503, 503, 200]
    assert [a.reason for a in answers] == ["ok", "injected", "injected", "ok"]
    assert answers[1].headers["Retry-After"] == "3"
    state.injections.append(Injection(429, retry_after=1.5, retry_after_format="http-date"))
    retry_at = ask(state, 9).headers["Retry-After"]
    assert retry_at == email.utils.formatdate(1002, usegmt=True)  # 1000 + 1.5, rounded up
    with pytest.raises(ValueError, match="count"):
        Injection(429, count=0)


def test_error_rate_is_deterministic_for_a_seed() -> None:
    def run(seed: int) -> list[int]:
        clock, lax = FakeClock(), {"enforce_retry_after": False}
        state = state_for(clock, limits=[], error_rate=0.3, seed=seed, error_retry_after=7, **lax)
        answers = [ask(state, i) for i in range(200)]
        assert all(a.headers["Retry-After"] == "7" for a in answers if a.status == 503)
        return [a.status for a in answers]

    assert run(1) == run(1) != run(2)
    assert 30 < Counter(run(1))[200] < 170 < len(run(1))
    assert set(run(1)) == {200, 500, 503}
    clock = FakeClock()
    strict = state_for(clock, limits=[], error_rate=1, error_statuses=(503,), error_retry_after=7)
    assert answers_at(strict, clock, [1000, 1006.9, 1008]) == ["error", "early", "error"]


def test_id_sets_and_limits_parse_or_name_the_bad_value() -> None:
    ids = IdSet("5,17-20,abc")
    candidates = ["4", "5", "16", "17", "20", "21", "abc", "018"]
    assert [i for i in candidates if i in ids] == ["5", "17", "20", "abc", "018"]
    assert parse_limits("100/60, 5000/3600") == [Limit(100, 60), Limit(5000, 3600)]
    for bad in ["100", "0/60", "100/0", "x/60", "100/-5", "100/60,"]:
        with pytest.raises(ValueError, match="100/60"):
            parse_limits(bad)
    with pytest.raises(ValueError, match="9-3"):
        IdSet("9-3")
    assert parse_id_list("5, 17-19,abc") == ("5", "17", "18", "19", "abc")


@pytest.mark.parametrize(
    "argv",
    [
        ["--limit", "100/0"],
        ["--algorithm", "leaky"],
        ["--limit-status", "500"],
        ["--retry-after", "soon"],
        ["--error-rate", "2"],
        ["--not-found", "9-3"],
        ["--port", "-1"],
        ["--burst", "0"],
        ["--error-statuses", "500,x"],
        ["--retry-after-value", "-1"],
        ["--retry-after-value", "5", "--retry-after", "none"],
        ["--tokens", "a,,b"],
        ["--token-limit", "a=10/60"],
        ["--token-limit", "10/60", "--token", "a"],
        ["--shared-limit", "10"],
        ["--max-batch", "0"],
        ["--max-url", "0"],
        ["--extra-ids", "5-1"],
        ["--pagination", "scroll"],
        ["--max-per-page", "0"],
        ["--change-rate", "-1"],
    ],
)
def test_bad_flag_values_are_argparse_errors(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2
    assert argv[0] in capsys.readouterr().err


def test_defaults() -> None:
    args = parse_args([])
    assert (args.host, args.port, args.access_log) == ("127.0.0.1", 8700, False)
    settings = settings_from(args)
    assert settings.limits == [Limit(100, 60)]
    assert (settings.algorithm, settings.limit_status, settings.retry_after) == (
        "fixed",
        429,
        "seconds",
    )
    assert (settings.headers, settings.enforce_retry_after, settings.payload_bytes) == (
        "none",
        True,
        300,
    )
    assert (settings.tokens, settings.token_limits, settings.shared_limits) == ([], {}, [])
    assert (settings.max_batch, settings.max_url, settings.batch_items) == (None, None, "items")
    assert (settings.catalog, settings.pagination, settings.max_per_page) == (1000, "page", 100)
    assert (settings.retry_after_value, settings.change_rate, settings.count_304) == (
        None,
        0.0,
        True,
    )


def test_tokens_from_every_flag_and_their_limits() -> None:
    args = parse_args(
        ["--token", "a", "--tokens", "b,c=", "--token", "a", "--token-limit", "c==10/1,20/60"]
    )
    settings = settings_from(args)
    assert settings.tokens == ["a", "b", "c="]
    assert settings.token_limits == {"c=": [Limit(10, 1), Limit(20, 60)]}
    assert "c=" not in repr(settings)  # tokens stay out of reprs, and so out of logs


def test_a_flag_error_names_a_token_by_fingerprint_only(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--token", "a", "--token-limit", "s3cret=10/60"])
    err = capsys.readouterr().err
    assert "s3cret" not in err
    assert "1ec1c26b" in err  # sha256("s3cret")[:8]


def test_record_helpers() -> None:
    entries = [
        {"t": 10.0, "status": 200, "id": "1"},
        {"t": 11.5, "status": 429, "id": "2"},
        {"t": 12.5, "status": 200, "id": "2"},
    ]
    assert span(entries) == 2.5
    assert span(entries[:1]) == span([]) == 0.0
    assert statuses(entries) == Counter({200: 2, 429: 1})
    assert ids_requested_more_than_once(entries) == {"2"}


# The real server


def test_items_satisfy_the_bundled_schema_and_failure_ids_fail(mockapi: StartMock) -> None:
    api = mockapi(
        "--limit", "none", "--not-found", "5", "--gone", "6", "--invalid", "7-8",
        "--not-json", "9", "--payload-bytes", "500",
    )  # fmt: skip
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))
    status, headers, body = get(api.url(1))
    assert (status, headers.get_content_type()) == (200, "application/json")
    item = json.loads(body)
    validator.validate(item)
    assert (item["id"], item["name"], abs(len(body) - 500) <= 10) == (1, "Item 1", True)
    assert json.loads(get(api.url("abc"))[2])["id"] == "abc"
    assert get(api.url(1))[2] == body  # deterministic
    assert get(api.url(5))[0] == 404
    assert get(api.url(6))[0] == 410
    status, headers, body = get(api.url(8))
    assert (status, headers.get_content_type()) == (200, "application/json")
    assert not validator.is_valid(json.loads(body))
    status, headers, body = get(api.url(9))
    assert (status, headers.get_content_type()) == (200, "text/html")
    with pytest.raises(json.JSONDecodeError):
        json.loads(body)
    reasons = [(e["id"], e["status"], e["reason"]) for e in api.requests()]
    assert reasons == [
        ("1", 200, "ok"), ("abc", 200, "ok"), ("1", 200, "ok"), ("5", 404, "not_found"),
        ("6", 410, "gone"), ("8", 200, "invalid"), ("9", 200, "not_json"),
    ]  # fmt: skip


def test_rate_limited_answers_after_the_limit_is_hit(mockapi: StartMock) -> None:
    api = mockapi("--limit", "2/60", "--algorithm", "sliding", "--headers", "x-ratelimit")
    answers = [get(api.url(i)) for i in range(4)]
    assert [status for status, _, _ in answers] == [200, 200, 429, 429]
    assert [h["X-RateLimit-Remaining"] for _, h, _ in answers] == ["1", "0", "0", "0"]
    assert answers[0][1]["Retry-After"] is None
    assert 58 <= int(answers[2][1]["Retry-After"]) <= 60
    assert [e["reason"] for e in api.requests()] == ["ok", "ok", "limit", "early"]
    # Refused whatever the id.
    assert get(api.url(99))[0] == 429


def test_http_date_retry_after_agrees_with_the_date_header(mockapi: StartMock) -> None:
    api = mockapi("--limit", "1/60", "--algorithm", "sliding", "--retry-after", "http-date")
    get(api.url(1))
    status, headers, _ = get(api.url(2))
    first, second = api.requests()
    assert status == 429
    retry_at = email.utils.parsedate_to_datetime(headers["Retry-After"]).timestamp()
    date = email.utils.parsedate_to_datetime(headers["Date"]).timestamp()
    assert retry_at == math.ceil(first["t"] + 60)
    assert date == math.floor(second["t"])
    assert 60 <= retry_at - date <= 61


def test_injected_answers_and_their_retry_after(mockapi: StartMock) -> None:
    api = mockapi("--limit", "none")
    api.inject(status=429, retry_after=1)
    first, second = get(api.url(1)), get(api.url(1))
    assert (first[0], first[1]["Retry-After"], second[0]) == (429, "1", 429)
    # The early answer named its own time, one second after it.
    time.sleep(max(0.0, api.requests()[1]["t"] + 1.05 - time.time()))
    assert get(api.url(1))[0] == 200
    api.inject(status=503, count=2, after=1)
    assert [get(api.url(i))[0] for i in range(2, 6)] == [200, 503, 503, 200]
    assert [e["reason"] for e in api.requests()] == [
        "injected", "early", "ok", "ok", "injected", "injected", "ok",
    ]  # fmt: skip
    with pytest.raises(urllib.error.HTTPError, match="400"):
        api.inject(status=429, after=-1)


def test_a_token_is_required_and_never_recorded_or_logged(mockapi: StartMock) -> None:
    secret = "s3cret-t0ken"
    api = mockapi("--limit", "none", "--token", secret, "--access-log")
    assert get(api.url(1))[0] == 401
    assert get(api.url(1), {"Authorization": "Bearer wrong"})[0] == 401
    assert get(api.url(1), {"Authorization": f"Bearer {secret}"})[0] == 200
    record = api.requests()
    assert [(e["status"], e["reason"], e["auth"]) for e in record] == [
        (401, "unauthorized", False), (401, "unauthorized", False), (200, "ok", True),
    ]  # fmt: skip
    api.stop()
    assert "GET /items/1" in api.stderr()
    assert secret not in api.stderr() + json.dumps(record)


RECORD_FIELDS = {
    "t", "status", "path", "raw_path", "query", "id", "ids", "reason", "auth", "token", "agent",
}  # fmt: skip


def test_the_record_and_the_control_endpoints(mockapi: StartMock) -> None:
    api = mockapi("--limit", "none")
    before = time.time()
    get(api.url(1), {"User-Agent": "ingest-test/1.0"})
    get(api.base + "/items/a%20b?x=1", {"Authorization": "Bearer t0k"})
    after = time.time()
    record = api.requests()
    assert [set(e) for e in record] == [RECORD_FIELDS] * 2
    assert before <= record[0]["t"] <= record[1]["t"] <= after
    assert [(e["path"], e["raw_path"], e["query"]) for e in record] == [
        ("/items/1", "/items/1", ""), ("/items/a b", "/items/a%20b?x=1", "x=1"),
    ]  # fmt: skip
    assert [(e["id"], e["ids"]) for e in record] == [("1", ["1"]), ("a b", ["a b"])]
    assert record[0]["agent"] == "ingest-test/1.0"
    # No token configured: every request is let in, and a bearer sent is still fingerprinted.
    assert [(e["auth"], e["token"]) for e in record] == [(True, None), (True, "98e4e276")]
    assert api.requests(since=1) == record[1:]
    api.reset()
    assert api.requests() == []
    assert api.configure(latency=0.3) == {"latency": 0.3, "error_rate": 0.0, "not_json_page": 0}
    started = time.monotonic()
    get(api.url(1))
    assert time.monotonic() - started >= 0.3
    with pytest.raises(urllib.error.HTTPError, match="400"):
        api.configure(latncy=0.1)
    assert len(api.requests()) == 1  # control calls are never recorded


def test_a_server_that_cannot_start_reports_why() -> None:
    with pytest.raises(RuntimeError, match="a limit must look like"):
        MockAPI("--limit", "lots")


def test_down_refuses_connections_for_the_time_named_then_answers_keeping_its_record(
    mockapi,
) -> None:
    api = mockapi("--limit", "none")
    assert get(api.url(1))[0] == 200
    api.down(1.0)
    refused = False
    for _ in range(400):  # gone within the first half second, back after it
        try:
            status = get(api.url(2))[0]
        except (urllib.error.URLError, ConnectionError):
            refused = True
            time.sleep(0.02)
            continue
        if refused:
            break
        time.sleep(0.01)
    assert refused and status == 200
    record = api.requests()  # kept through the outage, which recorded nothing
    assert {entry["id"] for entry in record} == {"1", "2"} and statuses(record) == {
        200: len(record)
    }
