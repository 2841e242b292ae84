"""The crawler's CPU at a high rate: share of one core while it runs at the limit.

    python -m tests.benchmarks.cpu [--rate 6000/60] [--n 3000] [--runs 3] [--algorithm fixed]

Each run is ``scrapy crawl api`` against a fresh mock API process whose limit
equals the configured rate, into a temporary SQLite database, with the project's
default settings (its log, INFO, is discarded). The crawler's CPU
(user + system, all its threads) is sampled from ``/proc`` every 100 ms; the
steady share is the CPU spent between the 10th and the 90th percentile of the
requests the server received, over that stretch of time, so that start-up
(imports, opening the database) and shutdown do not count. The whole run's CPU
seconds are printed too.
"""

from __future__ import annotations

import argparse
import bisect
import os
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass

from tests.support.crawl import crawl_command, environment
from tests.support.mockapi import REPO_ROOT, MockAPI, span, statuses

TARGET = 30.0  # % of one core at 6000/60
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system seconds of every thread of ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


@dataclass
class Run:
    steady: float  # % of one core between the 10th and 90th percentile requests
    cpu: float  # seconds, whole process
    wall: float
    requests: int
    rejected: int
    ratio: float  # span / ideal


def sample(pid: int, into: list[tuple[float, float]], done: threading.Event) -> None:
    while not done.is_set():
        try:
            into.append((time.time(), cpu_seconds(pid)))
        except (OSError, IndexError):
            return
        done.wait(0.1)


def cpu_at(samples: list[tuple[float, float]], t: float) -> float:
    """CPU seconds at time ``t``, interpolated between the samples around it."""
    times = [s[0] for s in samples]
    i = min(max(bisect.bisect_left(times, t), 1), len(samples) - 1)
    (t0, c0), (t1, c1) = samples[i - 1], samples[i]
    return c0 + (c1 - c0) * (t - t0) / (t1 - t0) if t1 > t0 else c1


def run_once(rate: str, n: int, algorithm: str) -> Run:
    limit, period = rate.split("/")
    ideal = (n - 1) * float(period) / int(limit)
    with (
        MockAPI("--limit", rate, "--algorithm", algorithm) as api,
        tempfile.TemporaryDirectory() as tmp,
    ):
        command = crawl_command(
            api.url_template,
            f"sqlite:///{tmp}/cpu.db",
            "-a",
            f"ids=1-{n}",
            RATELIMIT_RATE=rate,
        )
        started = time.monotonic()
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=environment(), stderr=subprocess.DEVNULL
        )
        samples: list[tuple[float, float]] = []
        done = threading.Event()
        sampler = threading.Thread(target=sample, args=(process.pid, samples, done))
        sampler.start()
        try:
            process.wait(timeout=3 * ideal + 120)
        finally:
            done.set()
            sampler.join()
            if process.poll() is None:
                process.kill()
                process.wait()
        wall = time.monotonic() - started
        record = api.requests()
    times = sorted(r["t"] for r in record)
    first, last = times[len(times) // 10], times[9 * len(times) // 10]
    steady = 100 * (cpu_at(samples, last) - cpu_at(samples, first)) / (last - first)
    return Run(
        steady=steady,
        cpu=samples[-1][1],
        wall=wall,
        requests=len(record),
        rejected=statuses(record).get(429, 0),
        ratio=span(record) / ideal,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", default="6000/60")
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--algorithm", default="fixed")
    args = parser.parse_args()
    print(f"{args.n} ids at {args.rate}, server {args.algorithm} at the same limit")
    steady = []
    for i in range(1, args.runs + 1):
        run = run_once(args.rate, args.n, args.algorithm)
        steady.append(run.steady)
        print(
            f"run {i}: steady {run.steady:.1f}% of one core; whole run {run.cpu:.2f} s CPU "
            f"in {run.wall:.1f} s; {run.requests} requests, {run.rejected} x 429, "
            f"span/ideal {run.ratio:.4f}",
            flush=True,
        )
    median = statistics.median(steady)
    verdict = "within" if median <= TARGET else "above"
    print(f"median steady CPU: {median:.1f}% of one core ({verdict} the {TARGET:.0f}% target)")


if __name__ == "__main__":
    main()
