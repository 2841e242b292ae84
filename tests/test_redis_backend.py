"""Buckets in Redis, on a real redis-server: one timeline, one pause, one clock for all workers.

Most timelines run on a fake clock that the backend reads instead of the server's (its
``clock`` hook), so they are as exact as the pure bucket's; the others run on the Redis
clock and assert on durations and on booked times relative to each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest
from redis.asyncio import Redis

from ingest.config.values import ConfigError
from ingest.ratelimit.backends.redis import RedisBackend, RedisUnavailable
from ingest.ratelimit.learning.lessons import limited, succeeded
from ingest.ratelimit.pacing.bucket import (
    MARGIN,
    RECORD,
    SPACING,
    WINDOW_MARGIN,
    BucketState,
    Confirmation,
    Reservation,
    TokenBucket,
)
from ingest.ratelimit.pacing.rates import Rate
from tests.support.clock import FakeClock
from tests.support.redis import free_port

API = "http://api.example"


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


@contextlib.asynccontextmanager
async def workers(
    url: str, rates: list[Rate], n: int = 1, **options: Any
) -> AsyncIterator[list[RedisBackend]]:
    """``n`` workers sharing one Redis, each with its own connections."""
    backends = [RedisBackend.from_url(url, rates, **options) for _ in range(n)]
    try:
        yield backends
    finally:
        for backend in backends:
            await backend.close()


@contextlib.asynccontextmanager
async def exact(
    url: str, rates: list[Rate], *, clock: FakeClock, burst: int = 1, n: int = 1, **options: Any
) -> AsyncIterator[list[RedisBackend]]:
    """Workers on the fake clock, without margins or jitter: the pure bucket's test settings."""
    options = {"margin": 0.0, "spacing": 0.0, "rand": lambda: 0.0, **options}
    async with workers(url, rates, n, burst=burst, clock=clock, **options) as backends:
        yield backends


async def delays(backend: RedisBackend, n: int, key: str = API) -> list[float]:
    return [round((await backend.run(key, TokenBucket.reserve)).delay, 6) for _ in range(n)]


# ------------------------------------------------------------ pacing and burst


@pytest.mark.parametrize(
    ("rate", "burst", "expected"),
    [
        (Rate(2, 1), 1, [0.0, 0.5, 1.0, 1.5]),
        (Rate(10, 5), 2, [0.0, 0.0, 0.5, 1.0]),
        # A burst of 2 at 2 per second: 2 at once, then 2 more a full second later.
        (Rate(2, 1), 2, [0.0, 0.0, 1.0, 1.0, 2.0]),
    ],
)
def test_pacing_and_burst(redis_url: str, rate: Rate, burst: int, expected: list[float]) -> None:
    async def scenario() -> None:
        async with exact(redis_url, [rate], clock=FakeClock(), burst=burst) as [b]:
            assert await delays(b, len(expected)) == expected

    run(scenario)


def test_an_idle_bucket_refills_only_up_to_its_burst(redis_url: str) -> None:
    async def scenario() -> None:
        clock = FakeClock()
        async with exact(redis_url, [Rate(10, 5)], clock=clock, burst=2) as [b]:
            await delays(b, 2)
            clock.now += 100
            assert await delays(b, 3) == [0.0, 0.0, 0.5]
            clock.now += 0.25
            assert (await b.run(API, TokenBucket.reserve)).delay == pytest.approx(0.75)

    run(scenario)


def test_margin_slows_every_rate_a_little(redis_url: str) -> None:
    async def scenario() -> None:
        async with exact(redis_url, [Rate(10, 1)], clock=FakeClock(), margin=0.01) as [b]:
            assert await delays(b, 3) == [0.0, 0.101, 0.202]

    run(scenario)


def test_every_rate_applies_at_once(redis_url: str) -> None:
    async def scenario() -> None:
        # 2 per second, but also at most 3 in any 10 seconds.
        async with exact(redis_url, [Rate(2, 1), Rate(3, 10)], clock=FakeClock()) as [b]:
            assert await delays(b, 5) == [0.0, 0.5, 1.0, 10.0, 10.5]
        rates = [Rate(100, 60), Rate(5, 3600)]
        async with exact(redis_url, rates, clock=FakeClock(), burst=5) as [b]:
            assert await delays(b, 6, "http://other") == [0.0] * 5 + [3600.0]

    run(scenario)


def test_each_api_has_its_own_bucket(redis_url: str) -> None:
    async def scenario() -> None:
        async with exact(redis_url, [Rate(1, 1)], clock=FakeClock(), margin=MARGIN) as [b]:
            assert (await b.run("http://a", TokenBucket.reserve)).delay == 0.0
            assert (await b.run("http://b", TokenBucket.reserve)).delay == 0.0
            # 1 per second, and a window of 1 s a little longer than that.
            assert (await b.run("http://a", TokenBucket.reserve)).delay == pytest.approx(
                1 + WINDOW_MARGIN
            )
            await b.run("http://a", TokenBucket.pause, 4)
            assert (await b.run("http://a", TokenBucket.reserve)).delay == 4
            assert (await b.run("http://b", TokenBucket.reserve)).delay == pytest.approx(
                1 + WINDOW_MARGIN
            )

    run(scenario)


def test_reservations_never_go_backwards(redis_url: str) -> None:
    async def scenario() -> None:
        clock = FakeClock()
        rates = [Rate(7, 3), Rate(20, 30)]
        async with exact(redis_url, rates, clock=clock, burst=4) as [b]:
            times = []
            for step in range(200):
                clock.now += 0.05 * (step % 3)
                times.append(clock.now + (await b.run(API, TokenBucket.reserve)).delay)
        assert times == sorted(times)
        assert all(times[i + 20] - times[i] >= 30 - 1e-9 for i in range(len(times) - 20))

    run(scenario)


# ------------------------------------------------------------ pauses


def test_pause_holds_everything_then_resumes_one_at_a_time(redis_url: str) -> None:
    async def scenario() -> None:
        async with exact(redis_url, [Rate(10, 1)], clock=FakeClock(), burst=5) as [b]:
            first = await b.run(API, TokenBucket.reserve)
            pause = await b.run(API, TokenBucket.pause, 3.0)
            assert pause.started and pause.remaining == 3.0 and pause.added == 3.0
            assert await b.run(API, TokenBucket.confirm, first) == Confirmation(None, 1000.0)
            assert await delays(b, 3) == [3.0, 3.1, 3.2]
            assert (await b.run(API, TokenBucket.reserve)).epoch == first.epoch + 1

    run(scenario)


def test_future_slots_are_given_up_by_a_pause(redis_url: str) -> None:
    async def scenario() -> None:
        async with exact(redis_url, [Rate(1, 1), Rate(3, 100)], clock=FakeClock()) as [b]:
            assert await delays(b, 3) == [0.0, 1.0, 2.0]  # two of them in the future
            await b.run(API, TokenBucket.pause, 5.0)
            # Only the send that already went counts against 3/100: two more fit.
            assert await delays(b, 3) == [5.0, 6.0, 100.0]

    run(scenario)


def test_concurrent_pauses_make_one(redis_url: str) -> None:
    async def scenario() -> None:
        clock = FakeClock()
        async with exact(redis_url, [Rate(1, 1)], clock=clock, n=2) as [a, b]:
            assert (await a.run(API, TokenBucket.pause, 10.0)).started
            clock.now += 1
            again = await b.run(API, TokenBucket.pause, 5.0)
            assert not again.started and again.added == 0.0 and again.remaining == 9.0
            longer = await a.run(API, TokenBucket.pause, 12.0)
            assert not longer.started and longer.added == pytest.approx(3.0)
            assert (await b.run(API, TokenBucket.reserve)).delay == 12.0
            clock.now += 13
            assert (
                await b.run(API, TokenBucket.pause, 2.0)
            ).started  # the last one ended: a new one

    run(scenario)


def test_many_workers_pausing_at_once_start_one_pause(redis_url: str) -> None:
    async def scenario() -> None:
        async with workers(redis_url, [Rate(10, 1)], 3, rand=lambda: 0.0) as backends:
            pauses = await asyncio.gather(
                *(w.run(API, TokenBucket.pause, 5.0) for w in backends * 10)
            )
        assert sum(p.started for p in pauses) == 1
        assert [p.remaining for p in pauses] == pytest.approx([5.0] * 30, abs=1e-6)

    run(scenario)


def test_a_pause_ends_a_little_later_at_random(redis_url: str) -> None:
    async def scenario() -> None:
        # On the Redis clock: the remaining time is a duration, exact whatever the clock says.
        async with workers(redis_url, [Rate(1, 1)], rand=lambda: 1.0) as [b]:
            assert (await b.run(API, TokenBucket.pause, 2.0)).remaining == pytest.approx(
                2.1, abs=1e-6
            )
            assert (await b.run(API, TokenBucket.pause, 100.0)).remaining == pytest.approx(
                101.0, abs=1e-3
            )
        async with workers(redis_url, [Rate(1, 1)], rand=lambda: 0.5) as [b]:
            assert (await b.run("http://other", TokenBucket.pause, 2.0)).remaining == pytest.approx(
                2.05, abs=1e-6
            )

    run(scenario)


# ------------------------------------------------------------ confirming sends


def test_confirm_keeps_actual_sends_apart_when_one_went_late(redis_url: str) -> None:
    async def scenario() -> None:
        clock = FakeClock()
        async with exact(redis_url, [Rate(10, 1)], clock=clock, spacing=0.01, n=2) as [a, b]:
            first, second = (
                await a.run(API, TokenBucket.reserve),
                await b.run(API, TokenBucket.reserve),
            )
            assert first.precise and second.precise
            clock.now += 0.03  # the first request woke 30 ms late
            assert await a.run(API, TokenBucket.confirm, first) == Confirmation(0.0, clock.now)
            clock.now += second.delay - 0.03  # the second wakes on time, on another worker
            assert (await b.run(API, TokenBucket.confirm, second)).wait == pytest.approx(0.031)
            clock.now += 0.031
            assert (await b.run(API, TokenBucket.confirm, second)).wait == 0.0

    run(scenario)


def test_short_intervals_are_not_guarded_as_in_the_pure_bucket(redis_url: str) -> None:
    async def scenario() -> None:
        clock = FakeClock()
        async with exact(redis_url, [Rate(100, 1)], clock=clock, spacing=0.01) as [b]:
            first, second = (
                await b.run(API, TokenBucket.reserve),
                await b.run(API, TokenBucket.reserve),
            )
            assert not first.precise and not second.precise
            clock.now += 0.004  # the first woke 4 ms late; the second, on time, 6 ms after
            assert (await b.run(API, TokenBucket.confirm, first)).wait == 0.0
            clock.now += second.delay - 0.004
            assert (await b.run(API, TokenBucket.confirm, second)).wait == 0.0
        async with exact(redis_url, [Rate(10, 1)], clock=clock) as [b]:
            assert (await b.run("http://slower", TokenBucket.reserve)).precise

    run(scenario)


def test_windows_count_a_send_when_it_went_not_when_it_was_booked(redis_url: str) -> None:
    async def scenario() -> None:
        clock = FakeClock()
        async with exact(redis_url, [Rate(10, 1), Rate(2, 10)], clock=clock) as [b]:
            first = await b.run(API, TokenBucket.reserve)
            clock.now += 0.5  # it went half a second late
            await b.run(API, TokenBucket.confirm, first)
            await b.run(API, TokenBucket.reserve)
            # The third send must wait 10 s after the first one actually went.
            assert (await b.run(API, TokenBucket.reserve)).delay == pytest.approx(10.0)

    run(scenario)


def test_sends_are_paced_on_the_redis_clock(redis_url: str) -> None:
    async def scenario() -> None:
        async with workers(redis_url, [Rate(10, 1)], 2) as [a, b]:
            slots = [await (a if i % 2 else b).run(API, TokenBucket.reserve) for i in range(6)]
            # Booked on the server's clock, a Unix time: every worker reads the same one.
            assert slots[0].at == pytest.approx(time.time(), abs=1.0)
            step = 0.1 * (1 + MARGIN)
            gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(slots)]
            assert gaps == pytest.approx([step] * 5, abs=1e-6)
            assert all(0 <= s.delay <= i * step for i, s in enumerate(slots))

    run(scenario)


def test_workers_sending_in_real_time_keep_their_sends_apart(redis_url: str) -> None:
    async def worker(backend: RedisBackend, sent: list[float]) -> None:
        for _ in range(8):
            slot = await backend.run(API, TokenBucket.reserve)
            while True:
                await asyncio.sleep(slot.delay)
                confirmed = await backend.run(API, TokenBucket.confirm, slot)
                while confirmed.wait:
                    await asyncio.sleep(confirmed.wait)
                    confirmed = await backend.run(API, TokenBucket.confirm, slot)
                if confirmed.wait is not None:
                    sent.append(confirmed.at)
                    break
                slot = await backend.run(API, TokenBucket.reserve)

    async def scenario() -> None:
        sent: list[float] = []
        async with workers(redis_url, [Rate(20, 1)], 3) as backends:
            await asyncio.gather(*(worker(w, sent) for w in backends))
        sent.sort()
        assert len(sent) == 24
        gaps = [later - earlier for earlier, later in itertools.pairwise(sent)]
        assert min(gaps) >= 0.05 * (1 + SPACING) - 1e-6
        assert sent[20] - sent[0] >= 1.0

    run(scenario)


# ------------------------------------------------------------ the server's word


def test_an_announced_quota_is_adopted_by_every_worker(redis_url: str) -> None:
    async def scenario() -> None:
        async with exact(redis_url, [Rate(1000, 60)], clock=FakeClock(), n=2) as [a, b]:
            assert await delays(a, 2) == [0.0, 0.06]
            assert await a.run(API, TokenBucket.adopt, Rate(100, 60))
            assert not await b.run(API, TokenBucket.adopt, Rate(100, 60))
            assert await b.run(API, TokenBucket.per_minute) == 100
            # The future slot was voided; from now on the announced pace rules.
            assert await delays(b, 3) == [0.6, 1.2, 1.8]

    run(scenario)


def test_nothing_left_means_waiting_for_the_reset(redis_url: str) -> None:
    async def scenario() -> None:
        clock = FakeClock()
        async with exact(redis_url, [Rate(1000, 60)], clock=clock) as [b]:
            sent = (await b.run(API, TokenBucket.reserve)).at
            await b.run(API, TokenBucket.budget, remaining=0, reset=30.0, sent_at=sent)
            assert (await b.run(API, TokenBucket.reserve)).delay == pytest.approx(30.0)

    run(scenario)


def test_a_budget_counts_the_sends_the_server_had_not_seen(redis_url: str) -> None:
    async def scenario() -> None:
        clock = FakeClock()
        async with exact(redis_url, [Rate(60, 60)], clock=clock, n=2) as [a, b]:
            sent = (await a.run(API, TokenBucket.reserve)).at
            clock.now += 1
            await b.run(
                API, TokenBucket.reserve
            )  # went after the request the answer is about, from another worker
            clock.now += 0.5
            await a.run(API, TokenBucket.budget, remaining=3, reset=20.0, sent_at=sent)
            # 3 left, 1 already spent: two more now, the next after the reset.
            assert await delays(b, 3) == [0.5, 1.5, 20.0]

    run(scenario)


def test_what_429s_teach_is_shared_by_every_worker(redis_url: str) -> None:
    async def scenario() -> None:
        clock = FakeClock()
        async with exact(redis_url, [Rate(60, 60)], clock=clock, n=2) as [a, b]:
            assert await a.run(API, limited, sent_at=clock.now)
            assert await b.run(API, TokenBucket.per_minute) == pytest.approx(
                60 * 0.97
            )  # a lone 429
            clock.now += 1
            assert await b.run(API, limited, sent_at=clock.now)  # another, from the other worker
            assert await a.run(API, TokenBucket.per_minute) == pytest.approx(60 * 0.97 * 0.85)
            clock.now += 5
            assert not await b.run(API, succeeded)  # too soon: a probe every period / 6
            paces = []
            for worker in [a, b, a, b, a, b]:
                clock.now += 10
                assert await worker.run(API, succeeded)
                paces.append(round(await a.run(API, TokenBucket.per_minute), 2))
            # Fast back to near the pace of the last 429, then slowly.
            assert paces == [52.47, 55.47, 56.07, 56.67, 57.27, 57.87]

    run(scenario)


def test_429s_from_before_a_pause_are_not_news(redis_url: str) -> None:
    async def scenario() -> None:
        clock = FakeClock()
        async with exact(redis_url, [Rate(60, 60)], clock=clock, n=2) as [a, b]:
            early = clock.now
            clock.now += 1
            assert await a.run(API, limited, sent_at=clock.now - 0.5)
            await b.run(API, TokenBucket.pause, 10)
            assert not await a.run(API, limited, sent_at=early)
            assert not await b.run(API, limited, sent_at=float("-inf"))  # sent time unknown
            assert await a.run(API, TokenBucket.per_minute) == pytest.approx(60 * 0.97)

    run(scenario)


def test_one_workers_429_teaches_every_worker_the_inferred_limit(redis_url: str) -> None:
    # Two workers find an unknown limit together (RATELIMIT_RATE=auto): each sends half
    # the requests, in turn, on the shared record; the 429 comes to one of them.
    async def scenario() -> None:
        clock = FakeClock(1_800_000_000.0)
        async with exact(redis_url, [], clock=clock, n=2, auto=True) as [a, b]:
            # Ramped up beyond the limit already: only the record matters here.
            await a.run(API, lambda bucket: setattr(bucket.state, "pace", 1000.0))
            for i in range(101):  # 12 a second: the 101st in 10 s is refused (sliding 100/10)
                worker = (a, b)[i % 2]
                clock.now = 1_800_000_000.0 + i / 12
                slot = await worker.run(API, TokenBucket.reserve)
                clock.now = max(clock.now, slot.at)
                await worker.run(API, TokenBucket.confirm, slot)
            # The 101st went 8.33 s after the first: the log frees a place 1.75 s later.
            lesson = await a.run(API, limited, clock.now, 2.0, clock.now)
            assert lesson.inferred is not None
            assert (lesson.inferred.limit, lesson.inferred.period) == (100, 10.0)
            assert await b.run(API, TokenBucket.per_minute) == pytest.approx(600)
            assert not await b.run(API, lambda bucket: bucket.ramping)

    run(scenario)


# ------------------------------------------------------------ many workers


def test_three_workers_share_one_pace(redis_url: str) -> None:
    async def worker(backend: RedisBackend) -> list[Reservation]:
        return [await backend.run(API, TokenBucket.reserve) for _ in range(100)]

    async def scenario() -> None:
        async with workers(redis_url, [Rate(100, 10)], 3) as backends:
            booked = await asyncio.gather(*(worker(w) for w in backends))
            stored = await backends[0].client.hget(RedisBackend.key(API), "state")
            # Every send, for the inference, up to its record's length (a window's worth
            # when that is longer).
            assert len(BucketState.loads(stored).sends) == min(300, RECORD)
        times = sorted(slot.at for slots in booked for slot in slots)
        assert len(times) == len(set(times)) == 300
        assert all(times[i + 100] - times[i] >= 10 for i in range(len(times) - 100))
        gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
        assert min(gaps) >= 0.1 * (1 + MARGIN) - 1e-6

    run(scenario)


def test_ten_workers_booking_at_once_book_what_one_bucket_alone_would(redis_url: str) -> None:
    """Concurrent swaps that lose are run again on the winner's state: no slot is lost
    or booked twice, whatever the interleaving."""

    async def scenario() -> None:
        clock = FakeClock()
        rates = [Rate(5, 1.0), Rate(40, 20.0)]
        pure = TokenBucket(rates, burst=2, margin=0.0, spacing=0.0, clock=clock)
        async with exact(redis_url, rates, clock=clock, burst=2, n=10) as backends:
            booked = await asyncio.gather(
                *(w.run(API, TokenBucket.reserve) for w in backends for _ in range(20))
            )
            conflicts = sum(w.conflicts for w in backends)
        assert sorted(slot.at for slot in booked) == [pure.reserve().at for _ in range(200)]
        assert conflicts > 0  # they did compete

    run(scenario)


# ------------------------------------------------------------ storage and errors


def test_floats_come_back_whole(redis_url: str) -> None:
    async def scenario() -> None:
        # A Unix time to the microsecond, and paces of a third and a seventh of a second.
        clock = FakeClock(1_700_000_000.123456)
        rates = [Rate(3, 1.0), Rate(1, 7.0)]
        pure = TokenBucket(rates, burst=2, clock=clock, rand=lambda: 0.5)
        async with workers(redis_url, rates, burst=2, clock=clock, rand=lambda: 0.5) as [b]:
            for _ in range(4):
                slot = await b.run(API, TokenBucket.reserve)
                assert slot == pure.reserve()
                assert slot.at == clock.now + slot.delay
            assert slot.delay % 1 != 0 and slot.at % 1 != 0
            assert await b.run(API, TokenBucket.per_minute) == pure.per_minute() == 60 * (1 / 7)
            clock.now += 1 / 3
            assert await b.run(API, TokenBucket.pause, 1 / 3) == pure.pause(1 / 3)

    run(scenario)


def test_one_bucket_is_one_key_that_expires(redis_url: str) -> None:
    async def scenario() -> None:
        async with workers(redis_url, [Rate(100, 60), Rate(5000, 3600)]) as [b]:
            await b.run(API, TokenBucket.reserve)
            key = RedisBackend.key(API)
            assert key == "ingest:ratelimit:{http://api.example}"
            client: Redis = b.client
            assert await client.keys("*") == [key.encode()]
            assert 86_000 < await client.ttl(key) <= 86_400
            state = BucketState.loads(await client.hget(key, "state"))
            assert len(state.sends) == 1 and await client.hget(key, "version") == b"1"
            await b.run(API, TokenBucket.pause, 200_000.0)  # a pause outlives a day
            assert await client.ttl(key) >= 200_000  # the pause, whole, or more

    run(scenario)


def test_unreachable_redis_is_a_clear_error_without_the_password() -> None:
    async def scenario() -> None:
        port = free_port()  # nothing listens there
        url = f"redis://worker:s3cret@127.0.0.1:{port}/0"
        async with workers(url, [Rate(1, 1)], retry_for=0.3) as [b]:
            with pytest.raises(RedisUnavailable) as error:
                await b.check()
            message = str(error.value)
            assert f"Redis at redis://worker:***@127.0.0.1:{port}/0 is unreachable" in message
            assert "s3cret" not in message
            with pytest.raises(RedisUnavailable):
                await b.run(API, TokenBucket.reserve)

    run(scenario)


def test_a_url_that_is_not_redis_is_a_bad_setting() -> None:
    with pytest.raises(ConfigError, match=r"REDIS_URL .* got 'http://u:\*\*\*@host/0'"):
        RedisBackend.from_url("http://u:pw@host/0", [Rate(1, 1)])


def test_an_allowance_spent_holds_every_worker_and_books_nothing(redis_url: str) -> None:
    async def scenario() -> None:
        clock = FakeClock(0.0)
        rates = [Rate(20, 1.0), Rate(30, 6.0)]
        async with exact(redis_url, rates, clock=clock, n=2) as [a, b]:
            for worker in itertools.islice(itertools.cycle([a, b]), 30):
                assert (await worker.run(API, TokenBucket.reserve, -float("inf"), 2.0)).held == 0
            clock.now = 1.0
            held = await b.run(API, TokenBucket.reserve, -float("inf"), 2.0)
            assert (held.held, held.held_by) == (pytest.approx(5.0, abs=0.05), Rate(30, 6.0))
            assert await a.run(API, TokenBucket.last_booked) == pytest.approx(0.45, abs=0.01)
            assert (await a.run(API, TokenBucket.reserve)).at == pytest.approx(6.0, abs=0.05)

    run(scenario)
