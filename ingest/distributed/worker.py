"""A worker of a distributed job: its heartbeat, and finishing the job with the others."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import TYPE_CHECKING

from scrapy import signals
from scrapy.exceptions import NotConfigured

from ingest.distributed.coordinator import HEARTBEAT, Coordinator, Patience
from ingest.distributed.unavailable import AGAIN, DOWN
from ingest.extensions.reconcile import IdleLook, queue_lost
from ingest.job import Job
from ingest.progress.humanize import duration

if TYPE_CHECKING:
    from typing import Self

    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)


async def settle(
    coordinator: Coordinator,
    look: Callable[[], Awaitable[int]],
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    working: Callable[[], bool] = lambda: False,
) -> int:
    """This worker is idle: wait for work, or for the job to be complete.

    When every live worker is idle, the queue empty and no worker seeding, nothing is in
    flight but with dead workers: one worker, holding the lease of the look for lost ids
    (renewed while it looks), queues again the ids still without an outcome (``look``),
    and when there are none the job is complete. (Seeding not done and no worker seeding:
    Redis lost where it was; the look queues every id without an outcome, which is the
    seeding.) Waiting longer than
    :data:`~ingest.distributed.coordinator.PATIENCE`, it says in the log what for, and
    again as often. Should this worker's engine take a request meanwhile (``working``: it
    took one from the shared queue itself, and said it was busy), it returns: its next
    idle settles again, idle once more (else it would stay "busy" to every worker, and
    the job wait for it forever).
    """
    with suppress(*DOWN):  # the heartbeat says it anyway
        await coordinator.set_idle(True)
    patience = Patience(clock)
    while True:
        if working():
            return 0
        try:
            if await coordinator.complete():
                coordinator.finished = True
                return 0
            if await coordinator.queued():
                return 0  # work for the engine
            if await coordinator.everyone_idle():
                # A second look, a heartbeat later: a worker that has just taken a request
                # says so within that time.
                await sleep(HEARTBEAT)
                if await coordinator.everyone_idle() and await coordinator.reconciling.take():
                    async with coordinator.reconciling.kept():
                        scheduled = await look()
                        if not coordinator.reconciling.held:
                            # Held up past its lease: another worker may look meanwhile;
                            # what this one found is not the job's last word.
                            logger.warning("The look for lost ids ran out of its lease")
                            return scheduled
                        if not scheduled:
                            await coordinator.mark_complete()
                            coordinator.finished = True
                        elif not await coordinator.seeding_done():
                            # Its record lost with Redis: the look queued every id it had.
                            await coordinator.finish_seeding()
                        return scheduled
            if (waited := patience.due()) is not None:
                waits = await coordinator.waiting_for()
                logger.info("Idle for %s, waiting for %s", duration(waited), waits)
        except DOWN as exc:
            coordinator.outage.began(exc)
            await sleep(AGAIN)
            continue
        coordinator.outage.ended()
        await sleep(1.0)


class Worker(IdleLook):
    """With ``DISTRIBUTED``: heartbeats while the spider is open, "busy" as soon as a
    request goes (or another worker could take this one's requests in flight for lost
    ones), and at idle, :func:`settle` with the others."""

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        if not Job.of(crawler).distributed:
            raise NotConfigured("DISTRIBUTED is off")
        worker = cls(crawler)
        crawler.signals.connect(worker.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(worker.spider_closed, signal=signals.spider_closed)
        crawler.signals.connect(worker.busy, signal=signals.request_reached_downloader)
        return worker

    @property
    def coordinator(self) -> Coordinator:
        assert self.run.coordinator is not None
        return self.run.coordinator

    def spider_opened(self) -> None:
        logger.info("Worker %s of job %s", self.coordinator.worker, self.coordinator.job)
        self.coordinator.start()

    async def spider_closed(self) -> None:
        await self.coordinator.leave()

    def busy(self) -> None:
        if self.coordinator.idle:
            self._beat = asyncio.ensure_future(self.coordinator.set_idle(False))

    async def look(self) -> int:
        coordinator = self.coordinator

        async def room() -> bool:
            await coordinator.room(asyncio.sleep)  # the shared queue kept short
            return coordinator.reconciling.held  # the look's lease ran out: it stops

        def working() -> bool:
            engine = self.crawler.engine
            return engine is not None and not engine.spider_is_idle()

        async def look() -> int:
            return await queue_lost(self.crawler, self.run, room)

        return await settle(coordinator, look, working=working)

    def finished(self, scheduled: int | None) -> bool:
        return self.coordinator.finished
