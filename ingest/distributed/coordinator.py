"""A worker's side of the job's coordination in Redis: heartbeats, leases, completion."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import redis.asyncio as aioredis

from ingest.distributed.jobs import LEASES, job_keys
from ingest.distributed.leases import Lease
from ingest.distributed.unavailable import AGAIN, DOWN, Outage, retrying_client
from ingest.progress.humanize import duration

logger = logging.getLogger(__name__)

T = TypeVar("T")

HEARTBEAT = 2.0  # seconds between heartbeats
DEAD_AFTER = 10.0  # a worker silent this long is dead
LEASE = 15.0  # seconds a lease (the seeding, a look for lost ids) lasts unless renewed
KEEP = 7 * 24 * 3600  # a job's keys outlive its last heartbeat by this much
PATIENCE = 30.0  # a worker waiting this long says what for, and again as often
HIGH_WATER = 500  # seeding pauses while the shared queue holds this many requests
LEAVING = 5.0  # seconds a worker that stops waits to tell Redis, at most


class Patience:
    """When a wait is worth a line in the log: once it has lasted ``every`` seconds, and
    every ``every`` seconds after that."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, every: float = PATIENCE):
        self.clock, self.every = clock, every
        self.since: float | None = None
        self.said = 0.0

    def due(self) -> float | None:
        """The seconds waited so far, when it is time to say so; else None."""
        now = self.clock()
        if self.since is None:
            self.since = self.said = now
        if now - self.said < self.every:
            return None
        self.said = now
        return now - self.since

    def over(self) -> None:
        """The wait ended: the next one is timed afresh."""
        self.since = None


class Coordinator:
    """Liveness, the seeding lease, and the job's completion, over an asyncio client.

    Each lease (:class:`~ingest.distributed.leases.Lease`) names the worker holding it and
    lasts ``lease`` seconds unless renewed: a worker that dies holding one frees it within
    that time. Heartbeats keep the job's data, never a lease.
    """

    def __init__(
        self, client: aioredis.Redis, job: str, worker: str, *, lease: float = LEASE
    ) -> None:
        self.redis, self.job, self.worker = client, job, worker
        self.keys = job_keys(job)
        self.idle = False
        self.finished = False
        self.seeding = Lease(client, self.keys["seeder"], worker, lease)
        self.reconciling = Lease(client, self.keys["reconciler"], worker, lease)
        self.outage = Outage("the job's coordination")
        self._beating: asyncio.Task[None] | None = None

    @classmethod
    def from_url(cls, url: str, job: str, worker: str) -> Coordinator:
        """Its calls retried while Redis is unavailable (:mod:`.unavailable`)."""
        coordinator = cls(retrying_client(url), job, worker)
        coordinator.outage = Outage("the job's coordination", url)
        return coordinator

    async def now(self) -> float:
        seconds, micros = await self.redis.time()
        return seconds + micros / 1e6

    # -------------------------------------------------------------- liveness

    async def beat(self) -> None:
        state = json.dumps({"idle": self.idle, "t": await self.now()})
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys["workers"], self.worker, state)
            for name, key in self.keys.items():
                if name not in LEASES:  # a lease lasts only as long as its holder renews it
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
        """Hold the seeding lease (again); False while another worker holds it."""
        return await self.seeding.take()

    async def seeded(self) -> int:
        return int(await self.redis.get(self.keys["seeded"]) or 0)

    async def record_seeded(self, count: int) -> None:
        await self.redis.set(self.keys["seeded"], count)

    async def seeding_turns(
        self,
        turn: Callable[[], AsyncIterator[T]],
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> AsyncIterator[T]:
        """What ``turn`` yields, each time this worker holds the seeding lease, until the
        seeding is done (by this worker or another); while another holds it, nothing (the
        lease is tried again every third of its length). Should Redis stay unavailable
        longer than a call's retries, it tries again."""
        patience = Patience(clock)
        while True:
            try:
                if await self.seeding_done():
                    return
                if not await self.take_seeding():
                    await self.tell_seeding_wait(patience)
                    await sleep(self.seeding.seconds / 3)
                    continue
                if await self.seeding_done():
                    # The last seeder finished (done, then its lease freed) between the
                    # look above and the taking: nothing is left to seed.
                    await self.seeding.release()
                    return
                patience.over()
                async for value in turn():
                    yield value
            except DOWN as exc:
                self.outage.began(exc)
                await sleep(AGAIN)

    async def seeding_done(self) -> bool:
        return bool(await self.redis.exists(self.keys["done"]))

    async def finish_seeding(self) -> None:
        await self.redis.set(self.keys["done"], 1)
        await self.seeding.release()

    async def queued(self) -> int:
        """Requests in the shared queue (scrapy-redis's priority queue is a sorted set)."""
        return int(await self.redis.zcard(self.keys["queue"]))

    async def room(self, sleep: Callable[[float], Awaitable[None]]) -> None:
        """Wait while the shared queue holds :data:`HIGH_WATER` requests: the workers take
        them as their downloaders free, and a seeder that dies loses few."""
        while await self.queued() >= HIGH_WATER:
            await sleep(0.2)

    async def tell_seeding_wait(self, patience: Patience) -> None:
        """Another worker holds the seeding lease: with nothing queued for long, say so."""
        if (waited := patience.due()) is None or await self.queued():
            return
        holder = self.seeding.other
        logger.info(
            "Waiting %s for worker %s, which seeds the job's queue (its lease runs out in "
            "%.0fs unless renewed); nothing is queued",
            duration(waited), holder.worker if holder else "?", holder.left if holder else 0,
        )  # fmt: skip

    # -------------------------------------------------------------- completion

    async def everyone_idle(self) -> bool:
        """Nothing queued, no worker seeding, and every live worker (this one among them)
        idle: the ids without an outcome were in flight with dead workers, or their
        requests lost with what Redis held (a restart without its append-only file)."""
        if await self.queued() or await self.redis.exists(self.keys["seeder"]):
            return False
        live = await self.live_workers()
        return all(live.values()) and self.worker in live

    async def waiting_for(self) -> str:
        """What an idle worker waits for, in words: the seeding and who holds its lease,
        requests queued, workers busy or silent, a look for lost ids and who makes it."""
        waits = []
        if not await self.seeding_done():
            seeder = _text(await self.redis.get(self.keys["seeder"]))
            waits.append(
                f"the seeding of the job's queue by worker {seeder}"
                if seeder
                else "the seeding of the job's queue, whose lease no worker holds"
            )
        if queued := await self.queued():
            waits.append(f"{queued} requests queued")
        now = await self.now()
        for key, raw in sorted((await self.redis.hgetall(self.keys["workers"])).items()):
            worker, state = _text(key), json.loads(raw)
            silent = now - state["t"]
            if worker == self.worker or silent >= DEAD_AFTER:
                continue  # the dead are not waited for
            if silent >= 2 * HEARTBEAT:
                waits.append(f"worker {worker}, silent {silent:.0f}s (dead at {DEAD_AFTER:.0f}s)")
            elif not state["idle"]:
                waits.append(f"worker {worker}, busy")
        if looker := _text(await self.redis.get(self.keys["reconciler"])):
            waits.append(f"the look for lost ids by worker {looker}")
        return "; ".join(waits) or "nothing: the job is complete or about to be"

    async def complete(self) -> bool:
        return bool(await self.redis.exists(self.keys["complete"]))

    async def mark_complete(self) -> None:
        await self.redis.set(self.keys["complete"], 1)

    async def leave(self) -> None:
        """This worker is done: the last one out removes the job's keys, so that the
        same command run later starts afresh (and tries failed ids again)."""
        if self._beating is not None:
            self._beating.cancel()
        try:
            # Not waited for long: a stop while Redis is unavailable still stops.
            await asyncio.wait_for(self._leave(), timeout=LEAVING)
        except (TimeoutError, *DOWN) as exc:
            logger.warning("Could not tell Redis this worker left (%r): it is taken for dead", exc)
        finally:
            await self.redis.aclose()

    async def _leave(self) -> None:
        await self.redis.hdel(self.keys["workers"], self.worker)
        if await self.complete() and not await self.live_workers():
            await self.redis.delete(*self.keys.values())


def _text(value: str | bytes | None) -> str:
    """A value read from Redis, as text ('' for none)."""
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)
