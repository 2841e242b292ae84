"""The rate limiter's inference on a fake clock: TokenBucket against the mock API's limiters.

    python -m tests.benchmarks.auto_sim [--seeds 8] [CASE ...]

Each run sends 600 ids (300 for twice-the-limit) one at a time through a
:class:`TokenBucket` (auto or configured) against :class:`mockapi.limits.RateLimiter`
with 2 ms of latency and 0.3 ms of jitter, 16 requests booked or in flight at a
time, as the middleware would: a 429 is
``limited`` (the inference), then ``pause``\\ d for its Retry-After; an answer is
``succeeded``. Seconds instead of minutes a run, to tune the ramp and the inference
before measuring end to end with ``python -m tests.benchmarks.pacing``. Prints per
case the most 429s, and the least throughput after the first 429 (a share of the
server's limit; against fixed windows also from the start of the window that held the
first 429) and efficiency (ideal span / span) over the seeds.
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
from typing import Any

from ingest.ratelimit.learning.lessons import held, limited, succeeded
from ingest.ratelimit.pacing.bucket import TokenBucket
from ingest.ratelimit.pacing.rates import parse_rate_setting
from mockapi.limits import RateLimiter, ceil_seconds, parse_limits

# The judged discovery cases: 400 ids, the limit unknown, each family of limiter.
DISCOVERY: dict[str, dict[str, Any]] = {
    f"discover-{name}": {"server": "100/10", "n": 400, **how}
    for name, how in {
        "fixed": {"algorithm": "fixed"},
        "fixed-first": {"algorithm": "fixed-first"},
        "sliding": {"algorithm": "sliding"},
        "sliding-accepted": {"algorithm": "sliding-accepted"},
        "counter": {"algorithm": "counter"},
        "counter-retry5": {"algorithm": "counter", "retry_after": 5},
        "nginx-burst5": {"algorithm": "nginx", "burst": 5, "nodelay": False},
        "nginx-burst5-nodelay": {"algorithm": "nginx", "burst": 5},
        "token-burst5": {"algorithm": "token", "burst": 5},
        "token": {"algorithm": "token", "burst": 1},
    }.items()
}
CASES: dict[str, dict[str, Any]] = {
    **DISCOVERY,
    "auto-fixed": {"server": "100/10", "algorithm": "fixed"},
    "auto-sliding": {"server": "100/10", "algorithm": "sliding"},
    "auto-token-burst5": {"server": "100/10", "algorithm": "token", "burst": 5},
    "auto-token": {"server": "100/10", "algorithm": "token", "burst": 1},
    "auto-token-burst2": {"server": "100/10", "algorithm": "token", "burst": 2},
    "limit-20pct-lower-retry5": {
        "server": "100/10",
        "algorithm": "sliding",
        "rate": "120/10",
        "retry_after": 5,
    },
    "twice-the-limit": {"server": "10/2", "algorithm": "sliding", "rate": "20/2", "n": 300},
    "hidden-quota-600": {"server": "100/10,150/30", "algorithm": "fixed", "rate": "100/10"},
    "auto-hidden-quota": {"server": "100/10,150/30", "algorithm": "fixed"},
    "token": {"server": "100/10", "algorithm": "token", "rate": "100/10", "n": 300},
}


class Run:
    """One run's events, each a method: a request is booked, goes at its slot,
    arrives at the server, and its answer comes back."""

    def __init__(self, bucket: TokenBucket, limiter: RateLimiter, now: list[float], **how: Any):
        self.bucket, self.limiter, self.now = bucket, limiter, now
        self.rand: random.Random = how["rand"]
        self.latency, self.jitter = how["latency"], how["jitter"]
        self.retry_after: int | None = how["retry_after"]
        self.left, self.done, self.blocked = how["n"], 0, -math.inf
        self.record: list[tuple[float, int]] = []
        self.events: list[tuple[float, int, str, Any]] = []
        self.order = iter(range(10**9))
        for _ in range(min(how["concurrency"], self.left)):
            self.left -= 1
            self.at(now[0], "book")

    def at(self, when: float, what: str, data: Any = None) -> None:
        heapq.heappush(self.events, (when, next(self.order), what, data))

    def step(self) -> None:
        when, _, what, data = heapq.heappop(self.events)
        self.now[0] = max(self.now[0], when)
        getattr(self, what)(data)

    def book(self, _: None) -> None:
        slot = self.bucket.reserve()
        self.at(slot.at, "go", slot)

    def go(self, slot: Any) -> None:
        confirmed = self.bucket.confirm(slot)
        if confirmed.wait is None:
            self.at(self.now[0], "book")
        elif confirmed.wait:
            self.at(self.now[0] + confirmed.wait, "go", slot)
        else:
            arrives = self.now[0] + self.latency / 2 + self.rand.random() * self.jitter
            self.at(arrives, "arrive", confirmed.at)

    def arrive(self, sent: float) -> None:
        now = self.now[0]
        if now < self.blocked:
            self.limiter.reject(now)
            wait = max(1, ceil_seconds(self.blocked - now))
        else:
            refused = self.limiter.hit(now)
            wait = max(1, ceil_seconds(refused)) if refused > 0 else 0
        if wait and self.retry_after is not None:
            wait = self.retry_after
        if wait:
            self.blocked = max(self.blocked, now + wait)
        self.record.append((now, 429 if wait else 200))
        held = 0.0 if wait else self.limiter.delay()
        self.at(now + self.latency / 2 + held, "answer", (sent, wait))

    def answer(self, data: tuple[float, int]) -> None:
        sent, wait = data
        if wait:
            lesson = limited(self.bucket, sent, float(wait), self.now[0])
            self.bucket.pause(held(float(wait), lesson))
            self.at(self.now[0], "book")  # the same id again
            return
        self.done += 1
        succeeded(self.bucket)
        if self.left > 0:
            self.left -= 1
            self.at(self.now[0], "book")


def simulate(
    server: str,
    algorithm: str,
    *,
    burst: int = 1,
    nodelay: bool = True,
    rate: str = "auto",
    n: int = 600,
    retry_after: int | None = None,
    seed: int = 0,
    latency: float = 0.002,
    jitter: float = 0.0003,
    concurrency: int = 16,
) -> dict[str, Any]:
    rand = random.Random(seed)
    now = [1_800_000_000.0 + rand.random() * 30]
    limits = parse_limits(server)
    limiter = RateLimiter(limits, algorithm, burst, clock=lambda: now[0], nodelay=nodelay)
    setting = parse_rate_setting(rate)
    bucket = TokenBucket(setting.rates, auto=setting.auto, clock=lambda: now[0], rand=rand.random)
    run = Run(
        bucket,
        limiter,
        now,
        rand=rand,
        latency=latency,
        jitter=jitter,
        retry_after=retry_after,
        n=n,
        concurrency=concurrency,
    )
    while run.done < n:
        run.step()
    return judged(run.record, limits, n, fixed=algorithm == "fixed")


def judged(
    record: list[tuple[float, int]], limits: list[Any], n: int, *, fixed: bool
) -> dict[str, Any]:
    per_second = min(limit.count / limit.period for limit in limits)
    ideal = (n - 1) / per_second
    times = [t for t, _ in record]
    span = max(times) - min(times)
    limited = [t for t, status in record if status == 429]

    def share_from(start: float) -> float:
        served = sum(1 for t, status in record if status != 429 and t >= start)
        return served / (max(times) - start) / per_second

    after = window = None
    if limited:
        after = share_from(limited[0])
        if fixed:  # from the start of the shortest window that held the first 429
            period = min(limit.period for limit in limits)
            window = share_from(math.floor(limited[0] / period) * period)
    half = min(times) + span / 2
    second = share_from(half)
    return {
        "429s": len(limited), "after": after, "window": window, "efficiency": ideal / span,
        "second": second,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", metavar="CASE", help=", ".join(CASES))
    parser.add_argument("--seeds", type=int, default=8)
    args = parser.parse_args()
    if unknown := set(args.cases) - set(CASES):
        parser.error(f"unknown cases {sorted(unknown)}: choose from {', '.join(CASES)}")
    for name in args.cases or CASES:
        runs = [simulate(seed=seed, **CASES[name]) for seed in range(args.seeds)]
        after = [r["after"] for r in runs if r["after"] is not None]
        line = f"{name:26} 429s at most {max(r['429s'] for r in runs):2}"
        if after:
            line += f" | after 1st 429 at least {min(after):.3f}"
        if window := [r["window"] for r in runs if r["window"] is not None]:
            line += f" (from its window {min(window):.3f})"
        line += f" | efficiency at least {min(r['efficiency'] for r in runs):.3f}"
        print(line + f" | second half at least {min(r['second'] for r in runs):.3f}")


if __name__ == "__main__":
    main()
