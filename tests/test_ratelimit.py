"""The token bucket's arithmetic, on a fake clock."""

from __future__ import annotations

import asyncio

import pytest

from ingest.config import Rate
from ingest.ratelimit import MARGIN, MemoryBackend, TokenBucket
from tests.support.clock import FakeClock


def bucket(rates: list[Rate], *, burst: int = 1, clock: FakeClock | None = None) -> TokenBucket:
    return TokenBucket(rates, burst=burst, margin=0.0, clock=clock or FakeClock())


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
    b = TokenBucket([Rate(10, 1)], margin=0.01, clock=FakeClock())
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
    assert b.epoch == first.epoch + 1
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
    async def scenario() -> None:
        backend = MemoryBackend([Rate(1, 1)], clock=FakeClock())
        assert (await backend.reserve("http://a")).delay == 0.0
        assert (await backend.reserve("http://b")).delay == 0.0
        assert (await backend.reserve("http://a")).delay == pytest.approx(1 + MARGIN)
        await backend.pause("http://a", 4)
        assert await backend.remaining_pause("http://a") == 4
        assert await backend.remaining_pause("http://b") == 0
        assert await backend.epoch("http://a") == 1

    asyncio.run(scenario())
