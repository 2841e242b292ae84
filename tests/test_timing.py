"""Timing logic on a fake clock: backoff, interruptible waits, group commit."""

from __future__ import annotations

import asyncio

import pytest

from ingest.groupcommit import GroupCommit
from ingest.middlewares import pause_backoff
from ingest.retry import backoff_delay
from ingest.stopping import Stopping, Waiter
from ingest.storage import Record
from tests.support.clock import FakeClock


def test_backoff_grows_exponentially_up_to_the_cap() -> None:
    top = [backoff_delay(n, base=1.0, cap=10.0, rand=lambda: 1.0) for n in range(1, 7)]
    assert top == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_backoff_is_full_jitter_over_zero_to_the_ceiling() -> None:
    assert backoff_delay(3, base=1.0, cap=60.0, rand=lambda: 0.0) == 0.0
    assert backoff_delay(3, base=1.0, cap=60.0, rand=lambda: 0.25) == 1.0


def test_pause_after_429s_without_retry_after_doubles() -> None:
    assert [pause_backoff(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]


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


def test_group_commit_batches_what_arrives_during_a_write() -> None:
    batches: list[list[str]] = []

    async def write(records: list[Record]) -> None:
        batches.append([r.id for r in records])
        await asyncio.sleep(0.01)

    async def scenario() -> None:
        commit = GroupCommit(write, max_batch=3)
        first = asyncio.ensure_future(commit.add(Record("0", "stored", "{}")))
        await asyncio.sleep(0.001)  # its write is under way
        await asyncio.gather(*(commit.add(Record(str(i), "stored", "{}")) for i in range(1, 7)))
        await first
        await commit.flush()

    asyncio.run(scenario())
    # The first record goes alone; the six that arrived meanwhile go in batches of 3.
    assert batches == [["0"], ["1", "2", "3"], ["4", "5", "6"]]


def test_group_commit_lingers_for_more_records_before_writing() -> None:
    batches: list[list[str]] = []

    async def write(records: list[Record]) -> None:
        batches.append([r.id for r in records])

    async def scenario() -> None:
        commit = GroupCommit(write, max_batch=10, linger=0.3)
        first = asyncio.ensure_future(commit.add(Record("0", "stored", "{}")))
        await asyncio.sleep(0.05)
        assert batches == []  # still lingering
        await asyncio.gather(commit.add(Record("1", "stored", "{}")), first)

    asyncio.run(scenario())
    assert batches == [["0", "1"]]


def test_group_commit_writes_a_full_batch_without_lingering() -> None:
    batches: list[list[str]] = []

    async def write(records: list[Record]) -> None:
        batches.append([r.id for r in records])

    async def scenario() -> None:
        commit = GroupCommit(write, max_batch=3, linger=60.0)
        adds = (commit.add(Record(str(i), "stored", "{}")) for i in range(3))
        await asyncio.wait_for(asyncio.gather(*adds), timeout=5.0)

    asyncio.run(scenario())
    assert batches == [["0", "1", "2"]]


def test_group_commit_reports_a_failed_write_to_every_waiter() -> None:
    async def write(records: list[Record]) -> None:
        raise OSError("disk gone")

    async def scenario() -> list[BaseException | None]:
        commit = GroupCommit(write, max_batch=10)
        return await asyncio.gather(
            *(commit.add(Record(str(i), "stored", "{}")) for i in range(3)),
            return_exceptions=True,
        )

    assert [type(r) for r in asyncio.run(scenario())] == [OSError, OSError, OSError]
