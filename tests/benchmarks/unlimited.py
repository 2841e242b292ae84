"""RATELIMIT_RATE=auto against an API without a limit, beside a concurrency-bound run.

    python -m tests.benchmarks.unlimited [--ids 25000]

Does auto reach the throughput that CONCURRENT_REQUESTS allows, without a 429, and say that
the limit is not known? Runs ``scrapy crawl api`` twice, one after the other, each against a
fresh mock API process without a limit (``python -m mockapi --limit none``): once with
RATELIMIT_RATE=auto (from RATELIMIT_START, 60/60 unless set), once at a rate far above
anything reachable (1000000/1), so that concurrency is the bound. Prints for each, from the
mock's record: requests, 429s, requests a second overall and over the last third of the
requests; then the ratio of auto's last third to the bound run's, and whether auto's log
says "the limit is not known". Each run's requests a second in consecutive 5-second windows
follow, to show the ramp.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.benchmarks.clients import Result, launch, run
from tests.support.mockapi import MockAPI, statuses

DEFAULT_IDS = 25_000
BOUND_RATE = "1000000/1"
NOT_KNOWN = "the limit is not known"
TIMEOUT = 900.0
WINDOW = 5.0


@dataclass(frozen=True)
class Measured:
    """One crawl as the mock saw it, and the crawl's own log."""

    label: str
    requests: int
    limited: int  # 429s
    overall: float  # requests a second, first to last
    last_third: float  # requests a second over the last third of the requests
    windows: list[float]  # requests a second in each WINDOW from the first request
    result: Result
    log: str

    def line(self) -> str:
        return (
            f"{self.label}: {self.requests} requests, {self.limited} x 429, "
            f"{self.overall:.1f} req/s overall, {self.last_third:.1f} req/s over the last "
            f"third; exit {self.result.returncode}, wall {self.result.wall:.1f} s, "
            f"CPU {self.result.cpu:.1f} s ({1000 * self.result.cpu / max(self.requests, 1):.2f} ms "
            "a request)"
        )

    def timeline(self) -> str:
        rates = " ".join(f"{rate:.0f}" for rate in self.windows)
        return f"{self.label}, req/s per {WINDOW:.0f} s: {rates}"


def per_second(times: list[float]) -> float:
    """Requests a second from the first of `times` to the last (sorted); 0 with fewer than two."""
    if len(times) < 2 or times[-1] <= times[0]:
        return 0.0
    return (len(times) - 1) / (times[-1] - times[0])


def per_window(times: list[float]) -> list[float]:
    """Requests a second in each WINDOW from the first of `times` (sorted)."""
    if not times:
        return []
    counts = [0] * (int((times[-1] - times[0]) // WINDOW) + 1)
    for t in times:
        counts[int((t - times[0]) // WINDOW)] += 1
    return [count / WINDOW for count in counts]


def measure(label: str, rate: str, n: int) -> Measured:
    """`scrapy crawl api` for ids 1-`n` at `rate` against a fresh mock API without a limit."""
    with (
        tempfile.TemporaryDirectory(prefix="unlimited-") as workdir,
        MockAPI("--limit", "none") as api,
    ):
        started = launch("ingest", api.url_template, f"1-{n}", rate, Path(workdir))
        result = run(started, TIMEOUT)
        record: list[dict[str, Any]] = api.requests()
        log = started.log.read_text(errors="replace")
    if result.returncode or result.timed_out:
        print(f"{label} exited {result.returncode}:\n{log[-2000:]}", file=sys.stderr)
    times = sorted(entry["t"] for entry in record)
    return Measured(
        label=label,
        requests=len(record),
        limited=statuses(record)[429],
        overall=per_second(times),
        last_third=per_second(times[-(len(times) // 3) :]),
        windows=per_window(times),
        result=result,
        log=log,
    )


def summary_line(log: str) -> str:
    found = re.findall(r"Summary \(.*", log)
    return found[-1] if found else "(no summary line)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, default=DEFAULT_IDS, help="ids per run")
    args = parser.parse_args()
    if args.ids < 6:
        parser.error(f"--ids must be at least 6, got {args.ids}")
    auto = measure("auto", "auto", args.ids)
    print(auto.line(), flush=True)
    bound = measure(f"bound ({BOUND_RATE})", BOUND_RATE, args.ids)
    print(bound.line(), flush=True)
    ratio = auto.last_third / bound.last_third if bound.last_third else float("nan")
    print(f"auto's last third / the bound run's: {ratio:.3f}")
    print(f'auto\'s log says "{NOT_KNOWN}": {"yes" if NOT_KNOWN in auto.log else "no"}')
    print(f"auto's summary: {summary_line(auto.log)}")
    print(f"bound's summary: {summary_line(bound.log)}")
    print(auto.timeline())
    print(bound.timeline())


if __name__ == "__main__":
    main()
