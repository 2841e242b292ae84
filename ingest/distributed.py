"""Several workers, one job: a shared queue, ids seeded once, and what a dead worker lost found.

Workers started with the same command share, through Redis, scrapy-redis's request
queue and duplicate filter (keyed by the job, not just the spider), the rate
limiter's bucket, and a little coordination:

- **seeding**: one worker at a time holds a lease and turns the id set into
  requests, lazily, keeping the shared queue short; where it got to is in Redis,
  so if it dies another worker takes over from there;
- **liveness**: every worker writes a heartbeat, busy or idle;
- **completion**: when seeding is done, the queue is empty and every live worker
  is idle, nothing is in flight anywhere but with dead workers. One worker then
  looks in the database for ids of the set without an outcome and queues them
  again; when that finds nothing, the job is complete and every worker stops.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from scrapy.exceptions import ScrapyDeprecationWarning
from scrapy.settings import SETTINGS_PRIORITIES
from scrapy_redis.dupefilter import RFPDupeFilter
from scrapy_redis.scheduler import Scheduler

from ingest.config import IdRanges, IdSource
from ingest.masking import mask_url

if TYPE_CHECKING:
    from scrapy import Request, Spider
    from scrapy.settings import BaseSettings

logger = logging.getLogger(__name__)

# scrapy-redis 0.9.1 passes ``spider=`` to the stats collector, deprecated in Scrapy
# 2.19: harmless, and these two calls are all that warn.
warnings.filterwarnings(
    "ignore",
    message=r"Passing a 'spider' argument to StatsCollector\.inc_value\(\) is deprecated",
    category=ScrapyDeprecationWarning,
    module=r"scrapy_redis\.scheduler",
)

HEARTBEAT = 2.0  # seconds between heartbeats
DEAD_AFTER = 10.0  # a worker silent this long is dead
LEASE = 15.0  # seconds a seeding lease lasts unless renewed
KEEP = 7 * 24 * 3600  # a job's keys outlive its last heartbeat by this much
HIGH_WATER = 500  # seeding pauses while the shared queue holds this many requests
CHUNK_BEHIND = 500  # ids read ahead of what is queued, at most (the spider's chunk)


def job_id(url_template: str, ids: IdSource, database_url: str) -> str:
    """The same command gives the same job, on any machine: an id file is known by
    its ids, not by its path."""
    digest = hashlib.sha1(usedforsecurity=False)
    for part in (url_template, mask_url(database_url), type(ids).__name__):
        digest.update(part.encode() + b"\0")
    if isinstance(ids, IdRanges):
        digest.update(ids.describe().encode())
    else:
        for id_ in ids:
            digest.update(id_.encode() + b"\n")
    return digest.hexdigest()[:12]


def job_keys(job: str) -> dict[str, str]:
    prefix = f"ingest:{{{job}}}"
    return {
        "queue": f"{prefix}:requests",
        "seen": f"{prefix}:seen",
        "workers": f"{prefix}:workers",
        "seeder": f"{prefix}:seeder",
        "seeded": f"{prefix}:seeded",
        "done": f"{prefix}:seeding-done",
        "complete": f"{prefix}:complete",
        "reconciler": f"{prefix}:reconciler",
    }


class DistributedAddon:
    """With ``DISTRIBUTED``: scrapy-redis's scheduler (our job-keyed subclass), a
    persistent queue, and the Redis rate-limit backend."""

    def update_settings(self, settings: BaseSettings) -> None:
        if not settings.getbool("DISTRIBUTED"):
            return
        project = SETTINGS_PRIORITIES["project"]
        for name, value in {
            "SCHEDULER": "ingest.distributed.JobScheduler",
            "DUPEFILTER_CLASS": "scrapy_redis.dupefilter.RFPDupeFilter",
            "SCHEDULER_PERSIST": True,
            "RATELIMIT_BACKEND": "redis",
        }.items():
            if (settings.getpriority(name) or 0) <= project:
                settings.set(name, value, priority="project")


class JobScheduler(Scheduler):
    """scrapy-redis's scheduler, with its queue and duplicate filter keyed by the job."""

    def open(self, spider: Spider) -> Any:
        keys = job_keys(spider.job)  # type: ignore[attr-defined]
        self.queue_key = keys["queue"]
        self.df = RFPDupeFilter(self.server, key=keys["seen"])
        return super().open(spider)


class Coordinator:
    """The worker's side of the job's coordination, over an asyncio Redis client."""

    def __init__(self, redis: aioredis.Redis, job: str, worker: str) -> None:
        self.redis, self.job, self.worker = redis, job, worker
        self.keys = job_keys(job)
        self.idle = False
        self.finished = False
        self._beating: asyncio.Task[None] | None = None

    @classmethod
    def from_url(cls, url: str, job: str, worker: str) -> Coordinator:
        return cls(aioredis.Redis.from_url(url, decode_responses=True), job, worker)

    async def now(self) -> float:
        seconds, micros = await self.redis.time()
        return seconds + micros / 1e6

    # -------------------------------------------------------------- liveness

    async def beat(self) -> None:
        state = json.dumps({"idle": self.idle, "t": await self.now()})
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys["workers"], self.worker, state)
            for key in self.keys.values():
                pipe.expire(key, KEEP)
            await pipe.execute()

    def start(self) -> None:
        async def loop() -> None:
            while True:
                try:
                    await self.beat()
                except Exception:
                    logger.warning("Heartbeat to Redis failed", exc_info=True)
                await asyncio.sleep(HEARTBEAT)

        self._beating = asyncio.ensure_future(loop())

    async def live_workers(self) -> dict[str, bool]:
        """worker -> idle, for the workers heard from lately."""
        now = await self.now()
        workers = await self.redis.hgetall(self.keys["workers"])
        live: dict[str, bool] = {}
        for worker, raw in workers.items():
            state = json.loads(raw)
            if now - state["t"] < DEAD_AFTER:
                live[str(worker)] = bool(state["idle"])
        return live

    async def set_idle(self, idle: bool) -> None:
        if idle != self.idle:
            self.idle = idle
            await self.beat()

    # -------------------------------------------------------------- seeding

    async def take_seeding(self) -> bool:
        """Hold the seeding lease (again); False while another live worker holds it."""
        held = await self.redis.set(self.keys["seeder"], self.worker, px=int(LEASE * 1000), nx=True)
        if held:
            return True
        if await self.redis.get(self.keys["seeder"]) == self.worker:
            await self.redis.pexpire(self.keys["seeder"], int(LEASE * 1000))
            return True
        return False

    async def seeded(self) -> int:
        return int(await self.redis.get(self.keys["seeded"]) or 0)

    async def record_seeded(self, count: int) -> None:
        await self.redis.set(self.keys["seeded"], count)

    async def seeding_done(self) -> bool:
        return bool(await self.redis.exists(self.keys["done"]))

    async def finish_seeding(self) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.keys["done"], 1)
            pipe.delete(self.keys["seeder"])
            await pipe.execute()

    async def queued(self) -> int:
        """Requests in the shared queue (scrapy-redis's priority queue is a sorted set)."""
        return int(await self.redis.zcard(self.keys["queue"]))

    # -------------------------------------------------------------- completion

    async def everyone_idle(self) -> bool:
        if not await self.seeding_done() or await self.queued():
            return False
        live = await self.live_workers()
        return all(live.values()) and self.worker in live

    async def take_reconciling(self) -> bool:
        return bool(await self.redis.set(self.keys["reconciler"], self.worker, px=60_000, nx=True))

    async def release_reconciling(self) -> None:
        await self.redis.delete(self.keys["reconciler"])

    async def complete(self) -> bool:
        return bool(await self.redis.exists(self.keys["complete"]))

    async def mark_complete(self) -> None:
        await self.redis.set(self.keys["complete"], 1)

    async def leave(self) -> None:
        """This worker is done: the last one out removes the job's keys, so that the
        same command run later starts afresh (and tries failed ids again)."""
        if self._beating is not None:
            self._beating.cancel()
        await self.redis.hdel(self.keys["workers"], self.worker)
        if await self.complete() and not await self.live_workers():
            await self.redis.delete(*self.keys.values())
        await self.redis.aclose()


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


async def seed_shared(spider: Any, coordinator: Coordinator) -> AsyncIterator[Request]:
    """The ids of the set as requests in the shared queue, by one worker at a time,
    from where the last seeder got to, the queue kept short."""
    while not await coordinator.seeding_done():
        if not await coordinator.take_seeding():
            await asyncio.sleep(LEASE / 3)
            continue
        skip = await coordinator.seeded()
        if skip:
            logger.info("Seeding the job's queue from id number %d", skip + 1)
        ids = Counted(itertools.islice(iter(spider.ids), skip, None))
        renewed = time.monotonic()
        async for id_, state in spider.todo(ids):
            while await coordinator.queued() >= HIGH_WATER:
                await asyncio.sleep(0.2)
                if time.monotonic() - renewed > LEASE / 3:
                    break
            if time.monotonic() - renewed > LEASE / 3:
                # Record progress a chunk behind: ids read but not yet queued are
                # queued again by a successor; the duplicate filter drops repeats.
                await coordinator.record_seeded(max(skip, skip + ids.taken - CHUNK_BEHIND))
                if not await coordinator.take_seeding():
                    break
                renewed = time.monotonic()
            spider.crawler.stats.inc_value("ids/scheduled")
            yield spider.request_for(id_, dont_filter=state is not None)
        else:
            await coordinator.finish_seeding()
            logger.info("The job's ids are all queued")


async def settle(spider: Any, coordinator: Coordinator) -> int:
    """This worker is idle: wait for work, or for the job to be complete.

    When every live worker is idle, the queue empty and seeding done, nothing is
    in flight but with dead workers: one worker queues again the ids still without
    an outcome, and when there are none the job is complete.
    """
    await coordinator.set_idle(True)
    while True:
        if await coordinator.complete():
            coordinator.finished = True
            return 0
        if await coordinator.queued():
            return 0  # work for the engine
        if await coordinator.everyone_idle():
            # A second look, a heartbeat later: a worker that has just taken a
            # request says so within that time.
            await asyncio.sleep(HEARTBEAT)
            if await coordinator.everyone_idle() and await coordinator.take_reconciling():
                try:
                    scheduled = await spider.reconcile()
                    if not scheduled:
                        await coordinator.mark_complete()
                        coordinator.finished = True
                    return scheduled
                finally:
                    await coordinator.release_reconciling()
        await asyncio.sleep(1.0)
