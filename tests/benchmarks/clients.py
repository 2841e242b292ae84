"""The clients the pacing benchmark compares, each written as users write it, one process a run.

Three are defined here and run as

    python -m tests.benchmarks.clients NAME URL_TEMPLATE IDS RATE OUT

which writes the ids the client got (answered 200 or 404) to OUT as a JSON list. The others
are the project itself, ``scrapy crawl api``, given the rate (``ingest``) or told nothing of it
(``auto``), whose ids are read back from its SQLite database.
Each client imports only what it uses, so that its CPU time and memory are its own.
``run()`` starts one, kills it at a deadline, and measures its CPU time and peak RSS;
``run_together()`` does the same for the workers of one distributed ingest job.
"""

from __future__ import annotations

import argparse
import asyncio
import email.utils
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
NAMES = ("ingest", "auto", "scrapy-alone", "aiolimiter", "semaphore")
# What users reach for: a few attempts, and tenacity's exponential backoff capped at a minute.
TENACITY_ATTEMPTS = 6
AIOLIMITER_CONCURRENCY = 16
SEMAPHORE_TRIES = 4
RETRYABLE = (429, 500, 502, 503, 504)
POLL_SECONDS = 0.05


def expand_ids(spec: str) -> list[str]:
    """`1-5,9` → ["1", "2", "3", "4", "5", "9"], as the ingest spider reads `-a ids=`."""
    ids: list[str] = []
    for part in spec.split(","):
        low, _, high = part.partition("-")
        ids += [str(i) for i in range(int(low), int(high or low) + 1)]
    return ids


def parse_rate(rate: str) -> tuple[int, float]:
    count, _, period = rate.partition("/")
    return int(count), float(period)


def retry_after_seconds(value: str | None) -> float:
    """The `Retry-After` header as seconds from now: delay-seconds or an HTTP date."""
    if not value:
        return 0.0
    if value.strip().isdigit():
        return float(value)
    return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())


def scrapy_alone(url: str, ids: list[str], limit: int, period: float) -> set[str]:
    """Plain Scrapy: one request at a time, `DOWNLOAD_DELAY = period/limit`, default retries."""
    import scrapy
    from scrapy.crawler import CrawlerProcess
    from scrapy.http import Response

    done: set[str] = set()

    class PlainSpider(scrapy.Spider):
        name = "plain"
        handle_httpstatus_list = [404]

        async def start(self) -> Any:
            for item_id in ids:
                yield scrapy.Request(
                    url.format(id=item_id), callback=self.parse, cb_kwargs={"item_id": item_id}
                )

        def parse(self, response: Response, item_id: str) -> None:
            if response.status == 200:
                json.loads(response.body)
            done.add(item_id)

    process = CrawlerProcess(
        {
            "DOWNLOAD_DELAY": period / limit,
            "DOWNLOAD_DELAY_JITTER": 0,
            "CONCURRENT_REQUESTS_PER_DOMAIN": 1,
            # Scrapy's default DEBUG logs a line per request; the project logs at INFO too.
            "LOG_LEVEL": "INFO",
            # Both listen on local ports; nobody uses them here.
            "TELNETCONSOLE_ENABLED": False,
            "REMOTE_CONTROL_ENABLED": False,
        }
    )
    process.crawl(PlainSpider)
    process.start()
    return done


def aiolimiter_tenacity(url: str, ids: list[str], limit: int, period: float) -> set[str]:
    """aiohttp behind `AsyncLimiter(limit, period)`, retried by tenacity with backoff that
    honours Retry-After, over `asyncio.gather` of every id with a semaphore of 16."""
    import aiohttp
    from aiolimiter import AsyncLimiter
    from tenacity import (
        RetryCallState,
        retry,
        retry_if_exception_type,
        stop_after_attempt,
        wait_exponential,
    )

    class RetryableStatus(Exception):
        def __init__(self, status: int, retry_after: float) -> None:
            super().__init__(f"HTTP {status}")
            self.retry_after = retry_after

    backoff = wait_exponential(multiplier=1, max=60)

    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        return max(getattr(error, "retry_after", 0.0), backoff(state))

    limiter = AsyncLimiter(limit, period)

    @retry(
        retry=retry_if_exception_type((RetryableStatus, aiohttp.ClientError)),
        wait=wait,
        stop=stop_after_attempt(TENACITY_ATTEMPTS),
        reraise=True,
    )
    async def fetch(session: aiohttp.ClientSession, item_id: str) -> str:
        async with limiter, session.get(url.format(id=item_id)) as response:
            if response.status in RETRYABLE:
                after = retry_after_seconds(response.headers.get("Retry-After"))
                raise RetryableStatus(response.status, after)
            if response.status != 404:
                response.raise_for_status()
                await response.json()
            return item_id

    async def main() -> set[str]:
        semaphore = asyncio.Semaphore(AIOLIMITER_CONCURRENCY)
        async with aiohttp.ClientSession() as session:

            async def one(item_id: str) -> str:
                async with semaphore:
                    return await fetch(session, item_id)

            results = await asyncio.gather(*map(one, ids), return_exceptions=True)
        return {result for result in results if isinstance(result, str)}

    return asyncio.run(main())


def semaphore_sleep(url: str, ids: list[str], limit: int, period: float) -> set[str]:
    """The hand-rolled pattern: `asyncio.gather` of every id under `Semaphore(limit)`, a sleep
    of a whole period after every `limit` requests, and on a 429 another whole period."""
    import aiohttp

    semaphore = asyncio.Semaphore(limit)
    sent = 0

    async def fetch(session: aiohttp.ClientSession, item_id: str) -> str:
        nonlocal sent
        async with semaphore:
            for _ in range(SEMAPHORE_TRIES):
                if sent >= limit:
                    await asyncio.sleep(period)
                    sent = 0
                sent += 1
                async with session.get(url.format(id=item_id)) as response:
                    if response.status == 429:
                        await asyncio.sleep(period)
                        continue
                    if response.status != 404:
                        response.raise_for_status()
                        await response.json()
                    return item_id
        raise RuntimeError(f"id {item_id}: still 429 after {SEMAPHORE_TRIES} tries")

    async def main() -> set[str]:
        async with aiohttp.ClientSession() as session:
            tasks = (fetch(session, item_id) for item_id in ids)
            results = await asyncio.gather(*tasks, return_exceptions=True)
        return {result for result in results if isinstance(result, str)}

    return asyncio.run(main())


IN_PROCESS: dict[str, Callable[[str, list[str], int, float], set[str]]] = {
    "scrapy-alone": scrapy_alone,
    "aiolimiter": aiolimiter_tenacity,
    "semaphore": semaphore_sleep,
}


@dataclass
class Launch:
    """A client run to start: its command line, and how to read the ids it got once it ends."""

    command: list[str]
    done: Callable[[], set[str]]
    log: Path
    env: dict[str, str] | None = field(default=None, repr=False)


def launch(name: str, url: str, ids: str, rate: str, workdir: Path) -> Launch:
    """Client `name` fetching `ids` (`1-300`) from `url` at `rate` (`N/SECONDS`)."""
    log = workdir / f"{name}.log"
    if name in ("ingest", "auto"):
        # auto: the same crawl told nothing of the limit (RATELIMIT_RATE=auto).
        from tests.support.crawl import crawl_command, environment, terminal_states

        database = f"sqlite:///{workdir / 'ingest.db'}"

        def stored() -> set[str]:
            states = terminal_states(database)
            return {i for i, state in states.items() if state in ("stored", "not_found")}

        rate = "auto" if name == "auto" else rate
        command = crawl_command(url, database, "-a", f"ids={ids}", RATELIMIT_RATE=rate)
        return Launch(command, stored, log, environment())
    if name not in IN_PROCESS:
        raise ValueError(f"client must be one of {', '.join(NAMES)}, got {name!r}")
    out = workdir / f"{name}.json"
    command = [sys.executable, "-m", "tests.benchmarks.clients", name, url, ids, rate, str(out)]
    return Launch(command, lambda: set(json.loads(out.read_text())), log)


def launch_workers(
    url: str, ids: str, rate: str, workdir: Path, *, count: int, database: str, redis: str
) -> list[Launch]:
    """`count` ingest workers of one distributed job (`DISTRIBUTED`: one queue and one
    rate-limit bucket in Redis at `redis`) storing into one `database`; each sends its own
    User-Agent (`worker-N`), which the mock records."""
    from tests.support.crawl import crawl_command, environment, terminal_states

    def stored() -> set[str]:
        states = terminal_states(database)
        return {i for i, state in states.items() if state in ("stored", "not_found")}

    settings = {"RATELIMIT_RATE": rate, "DISTRIBUTED": 1, "REDIS_URL": redis}
    return [
        Launch(
            crawl_command(
                url, database, "-a", f"ids={ids}", USER_AGENT=f"worker-{number}", **settings
            ),
            stored,
            workdir / f"ingest-{number}.log",
            environment(),
        )
        for number in range(count)
    ]


@dataclass
class Result:
    """How a client run ended, and what it cost."""

    returncode: int
    timed_out: bool
    wall: float  # seconds from start to exit, start-up included
    cpu: float  # user + system seconds of the process and its children
    peak_rss_mb: float
    done: set[str] | None  # None when it did not finish normally


def high_water_kb(pid: int) -> int:
    """Peak resident set of a running process so far (VmHWM); 0 once it has exited."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    lines = [line.split() for line in status.splitlines() if line.startswith("VmHWM:")]
    return int(lines[0][1]) if lines else 0


def run(client: Launch, timeout: float) -> Result:
    """Run `client` to its end, or kill its process group after `timeout` seconds."""
    return run_together([client], timeout)


def run_together(clients: list[Launch], timeout: float) -> Result:
    """Start every one of `clients` at once (the workers of one job) and run them to their
    end, or kill them all after `timeout` seconds: wall time of the whole job, the sum of
    their CPU times, the largest of their peaks; the first nonzero exit code; the ids done
    as the first client reads them (all read the same database)."""
    started = time.monotonic()
    processes = []
    for client in clients:
        with client.log.open("wb") as log:
            processes.append(
                subprocess.Popen(
                    client.command,
                    cwd=REPO_ROOT,
                    env=client.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
    # Peak RSS is sampled, not taken from ru_maxrss: at exec, Linux folds the launching
    # process's own peak into the child's ru_maxrss, which would report this benchmark's size.
    peaks = dict.fromkeys((p.pid for p in processes), 0)
    running = set(peaks)
    codes: dict[int, int] = {}
    cpu, timed_out = 0.0, False
    while running:
        for pid in sorted(running):
            reaped_pid, status, usage = os.wait4(pid, os.WNOHANG)
            if reaped_pid:
                running.discard(pid)
                codes[pid] = os.waitstatus_to_exitcode(status)
                # wait4 gives this child's own usage (its reaped children's included).
                cpu += usage.ru_utime + usage.ru_stime
            else:
                peaks[pid] = max(peaks[pid], high_water_kb(pid))
        if running and not timed_out and time.monotonic() - started >= timeout:
            for pid in running:
                os.killpg(pid, signal.SIGKILL)
            timed_out = True
        if running:
            time.sleep(POLL_SECONDS)
    wall = time.monotonic() - started
    for process in processes:
        process.returncode = codes[process.pid]
    returncode = next((p.returncode for p in processes if p.returncode), 0)
    return Result(
        returncode=returncode,
        timed_out=timed_out,
        wall=wall,
        cpu=cpu,
        peak_rss_mb=max(peaks.values()) / 1024,
        done=clients[0].done() if returncode == 0 and not timed_out else None,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(IN_PROCESS))
    parser.add_argument("url", help="URL template with {id}")
    parser.add_argument("ids", help="e.g. 1-300")
    parser.add_argument("rate", help="N/SECONDS")
    parser.add_argument("out", type=Path, help="where to write the ids it got, as JSON")
    args = parser.parse_args()
    limit, period = parse_rate(args.rate)
    done = IN_PROCESS[args.name](args.url, expand_ids(args.ids), limit, period)
    args.out.write_text(json.dumps(sorted(done)))


if __name__ == "__main__":
    main()
