"""A worker's side of the job's coordination in Redis: heartbeats, leases, completion."""

from __future__ import annotations

import asyncio
import json
import logging
from contextlib import suppress

import redis.asyncio as aioredis
from redis.exceptions import LockError

from ingest.distributed.jobs import job_keys

logger = logging.getLogger(__name__)

HEARTBEAT = 2.0  # seconds between heartbeats
DEAD_AFTER = 10.0  # a worker silent this long is dead
LEASE = 15.0  # seconds a seeding lease lasts unless renewed
RECONCILING = 60.0  # seconds a look for lost ids may take before another worker may try
KEEP = 7 * 24 * 3600  # a job's keys outlive its last heartbeat by this much


class Coordinator:
    """Liveness, the seeding lease, and the job's completion, over an asyncio client.

    Leases are redis-py locks: acquired, renewed and released atomically, each held
    under a token of its own, so a worker never renews or frees another's lease.
    """

    def __init__(self, client: aioredis.Redis, job: str, worker: str) -> None:
        self.redis, self.job, self.worker = client, job, worker
        self.keys = job_keys(job)
        self.idle = False
        self.finished = False
        self.seeding = client.lock(self.keys["seeder"], timeout=LEASE, blocking=False)
        self.reconciling = client.lock(self.keys["reconciler"], timeout=RECONCILING, blocking=False)
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
        if await self.seeding.owned():
            try:
                await self.seeding.extend(LEASE, replace_ttl=True)
                return True
            except LockError:
                return False
        return bool(await self.seeding.acquire(blocking=False))

    async def seeded(self) -> int:
        return int(await self.redis.get(self.keys["seeded"]) or 0)

    async def record_seeded(self, count: int) -> None:
        await self.redis.set(self.keys["seeded"], count)

    async def seeding_done(self) -> bool:
        return bool(await self.redis.exists(self.keys["done"]))

    async def finish_seeding(self) -> None:
        await self.redis.set(self.keys["done"], 1)
        # Should the lease have run out, nobody else seeds a job that is seeded.
        with suppress(LockError):
            await self.seeding.release()

    async def queued(self) -> int:
        """Requests in the shared queue (scrapy-redis's priority queue is a sorted set)."""
        return int(await self.redis.zcard(self.keys["queue"]))

    # -------------------------------------------------------------- completion

    async def everyone_idle(self) -> bool:
        if not await self.seeding_done() or await self.queued():
            return False
        live = await self.live_workers()
        return all(live.values()) and self.worker in live

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
