"""A listing shared by workers: walked by one at a time, its listed ids queued for all."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

from ingest.distributed.coordinator import Coordinator
from ingest.distributed.jobs import job_id

if TYPE_CHECKING:
    from scrapy import Request

    from ingest.job import Job
    from ingest.listing.details import DetailsFeed
    from ingest.listing.pages import PagesOut
    from ingest.run import Run

logger = logging.getLogger(__name__)

STEP = 0.1  # seconds between looks at the pages out, for a listing without details


class SharedListing:
    """A listing walked by one worker at a time, the holder of the job's seeding lease,
    renewed while it walks: it walks from the page after the last one committed (the
    database says which, as on one machine), and with details queues the listed ids for
    every worker, from the place in the listing recorded in Redis, the shared queue kept
    short. The others stand by (with details, fetching what is queued); if the walker
    dies, one of them takes over once its lease has run out.

    The walker's pages never leave it (:class:`~ingest.distributed.jobs.JobScheduler`
    keeps them in its own queue): the walk's state is in its memory.
    """

    def __init__(
        self,
        coordinator: Coordinator,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.coordinator, self.clock, self.sleep = coordinator, clock, sleep

    @classmethod
    def from_crawler(cls, run: Run, job: Job, listing: str) -> SharedListing:
        """The sharing of the listing ``listing`` (its key), in the job its command names."""
        assert job.redis_url is not None
        key = job_id(job.api_url, listing, job.storing.database_url)
        return cls(Coordinator.from_url(job.redis_url, key, run.id))

    @property
    def walking(self) -> bool:
        """Whether this worker walks the listing now (a walker whose lease ran out does not)."""
        return self.coordinator.seeding.held

    async def requests(
        self,
        walk: Callable[[], AsyncIterator[Request]],
        details: DetailsFeed | None,
        pages: PagesOut,
    ) -> AsyncIterator[Request]:
        """While this worker holds the lease: the first pages of the pass ``walk`` yields
        (the others come from their answers), then, with ``details``, the requests for the
        listed ids as pages commit them; until the listing is walked and every listed id
        queued, by this worker or another."""

        async def turn() -> AsyncIterator[Request]:
            """This worker's turn at the walk, its lease renewed meanwhile: to the listing's
            end (and every listed id queued), or until the lease is lost."""
            coordinator, lease = self.coordinator, self.coordinator.seeding
            logger.info("Walking the listing for the job's workers")
            async with lease.kept():
                async for request in walk():
                    yield request
                if details is not None:
                    async for request in self.queued(details):
                        yield request
                while details is None and pages.out > 0 and lease.held:
                    await self.sleep(STEP)
                if not lease.held:
                    logger.warning("The listing's lease ran out: another worker walks it")
                    return
                await coordinator.finish_seeding()
                if details is None:
                    await coordinator.mark_complete()  # a listing's items are stored with it

        async for request in self.coordinator.seeding_turns(
            turn, clock=self.clock, sleep=self.sleep
        ):
            yield request

    async def queued(self, details: DetailsFeed) -> AsyncIterator[Request]:
        """The requests for the listed ids, from the place recorded (a successor's: where
        the last walker got to), the place recorded as each chunk is queued."""
        coordinator = self.coordinator
        recorded = after = await coordinator.seeded()
        if after:
            logger.info("Queueing the listed ids from place %d in the listing", after + 1)
        async for request in details.listed_requests(after):
            if not coordinator.seeding.held:
                return
            if details.reached != recorded:
                recorded = details.reached
                await coordinator.record_seeded(recorded)
            await coordinator.room(self.sleep)
            yield request
        if coordinator.seeding.held and details.reached != recorded:
            await coordinator.record_seeded(details.reached)
