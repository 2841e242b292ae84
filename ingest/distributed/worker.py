"""A worker of a distributed job: its heartbeat, and finishing the job with the others."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from scrapy import signals
from scrapy.exceptions import NotConfigured

from ingest.distributed.coordinator import HEARTBEAT, Coordinator
from ingest.extensions.reconcile import IdleLook, queue_lost
from ingest.job import Job

if TYPE_CHECKING:
    from typing import Self

    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)


async def settle(coordinator: Coordinator, look: Callable[[], Awaitable[int]]) -> int:
    """This worker is idle: wait for work, or for the job to be complete.

    When every live worker is idle, the queue empty and seeding done, nothing is in
    flight but with dead workers: one worker queues again the ids still without an
    outcome (``look``), and when there are none the job is complete.
    """
    await coordinator.set_idle(True)
    while True:
        if await coordinator.complete():
            coordinator.finished = True
            return 0
        if await coordinator.queued():
            return 0  # work for the engine
        if await coordinator.everyone_idle():
            # A second look, a heartbeat later: a worker that has just taken a request
            # says so within that time.
            await asyncio.sleep(HEARTBEAT)
            if await coordinator.everyone_idle() and await coordinator.reconciling.acquire():
                try:
                    scheduled = await look()
                    if not scheduled:
                        await coordinator.mark_complete()
                        coordinator.finished = True
                    return scheduled
                finally:
                    await coordinator.reconciling.release()
        await asyncio.sleep(1.0)


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
        assert self.run.shared is not None
        return self.run.shared.coordinator

    def spider_opened(self) -> None:
        logger.info("Worker %s of job %s", self.coordinator.worker, self.coordinator.job)
        self.coordinator.start()

    async def spider_closed(self) -> None:
        await self.coordinator.leave()

    def busy(self) -> None:
        if self.coordinator.idle:
            self._beat = asyncio.ensure_future(self.coordinator.set_idle(False))

    async def look(self) -> int:
        return await settle(self.coordinator, lambda: queue_lost(self.crawler, self.run))

    def finished(self, scheduled: int | None) -> bool:
        return self.coordinator.finished
