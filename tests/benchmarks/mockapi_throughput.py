"""Requests per second the mock API serves to keep-alive clients, measured from another process.

    python -m tests.benchmarks.mockapi_throughput [--duration 5] [--connections 32]
        [--algorithm fixed|sliding|token] [extra mock API flags, e.g. --headers both]

The mock runs in its own process with a limit far above what it can serve, so that every
request goes through the limiter and none is refused; each request asks for a new id.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import time
from collections import Counter
from pathlib import Path

import aiohttp

from tests.support.mockapi import MockAPI, statuses


async def hammer(
    url_template: str, duration: float, connections: int
) -> tuple[Counter[int], float]:
    """GET new ids over `connections` keep-alive connections for `duration` seconds."""
    ids = itertools.count(1)
    seen: Counter[int] = Counter()
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker(deadline: float) -> None:
            while time.monotonic() < deadline:
                async with session.get(url_template.format(id=next(ids))) as response:
                    await response.read()
                    seen[response.status] += 1

        started = time.monotonic()
        await asyncio.gather(*(worker(started + duration) for _ in range(connections)))
        return seen, time.monotonic() - started


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (Linux), to tell server cost from machine load."""
    stat = Path(f"/proc/{pid}/stat")
    if not stat.exists():
        return None
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds (default: 5)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent (default: 32)")
    parser.add_argument("--algorithm", choices=("fixed", "sliding", "token"), default="fixed")
    args, mock_args = parser.parse_known_args()
    limit = ["--limit", "1000000000/60", "--algorithm", args.algorithm, "--burst", "1000000"]
    with MockAPI(*limit, *mock_args) as api:
        asyncio.run(hammer(api.url_template, 0.5, args.connections))  # warm-up
        api.reset()
        cpu_before = cpu_seconds(api.process.pid)
        seen, elapsed = asyncio.run(hammer(api.url_template, args.duration, args.connections))
        cpu_after = cpu_seconds(api.process.pid)
        recorded = statuses(api.requests())
    total = sum(seen.values())
    print(
        f"mockapi ({args.algorithm}, {args.connections} connections): {total} requests "
        f"in {elapsed:.2f} s = {total / elapsed:.0f} req/s; "
        f"client saw {dict(seen)}, server recorded {dict(recorded)}"
    )
    if cpu_before is not None and cpu_after is not None and total:
        per_request = (cpu_after - cpu_before) / total
        print(
            f"server CPU: {per_request * 1e6:.0f} us per request "
            f"(at most {1 / per_request:.0f} req/s on one free core)"
        )


if __name__ == "__main__":
    main()
