"""Timing logic on a fake clock: backoff, interruptible waits."""

from __future__ import annotations

import asyncio

import pytest

from ingest.backoff import exponential, full_jitter
from ingest.stopping.waiting import Stopping, Waiter
from tests.support.clock import FakeClock


def test_backoff_grows_exponentially_up_to_the_cap() -> None:
    top = [full_jitter(n, base=1.0, cap=10.0, rand=lambda: 1.0) for n in range(1, 7)]
    assert top == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_backoff_is_full_jitter_over_zero_to_the_ceiling() -> None:
    assert full_jitter(3, base=1.0, cap=60.0, rand=lambda: 0.0) == 0.0
    assert full_jitter(3, base=1.0, cap=60.0, rand=lambda: 0.25) == 1.0


def test_pause_after_429s_without_retry_after_doubles() -> None:
    pauses = [exponential(n, base=1.0, cap=60.0) for n in range(1, 9)]
    assert pauses == [1, 2, 4, 8, 16, 32, 60, 60]


def test_waiter_sleeps_in_steps_and_stops_early() -> None:
    clock = FakeClock()
    stop_at = clock.now + 1.0
    waiter = Waiter(lambda: clock.now >= stop_at, step=0.25, spin=0.0, clock=clock,
                    sleep=clock.sleep)  # fmt: skip
    with pytest.raises(Stopping) as stopped:
        asyncio.run(waiter.sleep(30.0))
    assert clock.slept == [0.25, 0.25, 0.25, 0.25]
    assert stopped.value.args[0] == pytest.approx(29.0)


def test_waiter_sleeps_the_whole_time_when_nothing_stops() -> None:
    clock = FakeClock()
    waiter = Waiter(lambda: False, step=10.0, spin=0.0, clock=clock, sleep=clock.sleep)
    asyncio.run(waiter.sleep(25.0))
    assert clock.slept == [10.0, 10.0, 5.0]
