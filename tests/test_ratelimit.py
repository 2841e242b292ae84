"""The token bucket's arithmetic, on a fake clock."""

from __future__ import annotations

import asyncio

import pytest

from ingest.ratelimit.backends.memory import MemoryBackend
from ingest.ratelimit.learning.lessons import limited, succeeded
from ingest.ratelimit.pacing.bucket import (
    GUARD_MIN_INTERVAL,
    WINDOW_MARGIN,
    Confirmation,
    TokenBucket,
)
from ingest.ratelimit.pacing.rates import Rate
from ingest.ratelimit.pacing.state import BucketState
from tests.support.clock import FakeClock


def bucket(rates: list[Rate], *, burst: int = 1, clock: FakeClock | None = None) -> TokenBucket:
    return TokenBucket(
        rates, burst=burst, margin=0.0, spacing=0.0, clock=clock or FakeClock(), rand=lambda: 0.0
    )


def delays(b: TokenBucket, n: int) -> list[float]:
    return [round(b.reserve().delay, 6) for _ in range(n)]


def test_burst_one_spaces_every_request_from_the_first() -> None:
    assert delays(bucket([Rate(2, 1)]), 4) == [0.0, 0.5, 1.0, 1.5]


def test_burst_lets_that_many_go_at_once_then_paces() -> None:
    assert delays(bucket([Rate(10, 5)], burst=2), 4) == [0.0, 0.0, 0.5, 1.0]


def test_burst_never_breaks_the_count_per_period() -> None:
    # A burst of 2 at 2 per second: 2 at once, then 2 more a full second later.
    assert delays(bucket([Rate(2, 1)], burst=2), 5) == [0.0, 0.0, 1.0, 1.0, 2.0]


def test_an_idle_bucket_refills_only_up_to_its_burst() -> None:
    clock = FakeClock()
    b = bucket([Rate(10, 5)], burst=2, clock=clock)
    delays(b, 2)
    clock.now += 100
    assert delays(b, 3) == [0.0, 0.0, 0.5]


def test_time_passing_shortens_the_wait() -> None:
    clock = FakeClock()
    b = bucket([Rate(1, 1)], clock=clock)
    assert b.reserve().delay == 0.0
    clock.now += 0.25
    assert b.reserve().delay == pytest.approx(0.75)


def test_margin_slows_every_rate_a_little() -> None:
    b = TokenBucket([Rate(10, 1)], margin=0.01, clock=FakeClock(), rand=lambda: 0.0)
    assert [round(d, 6) for d in delays(b, 3)] == [0.0, 0.101, 0.202]


def test_every_rate_applies_at_once() -> None:
    # 2 per second, but also at most 3 in any 10 seconds.
    b = bucket([Rate(2, 1), Rate(3, 10)])
    assert delays(b, 5) == [0.0, 0.5, 1.0, 10.0, 10.5]


def test_a_long_quota_allows_its_count_then_holds_the_window() -> None:
    b = bucket([Rate(100, 60), Rate(5, 3600)], burst=5)
    assert delays(b, 6) == [0.0, 0.0, 0.0, 0.0, 0.0, 3600.0]


def test_pause_holds_everything_then_resumes_one_at_a_time() -> None:
    clock = FakeClock()
    b = bucket([Rate(10, 1)], burst=5, clock=clock)
    first = b.reserve()
    pause = b.pause(3.0)
    assert pause.started and pause.remaining == 3.0 and pause.added == 3.0
    assert b.state.epoch == first.epoch + 1
    assert delays(b, 3) == [3.0, 3.1, 3.2]


def test_future_slots_are_given_up_by_a_pause() -> None:
    clock = FakeClock()
    b = bucket([Rate(1, 1), Rate(3, 100)], clock=clock)
    assert delays(b, 3) == [0.0, 1.0, 2.0]  # two of them in the future
    b.pause(5.0)
    # Only the send that already went counts against 3/100: two more fit.
    assert delays(b, 3) == [5.0, 6.0, 100.0]


def test_concurrent_pauses_make_one() -> None:
    clock = FakeClock()
    b = bucket([Rate(1, 1)], clock=clock)
    assert b.pause(10.0).started
    clock.now += 1
    again = b.pause(5.0)
    assert not again.started and again.added == 0.0 and again.remaining == 9.0
    longer = b.pause(12.0)
    assert not longer.started and longer.added == pytest.approx(3.0)
    assert b.remaining_pause() == 12.0


def test_a_pause_after_the_last_one_ended_is_a_new_one() -> None:
    clock = FakeClock()
    b = bucket([Rate(1, 1)], clock=clock)
    b.pause(2.0)
    clock.now += 3
    assert b.pause(2.0).started


def test_reservations_never_go_backwards() -> None:
    clock = FakeClock()
    b = bucket([Rate(7, 3), Rate(20, 30)], burst=4, clock=clock)
    times = []
    for step in range(200):
        clock.now += 0.05 * (step % 3)
        times.append(clock.now + b.reserve().delay)
    assert times == sorted(times)
    # and never more than 20 in any 30 s, 7 in any 3 s (+ burst allowance)
    for i in range(len(times) - 20):
        assert times[i + 20] - times[i] >= 30 - 1e-9


def test_memory_backend_keeps_one_bucket_per_api() -> None:
    async def delay(backend: MemoryBackend, key: str) -> float:
        return (await backend.run(key, TokenBucket.reserve)).delay

    async def scenario() -> None:
        backend = MemoryBackend([Rate(1, 1)], clock=FakeClock(), rand=lambda: 0.0)
        assert await delay(backend, "http://a") == await delay(backend, "http://b") == 0.0
        # 1 per second, and a window of 1 s a little longer than that.
        assert await delay(backend, "http://a") == pytest.approx(1 + WINDOW_MARGIN)
        await backend.run("http://a", TokenBucket.pause, 4)
        assert await delay(backend, "http://a") == 4
        assert await delay(backend, "http://b") == pytest.approx(1 + WINDOW_MARGIN)

    asyncio.run(scenario())


def test_a_pause_ends_a_little_later_at_random() -> None:
    clock = FakeClock()
    b = TokenBucket([Rate(1, 1)], clock=clock, rand=lambda: 1.0)
    assert b.pause(2.0).remaining == pytest.approx(2.1)  # 5% of the pause
    assert b.pause(100.0).remaining == pytest.approx(101.0)  # at most 1 s more


def test_confirm_keeps_actual_sends_apart_when_one_went_late() -> None:
    clock = FakeClock()
    b = TokenBucket([Rate(10, 1)], margin=0.0, spacing=0.01, clock=clock, rand=lambda: 0.0)
    first, second = b.reserve(), b.reserve()
    assert first.precise and second.precise  # guarded: their waits must end on time
    clock.now += 0.03  # the first request woke 30 ms late
    assert b.confirm(first) == Confirmation(0.0, clock.now)
    clock.now += second.delay - 0.03  # the second wakes on time
    assert b.confirm(second).wait == pytest.approx(0.031)  # 101 ms after the first
    clock.now += 0.031
    assert b.confirm(second).wait == 0.0


def test_short_intervals_follow_the_booked_timeline_unguarded() -> None:
    clock = FakeClock()
    b = TokenBucket([Rate(100, 1)], margin=0.0, spacing=0.01, clock=clock, rand=lambda: 0.0)
    first, second = b.reserve(), b.reserve()
    assert not first.precise and not b.guarded  # 10 ms: under GUARD_MIN_INTERVAL
    clock.now += 0.004  # the first request woke 4 ms late
    assert b.confirm(first).wait == 0.0
    clock.now += second.delay - 0.004  # the second, on time, goes 6 ms after it
    assert b.confirm(second).wait == 0.0
    third = b.reserve()
    assert third.delay == pytest.approx(0.01)  # the timeline did not move


def test_a_slower_pace_brings_the_guard_back() -> None:
    clock = FakeClock()
    fifty_ms = TokenBucket([Rate(1200, 60)], clock=clock)
    assert fifty_ms.interval == pytest.approx(GUARD_MIN_INTERVAL) and fifty_ms.guarded
    assert not TokenBucket([Rate(1200, 60)], burst=2, clock=clock).guarded
    b = TokenBucket([Rate(1500, 60)], clock=clock, rand=lambda: 0.0)
    assert not b.guarded  # 40 ms
    assert limited(b, sent_at=clock.now)  # an unexpected 429: 3% slower, 41 ms
    assert not b.guarded
    assert b.adopt(Rate(60, 6))  # the server announces 100 ms
    assert b.guarded and b.reserve().precise


def test_a_pause_voids_the_slots_booked_before_it() -> None:
    b = bucket([Rate(10, 1)])
    slot = b.reserve()
    b.pause(1.0)
    assert b.confirm(slot).wait is None


def test_an_announced_quota_applies_with_the_configured_rates() -> None:
    clock = FakeClock()
    b = bucket([Rate(1000, 60)], clock=clock)
    assert delays(b, 2) == [0.0, 0.06]
    assert b.adopt(Rate(100, 60))
    assert not b.adopt(Rate(100, 60))
    assert b.per_minute() == 100
    # The future slot was voided; from now on the announced pace rules.
    assert delays(b, 3) == [0.6, 1.2, 1.8]


def test_nothing_left_means_waiting_for_the_reset() -> None:
    clock = FakeClock()
    b = bucket([Rate(1000, 60)], clock=clock)
    sent = clock.now + b.reserve().delay
    b.budget(remaining=0, reset=30.0, sent_at=sent)
    assert b.reserve().delay == pytest.approx(30.0)


def test_a_budget_counts_the_sends_the_server_had_not_seen() -> None:
    clock = FakeClock()
    b = bucket([Rate(60, 60)], clock=clock)
    sent = clock.now + b.reserve().delay
    clock.now += 1
    b.reserve()  # went after the request that the answer is about
    clock.now += 0.5
    b.budget(remaining=3, reset=20.0, sent_at=sent)
    # 3 left, 1 already spent: two more now, the next after the reset.
    assert [round(d, 6) for d in delays(b, 3)] == [0.5, 1.5, 20.0]


def test_a_state_stored_by_an_earlier_version_still_loads() -> None:
    # As kept in Redis by a version without some of today's fields (climbing, refusals,
    # rejected): each missing one takes its default.
    text = (
        '{"epoch":3,"scale":1.0,"ceiling":1.0,"changed":-Infinity,"limited_at":-Infinity,'
        '"paused_until":-Infinity,"pause_began":-Infinity,"budget_until":1010.0,"budget_left":2,'
        '"tat":1000.5,"last_sent":1000.0,"announced":[100,60.0],"retired_at":-Infinity,'
        '"sends":[999.0,1000.0],"pace":0.0,"ramped":-Infinity,"inferred":[],"rejections":0,'
        '"probed":-Infinity}'
    )
    state = BucketState.loads(text)
    assert (state.budget_left, state.climbing, state.announced) == (2, 0.0, (100, 60.0))
    assert BucketState.loads(state.dumps()) == state


def test_unexpected_429s_lower_the_pace_and_it_climbs_back() -> None:
    clock = FakeClock()
    b = bucket([Rate(60, 60)], clock=clock)
    assert limited(b, sent_at=clock.now)
    assert b.state.scale == pytest.approx(0.97)  # a lone 429: a little slower
    clock.now += 30
    assert limited(b, sent_at=clock.now)
    assert b.state.scale == pytest.approx(0.97 * 0.85)  # another within the period: much slower
    assert b.per_minute() == pytest.approx(60 * 0.97 * 0.85)
    clock.now += 5
    assert not succeeded(b)  # too soon: a probe every period / 6
    scales = []
    for _ in range(6):
        clock.now += 10
        succeeded(b)
        scales.append(round(b.state.scale, 4))
    # Fast back to near the pace of the last 429, then slowly.
    assert scales == [0.8745, 0.9245, 0.9345, 0.9445, 0.9545, 0.9645]


def test_429s_a_period_apart_are_each_a_lone_one() -> None:
    clock = FakeClock()
    b = bucket([Rate(60, 60)], clock=clock)
    limited(b, sent_at=clock.now)
    clock.now += 61
    limited(b, sent_at=clock.now)
    assert b.state.scale == pytest.approx(0.97 * 0.97)


def test_429s_from_before_a_pause_are_not_news() -> None:
    clock = FakeClock()
    b = bucket([Rate(60, 60)], clock=clock)
    early = clock.now
    clock.now += 1
    assert limited(b, sent_at=clock.now - 0.5)
    b.pause(10)
    assert not limited(b, sent_at=early)
    assert b.state.scale == pytest.approx(0.97)


def test_windows_count_a_send_when_it_went_not_when_it_was_booked() -> None:
    clock = FakeClock()
    b = bucket([Rate(10, 1), Rate(2, 10)], clock=clock)
    first = b.reserve()
    clock.now += 0.5  # it went half a second late
    b.confirm(first)
    b.reserve()
    # The third send must wait 10 s after the first one actually went.
    assert b.reserve().delay == pytest.approx(10.0)
