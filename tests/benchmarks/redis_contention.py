"""Contention on one shared bucket: W worker processes booking and confirming sends in Redis.

    python -m tests.benchmarks.redis_contention [--workers 10] [--seconds 10] [--rate 6000/60]

Each worker is a process of its own with its own connection, as ingest's workers are,
and books slots as fast as the bucket lets it, 16 at a time (CONCURRENT_REQUESTS),
each a reserve, a wait and a confirm, exactly as the rate-limit middleware does. It
prints, over all workers: sends made and their rate against the configured one,
bucket operations per second, how many compare-and-swaps lost to another worker's
(and were run again), and the latency of one operation (median and 99th percentile).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import time
from typing import Any

from ingest.ratelimit.backends.redis import RedisBackend
from ingest.ratelimit.pacing.bucket import TokenBucket
from ingest.ratelimit.pacing.rates import Rate, parse_rates
from tests.support.redis import running_redis

KEY = "http://contended.example"


async def worker(url: str, rates: tuple[Rate, ...], seconds: float) -> dict[str, Any]:
    backend = RedisBackend.from_url(url, rates)
    latencies: list[float] = []
    sent: list[float] = []

    async def timed(op: Any, *args: Any) -> Any:
        began = time.perf_counter()
        result = await backend.run(KEY, op, *args)
        latencies.append(time.perf_counter() - began)
        return result

    async def one_slot(deadline: float) -> None:
        while time.monotonic() < deadline:
            slot = await timed(TokenBucket.reserve)
            await asyncio.sleep(slot.delay)
            confirmed = await timed(TokenBucket.confirm, slot)
            while confirmed.wait:
                await asyncio.sleep(confirmed.wait)
                confirmed = await timed(TokenBucket.confirm, slot)
            if confirmed.wait is not None:
                sent.append(confirmed.at)

    deadline = time.monotonic() + seconds
    await asyncio.gather(*(one_slot(deadline) for _ in range(16)))
    await backend.close()
    return {
        "sent": sent,
        "latencies": latencies,
        "swaps": backend.swaps,
        "conflicts": backend.conflicts,
    }


def run_worker(args: tuple[str, str, float]) -> str:
    url, rate, seconds = args
    return json.dumps(asyncio.run(worker(url, parse_rates(rate), seconds)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", default="6000/60")
    args = parser.parse_args()
    with running_redis() as server, multiprocessing.Pool(args.workers) as pool:
        jobs = [(server.url(), args.rate, args.seconds)] * args.workers
        results = [json.loads(text) for text in pool.map(run_worker, jobs)]
    sent = sorted(t for r in results for t in r["sent"])
    latencies = sorted(x for r in results for x in r["latencies"])
    swaps = sum(r["swaps"] for r in results)
    conflicts = sum(r["conflicts"] for r in results)
    configured = parse_rates(args.rate)[0]
    steady = sent[len(sent) // 10 : len(sent) * 9 // 10]
    rate = (len(steady) - 1) / (steady[-1] - steady[0]) * 60 if len(steady) > 1 else 0.0
    print(f"{args.workers} workers x 16 slots, {args.seconds:g} s, one bucket at {args.rate}")
    print(f"sends: {len(sent)}, {rate:.1f}/min steady = {rate / 60 / configured.per_second:.4f}")
    print(f"operations: {len(latencies)} ({len(latencies) / args.seconds:.0f}/s)")
    print(f"swaps: {swaps}, lost to another worker and run again: {conflicts}"
          f" ({conflicts / max(swaps, 1):.1%})")  # fmt: skip
    p50, p99 = statistics.median(latencies), latencies[int(len(latencies) * 0.99)]
    print(f"operation latency: median {p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms")


if __name__ == "__main__":
    main()
