"""The rate limiter's inference on a fake clock: TokenBucket against the mock API's limiters.

    python -m tests.benchmarks.auto_sim [--seeds 8] [CASE ...]

Each run sends 600 ids (300 for twice-the-limit) one at a time through a
:class:`TokenBucket` (auto or configured) against :class:`mockapi.limits.RateLimiter`
with 2 ms of latency and 0.3 ms of jitter, as the middleware would: a 429 is
``limited`` (the inference), then ``pause``\\ d for its Retry-After; an answer is
``succeeded``. Seconds instead of minutes a run, to tune the ramp and the inference
before measuring end to end with ``python -m tests.benchmarks.pacing``. Prints per
case the most 429s, and the least throughput after the first 429 (a share of the
server's limit) and efficiency (ideal span / span) over the seeds.
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
from typing import Any

from ingest.ratelimit.bucket import TokenBucket
from ingest.ratelimit.rates import parse_rate_setting
from mockapi.limits import RateLimiter, ceil_seconds, parse_limits

CASES: dict[str, dict[str, Any]] = {
    "auto-fixed": {"server": "100/10", "algorithm": "fixed"},
    "auto-sliding": {"server": "100/10", "algorithm": "sliding"},
    "auto-token-burst5": {"server": "100/10", "algorithm": "token", "burst": 5},
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


def simulate(
    server: str,
    algorithm: str,
    *,
    burst: int = 1,
    rate: str = "auto",
    n: int = 600,
    retry_after: int | None = None,
    seed: int = 0,
    latency: float = 0.002,
    jitter: float = 0.0003,
) -> dict[str, Any]:
    rand = random.Random(seed)
    now = [1_800_000_000.0 + rand.random() * 30]
    limits = parse_limits(server)
    limiter = RateLimiter(limits, algorithm, burst, clock=lambda: now[0])
    setting = parse_rate_setting(rate)
    bucket = TokenBucket(setting.rates, auto=setting.auto, clock=lambda: now[0], rand=rand.random)
    record: list[tuple[float, int]] = []
    answers: list[tuple[float, float, int]] = []  # (due, sent at, Retry-After or 0 when served)
    blocked, left, done, slot = -math.inf, n, 0, None
    while done < n:
        if slot is None and left > 0:
            slot = bucket.reserve()
        if answers and (slot is None or answers[0][0] <= slot.at):
            due, sent, wait = heapq.heappop(answers)
            now[0] = max(now[0], due)
            if wait:
                left += 1
                bucket.limited(sent, float(wait), now[0])
                bucket.pause(wait)
            else:
                done += 1
                bucket.succeeded()
            continue
        assert slot is not None
        now[0] = max(now[0], slot.at)
        confirmed = bucket.confirm(slot)
        while confirmed.wait:
            now[0] += confirmed.wait
            confirmed = bucket.confirm(slot)
        slot = None
        if confirmed.wait is None:
            continue
        left -= 1
        arrives = now[0] + latency / 2 + rand.random() * jitter
        if arrives < blocked:
            limiter.reject(arrives)
            wait = max(1, ceil_seconds(blocked - arrives))
        else:
            refused = limiter.hit(arrives)
            wait = max(1, ceil_seconds(refused)) if refused > 0 else 0
        if wait and retry_after is not None:
            wait = retry_after
        if wait:
            blocked = max(blocked, arrives + wait)
        record.append((arrives, 429 if wait else 200))
        heapq.heappush(answers, (now[0] + latency, confirmed.at, wait))
    return judged(record, limits, n)


def judged(record: list[tuple[float, int]], limits: list[Any], n: int) -> dict[str, Any]:
    per_second = min(limit.count / limit.period for limit in limits)
    ideal = (n - 1) / per_second
    times = [t for t, _ in record]
    span = max(times) - min(times)
    limited = [t for t, status in record if status == 429]
    after = None
    if limited:
        served = sum(1 for t, status in record if status != 429 and t >= limited[0])
        after = served / (max(times) - limited[0]) / per_second
    return {"429s": len(limited), "after": after, "efficiency": ideal / span}


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
        print(line + f" | efficiency at least {min(r['efficiency'] for r in runs):.3f}")


if __name__ == "__main__":
    main()
