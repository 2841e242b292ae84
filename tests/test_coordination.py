"""Workers' coordination in Redis: leases that a dead holder frees in time, and idle workers that
say what they wait for. A real redis-server; waits timed on a fake clock where the logic allows."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from ingest.distributed.coordinator import HEARTBEAT, HIGH_WATER, LEASE, PATIENCE, Coordinator
from ingest.distributed.seeding import SharedSeeding
from ingest.distributed.worker import settle
from ingest.fetching.ids import parse_ids
from ingest.fetching.worklist import Worklist
from ingest.storage.ledger import Ledger
from tests.support.clock import FakeClock

JOB = "job-of-test"


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


def worker(url: str, name: str, **options: Any) -> Coordinator:
    return Coordinator(aioredis.Redis.from_url(url, decode_responses=True), JOB, name, **options)


async def close(*coordinators: Coordinator) -> None:
    for coordinator in coordinators:
        await coordinator.redis.aclose()


def test_a_heartbeat_never_lengthens_a_lease(redis_url: str) -> None:
    async def scenario() -> None:
        a, b = worker(redis_url, "a"), worker(redis_url, "b")
        assert await a.take_seeding()
        assert await a.reconciling.take()
        for _ in range(3):
            await a.beat()
            await b.beat()
        # Had a heartbeat kept them with the job's data (for days), a holder killed now
        # would hold them for days: no other worker would seed, or look for lost ids.
        assert 0 < await a.redis.pttl(a.keys["seeder"]) <= LEASE * 1000
        assert 0 < await a.redis.pttl(a.keys["reconciler"]) <= LEASE * 1000
        assert await a.redis.ttl(a.keys["workers"]) > LEASE  # the data is kept
        await close(a, b)

    run(scenario)


def test_a_lease_left_for_days_is_cut_back_to_one_lease(redis_url: str) -> None:
    async def scenario() -> None:
        b = worker(redis_url, "b")
        # As an earlier version's heartbeat left the lease of a seeder killed since.
        await b.redis.set(b.keys["seeder"], "gone", ex=7 * 24 * 3600)
        assert not await b.take_seeding()
        assert b.seeding.other is not None and b.seeding.other.worker == "gone"
        assert 0 < await b.redis.pttl(b.keys["seeder"]) <= LEASE * 1000
        await close(b)

    run(scenario)


def test_a_dead_holders_lease_is_taken_over_once_it_runs_out(redis_url: str) -> None:
    async def scenario() -> None:
        a, b = worker(redis_url, "a", lease=0.3), worker(redis_url, "b", lease=0.3)
        assert await a.take_seeding()
        assert not await b.take_seeding()  # a holds it
        assert await a.take_seeding()  # renewed by its holder
        # a dies: it renews nothing from now on; b, beating, gets the lease when it runs out.
        for _ in range(200):
            await b.beat()
            if await b.take_seeding():
                break
            # Never more than a lease left: a dead holder frees it within that time.
            assert 0 < await b.redis.pttl(b.keys["seeder"]) <= 300
            await asyncio.sleep(0.05)
        assert await b.redis.get(b.keys["seeder"]) == "b"
        assert not await a.take_seeding()  # a worker taken for dead does not take it back
        await close(a, b)

    run(scenario)


def test_the_look_for_lost_ids_keeps_its_lease_while_it_lasts(redis_url: str) -> None:
    async def scenario() -> None:
        a, b = worker(redis_url, "a", lease=0.3), worker(redis_url, "b", lease=0.3)
        assert await a.reconciling.take()
        async with a.reconciling.kept():
            await asyncio.sleep(1.0)  # a look longer than three leases
            assert not await b.reconciling.take()
        assert await b.reconciling.take()  # freed at its end
        await close(a, b)

    run(scenario)


def test_an_idle_worker_says_what_it_waits_for(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ingest.distributed.worker")

    async def scenario() -> None:
        a, b = worker(redis_url, "a"), worker(redis_url, "b")
        await a.finish_seeding()
        await b.beat()  # b is busy: it has requests out
        clock = FakeClock()

        async def look() -> int:
            raise AssertionError("no look while a worker is busy")

        waiting = asyncio.ensure_future(settle(a, look, clock=clock, sleep=clock.sleep))
        while clock.now < 1000 + 2 * PATIENCE + 1:
            await asyncio.sleep(0.001)
        lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Idle")]
        assert lines == [
            "Idle for 30.0s, waiting for worker b, busy",
            "Idle for 1m00s, waiting for worker b, busy",
        ]
        await b.mark_complete()
        assert await waiting == 0 and a.finished
        await close(a, b)

    run(scenario)


def test_a_worker_waiting_for_the_seeding_with_nothing_queued_says_who_seeds(
    redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ingest.distributed.coordinator")

    async def scenario() -> None:
        a, b = worker(redis_url, "a"), worker(redis_url, "b")
        assert await a.take_seeding()
        ids = parse_ids("1-10")
        ledger = Ledger.from_url(f"sqlite:///{tmp_path}/x.db")
        clock = FakeClock()
        seeding = SharedSeeding(
            ids, Worklist(ids, ledger, lambda *_: None), b, clock=clock, sleep=clock.sleep
        )
        fed = [pair async for pair in _until(seeding, a, clock)]
        assert fed == []  # a seeded (here: nothing), b never did
        lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Waiting")]
        assert len(lines) == 2
        assert lines[0].startswith("Waiting 30.0s for worker a, which seeds the job's queue")
        assert lines[0].endswith("; nothing is queued")
        await close(a, b)

    run(scenario)


async def _until(seeding: SharedSeeding, holder: Coordinator, clock: FakeClock) -> Any:
    """The seeding's feed, until its fake clock has run two patiences: then ``holder``
    ends the seeding."""
    feed = seeding.feed()
    ending = asyncio.ensure_future(_end_after(holder, clock, 2 * PATIENCE + 1))
    async for pair in feed:
        yield pair
    await ending


async def _end_after(holder: Coordinator, clock: FakeClock, seconds: float) -> None:
    start = clock.now
    while clock.now - start < seconds:
        await asyncio.sleep(0.001)
    await holder.finish_seeding()


def test_ids_pending_with_no_seeder_and_every_worker_idle_are_queued_within_a_heartbeat(
    redis_url: str,
) -> None:
    # What a Redis restarted without its append-only file leaves: workers alive and idle,
    # nothing queued, no record that seeding was done and no worker seeding. The job
    # goes on within a heartbeat (the second look), not never.
    async def scenario() -> None:
        a, b = worker(redis_url, "a"), worker(redis_url, "b")
        await b.set_idle(True)
        clock, looks = FakeClock(), []

        async def look() -> int:
            looks.append(clock.now)
            return 7  # ids without an outcome, queued again

        settling = settle(a, look, clock=clock, sleep=clock.sleep)
        assert await asyncio.wait_for(settling, timeout=10) == 7  # else: the stall
        assert looks and looks[0] - 1000 <= HEARTBEAT
        assert await a.seeding_done()  # the look queued every id: that was the seeding
        assert not a.finished
        await close(a, b)

    run(scenario)


def test_seeding_fills_the_queue_to_its_high_water_in_requests_of_several_ids(
    redis_url: str, tmp_path: Path
) -> None:
    # Two requests' room left in the queue, 100 ids a request (queued, as the spider
    # does, once 100 ids are fed): 200 ids go, then the seeding waits (on the fake clock)
    # for the queue to shorten.
    async def scenario() -> None:
        a = worker(redis_url, "a")
        queue = a.keys["queue"]
        await a.redis.zadd(queue, {f"request-{n}": n for n in range(HIGH_WATER - 2)})
        ids = parse_ids("1-1000")
        ledger = Ledger.from_url(f"sqlite:///{tmp_path}/x.db")
        clock = FakeClock()
        seeding = SharedSeeding(
            ids, Worklist(ids, ledger, lambda *_: None), a,
            clock=clock, sleep=clock.sleep, per_request=lambda: 100,
        )  # fmt: skip
        fed = []
        feed = seeding.feed()
        async for id_, _ in feed:
            if clock.slept:
                break
            fed.append(id_)
            if len(fed) % 100 == 0:
                await a.redis.zadd(queue, {f"batch-{len(fed)}": 0})
        await feed.aclose()
        assert fed == [str(n) for n in range(1, 201)]
        assert clock.slept[0] == 0.2
        await a.redis.delete(*a.keys.values())
        await close(a)
        await ledger.close()

    run(scenario)


def test_a_worker_that_takes_a_request_while_it_settles_is_idle_again_after_it(
    redis_url: str,
) -> None:
    # Its engine took a request from the shared queue while it waited at idle, and said
    # it was busy. Once that request is done, the worker is idle again for every worker:
    # the look is made, not waited for by all of them forever.
    async def scenario() -> None:
        a, b = worker(redis_url, "a"), worker(redis_url, "b")
        await a.finish_seeding()
        await b.beat()  # b is busy: a waits
        clock, engine_busy = FakeClock(), [False]

        async def look() -> int:
            return 0  # nothing without an outcome: the job is complete

        def settling() -> Any:
            return settle(a, look, clock=clock, sleep=clock.sleep, working=lambda: engine_busy[0])

        first = asyncio.ensure_future(settling())
        await asyncio.sleep(0.05)
        engine_busy[0] = True  # a request reached its downloader:
        await a.set_idle(False)  # as Worker.busy says
        assert await asyncio.wait_for(first, timeout=10) == 0 and not a.finished
        engine_busy[0] = False  # the request done, the engine idle again;
        await b.set_idle(True)  # b idle too
        assert await asyncio.wait_for(settling(), timeout=10) == 0  # else: the stall
        assert a.finished and await b.complete()
        await a.redis.delete(*a.keys.values())
        await close(a, b)

    run(scenario)


def test_a_seeder_whose_lease_ran_out_seeds_again_from_the_record_not_from_where_it_was(
    redis_url: str, tmp_path: Path
) -> None:
    # The seeder is held up (a database outage) longer than its lease; another worker
    # seeds meanwhile and records its place. When the first goes on, its lease is free
    # again, but it does not take it back and carry on from where it was (the ids
    # queued twice, in batches the duplicate filter does not know): its turn ends, and
    # the next one starts from the place recorded.
    async def scenario() -> None:
        a, b = worker(redis_url, "a", lease=0.3), worker(redis_url, "b", lease=0.3)
        ids = parse_ids("1-2000")
        ledger = Ledger.from_url(f"sqlite:///{tmp_path}/x.db")
        clock = FakeClock()
        seeding = SharedSeeding(
            ids, Worklist(ids, ledger, lambda *_: None), a, clock=clock, sleep=clock.sleep
        )
        feed, fed = seeding.feed(), []
        async for id_, _ in feed:
            fed.append(int(id_))
            if len(fed) == 10:
                await asyncio.sleep(0.5)  # held up: the lease runs out
                assert await b.take_seeding()
                await b.record_seeded(1000)  # b seeded up to here, and died
                await b.seeding.release()
                clock.now += LEASE  # time to renew
            if len(fed) == 11:
                break
        await feed.aclose()
        assert fed == [*range(1, 11), 1001]  # not 11
        await a.redis.delete(*a.keys.values())
        await close(a, b)
        await ledger.close()

    run(scenario)


def test_a_kept_lease_that_ran_out_is_not_taken_back_though_free(redis_url: str) -> None:
    # The holder is held up past its lease; another worker takes it meanwhile, does its
    # turn and frees it. The first holder's late renewal finds the lease free, but does not
    # take it back and carry on (two looks, or two walks, at once): its turn is over.
    async def scenario() -> None:
        a, b = worker(redis_url, "a", lease=0.3), worker(redis_url, "b", lease=0.3)
        gate = asyncio.Event()

        async def held_up(_: float) -> None:
            await gate.wait()
            gate.clear()

        assert await a.reconciling.take()
        async with a.reconciling.kept(sleep=held_up):
            await asyncio.sleep(0.5)  # a's lease runs out
            assert await b.reconciling.take()
            await b.reconciling.release()
            gate.set()  # a's renewal, too late
            for _ in range(100):
                if not a.reconciling.held:
                    break
                await asyncio.sleep(0.01)
            assert not a.reconciling.held
            assert await a.redis.get(a.keys["reconciler"]) is None
        assert await b.reconciling.take()
        await close(a, b)

    run(scenario)


def test_a_look_whose_lease_ran_out_does_not_end_the_job(redis_url: str) -> None:
    # The look is held up past its lease (the database slow), another worker looks
    # meanwhile. The first, finding nothing by then, does not say the job is complete:
    # what it saw is not the last word.
    async def scenario() -> None:
        a, b = worker(redis_url, "a", lease=0.3), worker(redis_url, "b", lease=0.3)
        await a.finish_seeding()
        await b.set_idle(True)
        clock = FakeClock()

        async def look() -> int:
            await asyncio.sleep(0.5)  # past the lease, though kept: another takes it
            await a.redis.delete(a.keys["reconciler"])
            assert await b.reconciling.take()
            await asyncio.sleep(0.2)  # a's renewal comes, and fails
            return 0

        assert await asyncio.wait_for(settle(a, look, clock=clock, sleep=clock.sleep), 10) == 0
        assert not a.finished and not await a.complete()
        await a.redis.delete(*a.keys.values())
        await close(a, b)

    run(scenario)


def test_a_worker_that_takes_the_lease_just_after_the_seeding_ended_seeds_nothing(
    redis_url: str, tmp_path: Path
) -> None:
    # b looks: the seeding is not done; a finishes it and frees the lease; b takes the
    # free lease. It must not seed the job again from the place recorded.
    async def scenario() -> None:
        a, b = worker(redis_url, "a"), worker(redis_url, "b")
        assert await a.take_seeding()
        looks = []

        async def looked_just_before_a_finished() -> bool:
            looks.append(1)
            if len(looks) == 1:
                await a.finish_seeding()
                return False
            return bool(await a.redis.exists(a.keys["done"]))

        b.seeding_done = looked_just_before_a_finished  # type: ignore[method-assign]
        ids = parse_ids("1-10")
        ledger = Ledger.from_url(f"sqlite:///{tmp_path}/x.db")
        seeding = SharedSeeding(ids, Worklist(ids, ledger, lambda *_: None), b)
        fed = [pair async for pair in seeding.feed()]
        assert fed == []
        assert not await a.redis.exists(a.keys["seeder"])  # b freed the lease it took
        await a.redis.delete(*a.keys.values())
        await close(a, b)
        await ledger.close()

    run(scenario)
