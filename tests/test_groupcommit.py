"""Group commit and the ledger beneath it: batches, refusals singled out, outages waited out.

The outages are a fake store's, on a fake clock; the real databases' are in test_database.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

import pytest

from ingest.items import STATES, STORED, Outcome
from ingest.stopping.waiting import Stopping, Waiter
from ingest.storage.base import StorageRefused, StorageUnavailable
from ingest.storage.groupcommit import GroupCommit, Unwritten
from ingest.storage.ledger import Ledger, outage_backoff
from tests.support.clock import FakeClock

T = TypeVar("T")


def outcome(id_: str, data: str = "{}") -> Outcome:
    return Outcome(id_, STORED, f"http://api/items/{id_}", 200, data)


def outcomes(*ids: str) -> list[Outcome]:
    return [outcome(id_) for id_ in ids]


async def add_all(commit: GroupCommit, batch: list[Outcome]) -> list[BaseException | None]:
    return await asyncio.gather(*(commit.add(o) for o in batch), return_exceptions=True)


# ---------------------------------------------------------------- batching


def test_group_commit_batches_what_arrives_during_a_write() -> None:
    batches: list[list[str]] = []

    async def write(batch: list[Outcome]) -> None:
        batches.append([o.id for o in batch])
        await asyncio.sleep(0.01)

    async def scenario() -> None:
        commit = GroupCommit(write, max_batch=3)
        first = asyncio.ensure_future(commit.add(outcome("0")))
        await asyncio.sleep(0.001)  # its write is under way
        await asyncio.gather(*(commit.add(outcome(str(i))) for i in range(1, 7)))
        await first
        await commit.flush()

    asyncio.run(scenario())
    # The first outcome goes alone; the six that arrived meanwhile go in batches of 3.
    assert batches == [["0"], ["1", "2", "3"], ["4", "5", "6"]]


def test_group_commit_lingers_for_more_outcomes_before_writing() -> None:
    batches: list[list[str]] = []

    async def write(batch: list[Outcome]) -> None:
        batches.append([o.id for o in batch])

    async def scenario() -> None:
        commit = GroupCommit(write, max_batch=10, linger=0.3)
        first = asyncio.ensure_future(commit.add(outcome("0")))
        await asyncio.sleep(0.05)
        assert batches == []  # still lingering
        await asyncio.gather(commit.add(outcome("1")), first)

    asyncio.run(scenario())
    assert batches == [["0", "1"]]


def test_group_commit_writes_a_full_batch_without_lingering() -> None:
    batches: list[list[str]] = []

    async def write(batch: list[Outcome]) -> None:
        batches.append([o.id for o in batch])

    async def scenario() -> None:
        commit = GroupCommit(write, max_batch=3, linger=60.0)
        adds = (commit.add(outcome(str(i))) for i in range(3))
        await asyncio.wait_for(asyncio.gather(*adds), timeout=5.0)

    asyncio.run(scenario())
    assert batches == [["0", "1", "2"]]


def test_group_commit_reports_a_failed_write_to_every_waiter() -> None:
    async def write(batch: list[Outcome]) -> None:
        raise OSError("disk gone")

    async def scenario() -> list[BaseException | None]:
        return await add_all(GroupCommit(write, max_batch=10), outcomes("0", "1", "2"))

    assert [type(r) for r in asyncio.run(scenario())] == [OSError, OSError, OSError]


def test_an_unavailable_database_fails_the_batch_whole_without_splitting_it() -> None:
    # What a write that does not wait out outages (not the ledger's) leaves to its callers.
    batches: list[list[str]] = []

    async def write(batch: list[Outcome]) -> None:
        batches.append([o.id for o in batch])
        raise StorageUnavailable("cannot write to DATABASE_URL db: connection lost")

    results = asyncio.run(add_all(GroupCommit(write, max_batch=10), outcomes("0", "1", "2")))
    assert [type(r) for r in results] == [StorageUnavailable] * 3
    assert batches == [["0", "1", "2"]]


# ---------------------------------------------------------------- the ledger, on a fake clock


class FlakyStore:
    """A store whose database is down from ``down`` until ``back`` on the clock; it refuses
    the outcomes whose data is "refused".

    Like a real connection the server dropped, its connection stays broken, back or not,
    until it is closed and made again.
    """

    url = "fake://db"

    def __init__(self, clock: FakeClock, down: float = 0.0, back: float = 0.0) -> None:
        self.clock, self.down, self.back = clock, down, back
        self.rows: dict[str, tuple[str, float]] = {}
        self.written: list[list[str]] = []
        self.connected = self.broken = False
        self.connects = 0  # tries to connect, made or not

    def _check(self, what: str) -> None:
        if self.back != float("inf"):  # a test that is stuck fails instead of hanging
            assert self.clock.now < self.back + 3600, "still failing an hour after it was back"
        if not self.connected:
            raise StorageUnavailable(f"DATABASE_URL {self.url} is not connected")
        self.broken = self.broken or self.down <= self.clock.now < self.back
        if self.broken:
            raise StorageUnavailable(f"cannot {what} DATABASE_URL {self.url}: connection lost")

    def connect(self, *, create: bool = True) -> None:
        if self.connected:
            return
        self.connects += 1
        if self.down <= self.clock.now < self.back:
            raise StorageUnavailable(f"cannot connect to DATABASE_URL {self.url}: refused")
        self.connected = True

    def write(self, outcomes: Sequence[Outcome]) -> None:
        self._check("write to")
        if any(o.data == "refused" for o in outcomes):
            raise StorageRefused(f"cannot write to DATABASE_URL {self.url}: bad value")
        self.written.append([o.id for o in outcomes])
        self.rows |= {o.id: (o.state, o.fetched_at) for o in outcomes}

    def states(self, ids: Sequence[str]) -> dict[str, tuple[str, float]]:
        self._check("read")
        return {id_: self.rows[id_] for id_ in ids if id_ in self.rows}

    def counts(self) -> dict[str, int]:
        self._check("read")
        states = [state for state, _ in self.rows.values()]
        return {state: states.count(state) for state in STATES}

    def close(self) -> None:
        self.connected = self.broken = False


class Events:
    """What the ledger and group commit told, as a timeline; ``waiting`` as the pipeline
    counts it, from the group commit."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.commit: GroupCommit | None = None
        self.timeline: list[tuple[str, float, float]] = []

    def waiting(self) -> int:
        return 0 if self.commit is None else self.commit.waiting

    def outage_began(self, error: StorageUnavailable) -> None:
        self.timeline.append(("began", self.clock.now, self.waiting()))

    def outage_ended(self, seconds: float) -> None:
        self.timeline.append(("ended", seconds, self.waiting()))

    def gave_up(self, unwritten: int) -> None:
        self.timeline.append(("gave up", self.clock.now, unwritten))


def ledger_of(
    store: FlakyStore, clock: FakeClock, events: Events, stop_at: float = float("inf")
) -> Ledger:
    waiter = Waiter(lambda: clock.now >= stop_at, step=60, spin=0, clock=clock, sleep=clock.sleep)
    return Ledger(store, sleep=waiter.sleep, clock=clock, listener=events)


def run(ledger: Ledger, work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` in an event loop of its own, then close the ledger (and its thread)."""

    async def scenario() -> T:
        try:
            return await work
        finally:
            await ledger.close()

    return asyncio.run(scenario())


def test_outage_backoff_doubles_from_half_a_second_to_thirty() -> None:
    assert [outage_backoff(n) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert outage_backoff(100_000) == 30  # a day-long outage


def test_a_write_is_retried_through_an_outage_reconnecting_each_time() -> None:
    clock = FakeClock(now=0.0)
    store, events = FlakyStore(clock, down=1.0, back=6.0), Events(clock)
    ledger = ledger_of(store, clock, events)

    async def scenario() -> None:
        await ledger.open()
        clock.now = 1.0  # the database goes away
        await ledger.write(outcomes("1", "2"))

    run(ledger, scenario())
    # Failed at 1 (on the old connection, then on a new one), 1.5, 2.5 and 4.5; written at 8.5.
    assert clock.slept == [0.5, 1.0, 2.0, 4.0]
    assert events.timeline == [("began", 1.0, 0), ("ended", 7.5, 0)]
    assert store.written == [["1", "2"]]
    assert store.connects == 1 + 1 + 4  # the first, a new one at once, then one before each retry


def test_a_connection_a_restart_broke_is_made_again_at_once_with_no_outage_told() -> None:
    clock = FakeClock(now=0.0)
    store, events = FlakyStore(clock, down=1.0, back=2.0), Events(clock)
    ledger = ledger_of(store, clock, events)

    async def scenario() -> dict[str, tuple[str, float]]:
        await ledger.open()
        await ledger.write(outcomes("1"))
        clock.now = 1.5
        with contextlib.suppress(StorageUnavailable):
            store._check("read")  # the restart breaks the connection, unused meanwhile
        clock.now = 20.0  # the database has been back for 18 s when it is next read
        return await ledger.states(["1"])

    assert run(ledger, scenario()) == {"1": (STORED, 0.0)}
    assert clock.slept == [] and events.timeline == []  # no outage told, no wait


def test_a_read_is_retried_through_an_outage() -> None:
    clock = FakeClock(now=0.0)
    store, events = FlakyStore(clock, down=10.0, back=12.0), Events(clock)
    ledger = ledger_of(store, clock, events)

    async def scenario() -> tuple[dict[str, tuple[str, float]], dict[str, int]]:
        await ledger.open()
        await ledger.write(outcomes("1"))
        clock.now = 10.0  # the database goes away
        states = await ledger.states(["1", "2"])
        return states, await ledger.counts()

    states, counts = run(ledger, scenario())
    assert states == {"1": (STORED, 0.0)}
    assert counts == {"stored": 1, "not_found": 0, "invalid": 0, "failed": 0}
    assert clock.slept == [0.5, 1.0, 2.0]
    assert events.timeline == [("began", 10.0, 0), ("ended", 3.5, 0)]


def test_an_outage_is_told_once_whichever_calls_notice_it() -> None:
    clock = FakeClock(now=0.0)
    store, events = FlakyStore(clock, down=0.0, back=3.0), Events(clock)
    ledger = ledger_of(store, clock, events)

    async def scenario() -> list[object]:
        return list(
            await asyncio.gather(
                ledger.write(outcomes("1")), ledger.states(["1"]), ledger.write(outcomes("2"))
            )
        )

    results = run(ledger, scenario())
    assert results[1] in ({}, {"1": (STORED, 0.0)})
    assert [event for event, *_ in events.timeline] == ["began", "ended"]
    assert sorted(store.written) == [["1"], ["2"]]


def test_a_stop_ends_the_retries() -> None:
    clock = FakeClock(now=0.0)
    store, events = FlakyStore(clock, down=0.0, back=float("inf")), Events(clock)
    ledger = ledger_of(store, clock, events, stop_at=2.0)
    with pytest.raises(Stopping):
        run(ledger, ledger.states(["1"]))
    # Failed at 0, 0.5 and 1.5; the crawl was stopping when the third wait ended.
    assert clock.slept == [0.5, 1.0, 2.0]
    assert events.timeline == [("began", 0.0, 0)]


def test_a_refusal_is_the_callers_at_once() -> None:
    clock = FakeClock(now=0.0)
    store, events = FlakyStore(clock), Events(clock)
    ledger = ledger_of(store, clock, events)
    with pytest.raises(StorageRefused, match="bad value"):
        run(ledger, ledger.write([outcome("1", data="refused")]))
    assert clock.slept == [] and events.timeline == []


# ---------------------------------------------------------------- group commit over the ledger


def group_commit(ledger: Ledger, events: Events) -> GroupCommit:
    commit = GroupCommit(ledger.write, max_batch=10, gave_up=events.gave_up)
    events.commit = commit
    return commit


def test_outcomes_kept_through_an_outage_are_written_when_the_database_is_back() -> None:
    clock = FakeClock(now=0.0)
    store, events = FlakyStore(clock, down=0.0, back=5.0), Events(clock)
    ledger = ledger_of(store, clock, events)
    commit = group_commit(ledger, events)

    async def scenario() -> list[BaseException | None]:
        first = asyncio.ensure_future(commit.add(outcome("1")))
        while not events.timeline:  # the outage shows
            await asyncio.sleep(0)
        later = await add_all(commit, outcomes("2", "3"))
        await first
        return [first.exception(), *later]

    assert run(ledger, scenario()) == [None, None, None]
    # Retried after 0.5, 1 and 2 s (at 0.5, 1.5 and 3.5), then after 4 s: back at 7.5.
    assert clock.slept == [0.5, 1.0, 2.0, 4.0]
    assert events.timeline == [("began", 0.0, 1), ("ended", 7.5, 3)]
    # The batch went through whole, then what arrived during the outage.
    assert store.written == [["1"], ["2", "3"]]


def test_a_stop_during_an_outage_leaves_every_outcome_unwritten() -> None:
    clock = FakeClock(now=0.0)
    store, events = FlakyStore(clock, down=0.0, back=float("inf")), Events(clock)
    ledger = ledger_of(store, clock, events, stop_at=2.0)
    results = run(ledger, add_all(group_commit(ledger, events), outcomes("1", "2", "3")))
    assert [type(r) for r in results] == [Unwritten, Unwritten, Unwritten]
    assert clock.slept == [0.5, 1.0, 2.0]
    assert events.timeline == [("began", 0.0, 3), ("gave up", 3.5, 3)]
    assert store.written == []


def test_a_stopping_crawl_does_not_wait_for_the_database_at_all() -> None:
    clock = FakeClock(now=0.0)
    store, events = FlakyStore(clock, down=0.0, back=float("inf")), Events(clock)
    ledger = ledger_of(store, clock, events, stop_at=0.0)
    results = run(ledger, add_all(group_commit(ledger, events), outcomes("1", "2")))
    assert [type(r) for r in results] == [Unwritten, Unwritten]
    assert clock.slept == []
    assert events.timeline == [("began", 0.0, 2), ("gave up", 0.0, 2)]


def test_an_outcome_the_database_refuses_fails_alone_and_is_never_retried() -> None:
    clock = FakeClock(now=0.0)
    store, events = FlakyStore(clock), Events(clock)
    ledger = ledger_of(store, clock, events)
    commit = group_commit(ledger, events)
    batch = outcomes("1", "2", "3", "4", "5", "6")
    batch[4] = outcome("5", data="refused")

    async def scenario() -> list[BaseException | None]:
        first = asyncio.ensure_future(commit.add(outcome("0")))
        await asyncio.sleep(0)  # its write is under way: the six go in one batch
        later = await add_all(commit, batch)
        await first
        return [first.exception(), *later]

    results = run(ledger, scenario())
    assert [type(r).__name__ for r in results] == ["NoneType"] * 5 + ["StorageRefused", "NoneType"]
    assert clock.slept == [] and events.timeline == []
    # Halved until the culprit was alone; the others written in order.
    assert store.written == [["0"], ["1", "2", "3"], ["4"], ["6"]]
