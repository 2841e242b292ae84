"""Seeding the job's shared queue: one worker at a time, from where the last one got to."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING

from ingest.distributed.coordinator import HIGH_WATER, Coordinator
from ingest.distributed.jobs import job_id
from ingest.fetching.worklist import Worklist

if TYPE_CHECKING:
    from typing import Self

    from scrapy.crawler import Crawler

    from ingest.fetching.ids import IdSource
    from ingest.job import Job
    from ingest.run import Run

logger = logging.getLogger(__name__)

CHUNK_BEHIND = 500  # ids read ahead of what is queued, at most (the worklist's chunk)


class Counted:
    """An iterator that counts what has been taken from it."""

    def __init__(self, items: Iterator[str]) -> None:
        self.items, self.taken = items, 0

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        item = next(self.items)
        self.taken += 1
        return item


class SharedSeeding:
    """The ids of the job as requests in the shared queue, by one worker at a time
    (the holder of the seeding lease), the queue kept short. Where seeding got to is
    recorded a chunk behind: ids read but not yet queued are queued again by a
    successor, and the shared duplicate filter drops the repeats."""

    def __init__(
        self,
        ids: IdSource,
        worklist: Worklist,
        coordinator: Coordinator,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        per_request: Callable[[], int] = lambda: 1,
    ) -> None:
        """``per_request``: how many ids one request asks for now (the batch size)."""
        self.ids, self.worklist, self.coordinator = ids, worklist, coordinator
        self.clock, self.sleep, self.per_request = clock, sleep, per_request
        self.job = coordinator.job

    @classmethod
    def from_crawler(cls, crawler: Crawler, run: Run, job: Job) -> Self:
        """The seeding of ``run``'s ids, in the job its command names."""
        assert run.ids is not None and isinstance(run.worklist, Worklist)
        assert job.redis_url is not None
        key = job_id(job.api_url, run.ids, job.storing.database_url)
        coordinator = Coordinator.from_url(job.redis_url, key, run.id)
        if job.batching is None:
            return cls(run.ids, run.worklist, coordinator)
        return cls(run.ids, run.worklist, coordinator, per_request=lambda: run.requests.sizer.size)

    async def feed(self) -> AsyncIterator[tuple[str, str | None]]:
        """The job's ids that need a request, while this worker holds the seeding lease;
        while another does, none (see :meth:`Coordinator.seeding_turns`)."""
        async for pair in self.coordinator.seeding_turns(
            self.seed, clock=self.clock, sleep=self.sleep
        ):
            yield pair

    async def seed(self) -> AsyncIterator[tuple[str, str | None]]:
        """This worker's turn at the seeding: from where the last one recorded, until the
        ids are all queued, or the lease is lost (another worker then goes on)."""
        coordinator, worklist = self.coordinator, self.worklist
        renew_every = coordinator.seeding.seconds / 3
        skip = await coordinator.seeded()
        logger.info("Seeding the job's queue from id number %d", skip + 1)
        ids = Counted(itertools.islice(iter(self.ids), skip, None))
        renewed = self.clock()
        room = 0  # ids that may go before the queue's length is read again
        async for id_, state in worklist.todo(ids):
            # The length read once per room's worth of ids, not once an id: a round trip
            # each id was most of the job's Redis commands.
            while room <= 0:
                room = (HIGH_WATER - await coordinator.queued()) * self.per_request()
                if room > 0 or self.clock() - renewed > renew_every:
                    break
                await self.sleep(0.2)
            room -= 1
            if self.clock() - renewed > renew_every:
                if not await coordinator.seeding.renew():
                    # It ran out (the database or Redis held this worker up): another
                    # worker may have seeded meanwhile, from the place recorded. The next
                    # turn starts from the place recorded then, not from here.
                    logger.warning("The seeding's lease ran out: seeding again from its record")
                    return
                await coordinator.record_seeded(max(skip, skip + ids.taken - CHUNK_BEHIND))
                renewed = self.clock()
            worklist.count("ids/scheduled")
            yield id_, state
        await coordinator.finish_seeding()
        logger.info("The job's ids are all queued")
