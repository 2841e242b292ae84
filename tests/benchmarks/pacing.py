"""Pacing benchmark: each client against each server case, judged from the server's record.

    python -m tests.benchmarks.pacing [--clients ingest,scrapy-alone,aiolimiter,semaphore]
        [--cases fixed,sliding,...] [--ids 300] [--out docs/benchmarks/pacing.md]

Runs go one after another, each against a fresh mock API process, each client in its own
process (see tests/benchmarks/clients.py), and prints a Markdown table that it also writes
to --out.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import scrapy

from mockapi.limits import parse_limits
from tests.benchmarks import fronts
from tests.benchmarks.clients import (
    AIOLIMITER_CONCURRENCY,
    NAMES,
    REPO_ROOT,
    SEMAPHORE_TRIES,
    TENACITY_ATTEMPTS,
    Result,
    launch,
    launch_workers,
    run,
    run_together,
)
from tests.support.mockapi import MockAPI, span, statuses
from tests.support.postgres import running_postgres
from tests.support.redis import running_redis

NOMINAL = "100/10"
DEFAULT_IDS = 300


@dataclass(frozen=True)
class Case:
    """The rate every client is told, and the mock API's flags (the server's real limits)."""

    configured: str
    server: tuple[str, ...]
    about: str
    ids: int | None = None  # ids per run when --ids is not given (else 300)
    workers: int = 1  # more: ingest only, workers of one distributed job (Redis, PostgreSQL)
    # A real server in front of a mock with no limit, enforcing the limit of `server`:
    # "nginx:<burst>[:nodelay]" (limit_req) or "haproxy:<Retry-After>" (a stick table).
    front: str | None = None

    @property
    def served_by(self) -> str:
        return self.front.split(":", 1)[0] if self.front else "mock"

    def ideal(self, n: int) -> float:
        """The span of `n` requests evenly spaced at the slowest of the server's limits."""
        return (n - 1) / self.per_second()

    def per_second(self) -> float:
        """The slowest of the server's limits, in requests a second."""
        limits = parse_limits(self.server[self.server.index("--limit") + 1])
        return min(limit.count / limit.period for limit in limits)


def nominal(*flags: str) -> tuple[str, ...]:
    return ("--limit", NOMINAL, *flags)


# The unknown limit found: 400 ids, auto, 100 per 10 s, against each family of limiter.
DISCOVERY = {
    f"discover-{name}": Case("auto", nominal(*flags), f"auto, {about}", 400, front=front)
    for name, (flags, about, front) in {
        "nginx-burst5": ((), "nginx limit_req 600r/m burst=5", "nginx:5"),
        "nginx-burst5-nodelay": ((), "nginx limit_req 600r/m burst=5 nodelay", "nginx:5:nodelay"),
        "haproxy-retry5": ((), "HAProxy http_req_rate(10s) gt 100, Retry-After: 5", "haproxy:5"),
        "fixed": (("--algorithm", "fixed"), "mock fixed windows (epoch)", None),
        "fixed-first": (("--algorithm", "fixed-first"), "mock fixed windows from the first", None),
        "sliding": (("--algorithm", "sliding"), "mock sliding log, refusals counted", None),
        "sliding-accepted": (("--algorithm", "sliding-accepted"), "mock sliding log", None),
        "counter": (("--algorithm", "counter"), "mock sliding window counter", None),
        "leaky-burst5": (
            ("--algorithm", "nginx", "--burst", "5", "--no-nodelay"),
            "mock leaky bucket",
            None,
        ),
        "token-burst5": (("--algorithm", "token", "--burst", "5"), "mock token bucket", None),
        "token": (("--algorithm", "token", "--burst", "1"), "mock token bucket, burst 1", None),
    }.items()
}


CASES = {
    **DISCOVERY,
    "auto-3-workers-haproxy": Case(
        "auto", nominal(), "auto, 3 workers, HAProxy 100/10 Retry-After: 5", 400, 3, "haproxy:5"
    ),
    "nginx-burst0": Case(
        NOMINAL, nominal(), "configured right, nginx 600r/m burst=0", 300, front="nginx:0:nodelay"
    ),
    "fixed": Case(NOMINAL, nominal("--algorithm", "fixed"), "fixed windows aligned on the epoch"),
    "sliding": Case(
        NOMINAL, nominal("--algorithm", "sliding"), "sliding log, rejected requests count"
    ),
    "token": Case(NOMINAL, nominal("--algorithm", "token", "--burst", "1"), "token bucket"),
    "token-burst2": Case(
        NOMINAL, nominal("--algorithm", "token", "--burst", "2"), "token bucket, burst 2"
    ),
    "limit-20pct-lower": Case(
        "120/10",
        ("--limit", NOMINAL, "--algorithm", "sliding"),
        "configured 120/10, server 100/10, sliding",
    ),
    "hidden-quota": Case(
        NOMINAL,
        ("--limit", f"{NOMINAL},150/30", "--algorithm", "fixed"),
        "configured 100/10, server also 150/30 (fixed)",
    ),
    "latency-50ms": Case(
        NOMINAL,
        nominal("--algorithm", "fixed", "--latency", "0.05"),
        "fixed, every answer takes 50 ms, as a real API's may (AutoThrottle on)",
    ),
    "errors-5pct": Case(
        NOMINAL,
        nominal("--algorithm", "fixed", "--error-rate", "0.05", "--error-statuses", "503"),
        "fixed, 5% of allowed requests answered 503",
    ),
    # The limit unknown or wrong: 600 ids unless said.
    "auto-fixed": Case("auto", nominal("--algorithm", "fixed"), "auto, server fixed", 600),
    "auto-sliding": Case("auto", nominal("--algorithm", "sliding"), "auto, server sliding", 600),
    "auto-token-burst5": Case(
        "auto", nominal("--algorithm", "token", "--burst", "5"), "auto, token burst 5", 600
    ),
    "auto-3-workers": Case(
        "auto",
        nominal("--algorithm", "sliding"),
        "auto, server sliding, 3 ingest workers of one distributed job sharing its bucket",
        600,
        workers=3,
    ),
    "limit-20pct-lower-retry5": Case(
        "120/10",
        nominal("--algorithm", "sliding", "--retry-after-value", "5"),
        "configured 120/10, server 100/10 sliding that answers every 429 Retry-After: 5",
        600,
    ),
    "twice-the-limit": Case(
        "20/2",
        ("--limit", "10/2", "--algorithm", "sliding"),
        "configured 20/2, server sliding 10/2",
        300,
    ),
    "hidden-quota-600": Case(
        NOMINAL,
        ("--limit", f"{NOMINAL},150/30", "--algorithm", "fixed"),
        "configured 100/10, server also 150/30 (fixed)",
        600,
    ),
    "auto-hidden-quota": Case(
        "auto",
        ("--limit", f"{NOMINAL},150/30", "--algorithm", "fixed"),
        "auto, server 100/10 and 150/30 (fixed)",
        600,
    ),
}
COLUMNS = (
    "case",
    "server",
    "client",
    "outcome",
    "span s",
    "span/ideal",
    "429s",
    "after 1st 429",
    "from its window",
    "efficiency",
    "second half",
    "503s",
    "requests",
    "ids lost",
    "done (client)",
    "wall s",
    "CPU s",
    "peak RSS MB",
    "summary share",
)
# The share of the limit the client's own summary states (ingest only).
SUMMARY_SHARE = re.compile(r"= ([0-9.]+)% of (?:\d+ keys x )?the \S+ limit")


def timeout_for(ideal: float) -> float:
    """A run twice as long as the ideal has failed; killing it there keeps the matrix short."""
    return 2 * ideal + 60


def measure(case: Case, name: str, client: str, n: int) -> list[str]:
    """One run of `client` against a fresh mock API for `case`: a table row."""
    ids = f"1-{n}"
    ideal = case.ideal(n)
    server = ("--limit", "none") if case.front else case.server
    with (
        tempfile.TemporaryDirectory(prefix="pacing-") as workdir,
        MockAPI(*server) as mock,
        front_of(case, mock) as api,
    ):
        if case.workers > 1:
            result, logs = run_workers(case, api, ids, Path(workdir), timeout_for(ideal))
        else:
            started = launch(client, api.url_template, ids, case.configured, Path(workdir))
            result, logs = run(started, timeout_for(ideal)), [started.log]
        record = api.requests()
        share = summary_share(logs)
        if result.returncode and not result.timed_out:
            for log in logs:
                tail = log.read_text(errors="replace")[-2000:]
                print(f"{client} on {name} exited {result.returncode}:\n{tail}", file=sys.stderr)
    answered = {e["id"] for e in record if e["status"] in (200, 404)}
    seen = statuses(record)
    took = span(record)
    after = after_first_429(record, case.per_second())
    window = from_its_window(record, case)
    return [
        name,
        case.served_by,
        client,
        outcome(result),
        f"{took:.1f}",
        f"{took / ideal:.3f}",
        str(seen[429]),
        "—" if after is None else f"{after:.3f}",
        "—" if window is None else f"{window:.3f}",
        f"{ideal / took:.3f}" if took else "—",
        "—" if (half := second_half(record, case.per_second())) is None else f"{half:.3f}",
        str(seen[503]),
        str(len(record)),
        str(n - len(answered)),
        "—" if result.done is None else str(len(result.done)),
        f"{result.wall:.1f}",
        f"{result.cpu:.2f}",
        f"{result.peak_rss_mb:.0f}",
        share,
    ]


def summary_share(logs: list[Path]) -> str:
    """The largest share of the limit the clients' summaries state; — without one."""
    shares = [
        float(found.group(1))
        for log in logs
        if log.exists()
        for found in SUMMARY_SHARE.finditer(log.read_text(errors="replace"))
    ]
    return f"{max(shares):.1f}%" if shares else "—"


@contextmanager
def front_of(case: Case, mock: MockAPI) -> Iterator[Any]:
    """The server the client talks to, and whose record judges it: the mock API, or a real
    limiter in front of it enforcing the case's limit."""
    if case.front is None:
        yield mock
        return
    kind, *how = case.front.split(":")
    limits = parse_limits(case.server[case.server.index("--limit") + 1])
    limit = limits[0]
    if kind == "nginx":
        per_minute = round(60 * limit.count / limit.period)
        with fronts.nginx(mock.port, per_minute, int(how[0]), nodelay="nodelay" in how) as front:
            yield front
    else:
        with fronts.haproxy(
            mock.port, limit.count, round(limit.period), retry_after=int(how[0])
        ) as front:
            yield front


def run_workers(
    case: Case, api: Any, ids: str, workdir: Path, timeout: float
) -> tuple[Result, list[Path]]:
    """`case.workers` ingest workers of one distributed job, started together, with a
    redis-server and a PostgreSQL database of their own: the result and each worker's log."""
    with (
        running_redis() as redis,
        running_postgres(durable=True) as postgres,
        postgres.database() as database,
    ):
        workers = launch_workers(
            api.url_template,
            ids,
            case.configured,
            workdir,
            count=case.workers,
            database=database,
            redis=redis.url(),
        )
        return run_together(workers, timeout), [worker.log for worker in workers]


def from_its_window(record: list[dict[str, Any]], case: Case) -> float | None:
    """Against fixed windows: requests answered from the start of the window (of the
    server's shortest period, aligned as the mock aligns it) that held the first 429 to
    the last request, per second, as a share of the server's limit; None otherwise."""
    server = case.server
    if "--algorithm" not in server or server[server.index("--algorithm") + 1] != "fixed":
        return None
    period = min(limit.period for limit in parse_limits(server[server.index("--limit") + 1]))
    limited = [e["t"] for e in record if e["status"] == 429]
    if not limited:
        return None
    start, last = math.floor(min(limited) / period) * period, max(e["t"] for e in record)
    served = sum(1 for e in record if e["t"] >= start and e["status"] != 429)
    return served / (last - start) / case.per_second() if last > start else None


def after_first_429(record: list[dict[str, Any]], per_second: float) -> float | None:
    """Requests answered (not 429) from the first 429 to the last request, per second,
    as a share of the server's limit; None without a 429."""
    limited = [e["t"] for e in record if e["status"] == 429]
    if not limited:
        return None
    first, last = min(limited), max(e["t"] for e in record)
    served = sum(1 for e in record if e["t"] >= first and e["status"] != 429)
    return served / (last - first) / per_second if last > first else None


def second_half(record: list[dict[str, Any]], per_second: float) -> float | None:
    """Requests answered (not 429) in the second half of the span, per second, as a share
    of the server's limit: the pace the run settled at, its discovery behind it."""
    if len(record) < 2:
        return None
    first, last = record[0]["t"], record[-1]["t"]
    half = (first + last) / 2
    served = sum(1 for e in record if e["t"] >= half and e["status"] != 429)
    return served / (last - half) / per_second if last > half else None


def outcome(result: Result) -> str:
    if result.timed_out:
        return "timeout"
    return "ok" if result.returncode == 0 else f"exit {result.returncode}"


def markdown(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [list(COLUMNS), *rows]) for i in range(len(COLUMNS))]
    left = {"case", "server", "client", "outcome"}

    def line(cells: list[str] | tuple[str, ...]) -> str:
        padded = [
            c.ljust(w) if h in left else c.rjust(w)
            for c, w, h in zip(cells, widths, COLUMNS, strict=True)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = [
        "-" * w if h in left else "-" * (w - 1) + ":" for w, h in zip(widths, COLUMNS, strict=True)
    ]
    return "\n".join([line(COLUMNS), "| " + " | ".join(rule) + " |", *map(line, rows)])


def code_version() -> str:
    """The commit whose ingest/ is measured, and whether the working tree differs from it."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False
        )
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "ingest")
    return f"`{commit}`" + (" with uncommitted changes under ingest/" if dirty else "")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def report(
    table: str,
    *,
    command: str,
    n: int | None,
    cases: list[str],
    took: float,
    load: float,
    code: str,
) -> str:
    ideal = CASES["fixed"].ideal(n or DEFAULT_IDS)
    lines = [
        "# Pacing benchmark",
        "",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; whole matrix: {took / 60:.1f} min.",
        f"- Machine: {os.cpu_count()} CPUs ({cpu_model()}), load average {load:.2f} at start; "
        f"Python {platform.python_version()}, Scrapy {scrapy.__version__}.",
        f"- Command: `{command}`; code: {code}.",
        (
            f"- Scale: {n} ids per run (`1-{n}`)"
            if n
            else f"- Scale: each case's ids per run (listed below), else {DEFAULT_IDS}"
        )
        + f"; at a nominal {NOMINAL}, {n or DEFAULT_IDS} ids take {ideal:.1f} s "
        "ideally; a run still going after 2 x ideal + 60 s is killed (outcome `timeout`).",
        "- One run per cell, nothing averaged: a cell that a few milliseconds decide (a 429 "
        "from a token bucket with burst 1) can differ from one run to the next.",
        "",
        "Each row is one client fetching the same ids, given the same configured rate, from a "
        "fresh mock API process (`python -m mockapi`). Every figure except the outcome "
        "and the last four columns comes from the server's record of the requests it received.",
        "",
        "- **server**: whose record judges the row: `mock`, the mock API's own limiter; "
        "`nginx` (`limit_req`) or `haproxy` (a stick table's `http_req_rate`), a real "
        "limiter started by the benchmark in front of a mock API with no limit of its own, "
        "configured as its documentation describes (tests/benchmarks/fronts.py), its "
        "access log the record.",
        "- **span**: first request to last, as the server saw them.",
        "- **ideal** = (n - 1) x period / count for the server's real limit; with several "
        "limits, the largest of these, i.e. the span of n requests evenly spaced at the "
        "slowest limit. A token bucket with burst b allows (n - b) x period / count; fixed and "
        "sliding windows let a client send a whole window's count at once, so a bursty client "
        "can finish below 1.0 without a 429.",
        "- **429s**, **503s**, **requests**: responses and requests the server recorded.",
        "- **after 1st 429**: requests answered (not 429) from the first 429 to the last "
        "request, per second, as a share of the server's slowest limit (— without a 429).",
        "- **from its window** (fixed windows only): the same from the start of the window "
        "(of the server's shortest period) that held the first 429: a window's quota spent "
        "early is followed by a wait to its end that the first figure counts, not the "
        "requests that spent it.",
        "- **efficiency** = ideal / span: against smooth pacing at the slowest limit.",
        "- **second half**: requests answered (not 429) from the middle of the span to its "
        "end, per second, as a share of the slowest limit: the pace a run settled at.",
        "- **ids lost**: ids the server never answered 200 or 404.",
        "- **done (client)**: ids the client itself reports done (ingest: `stored` and "
        "`not_found` rows in its SQLite database); — when it was killed or failed.",
        "- **wall**: the client process from start to exit, start-up included. **CPU**: user + "
        "system seconds of the client process (from `wait4`). **peak RSS**: its VmHWM, sampled "
        "every 50 ms (`ru_maxrss` would not do: at exec, Linux folds the launching process's "
        "own peak into it).",
        "- **summary share**: the share of the limit that ingest's own summary states (the "
        "largest of several workers'): requests the server accepted and counted, per second, "
        "from the first or from when the limit it measures against was inferred.",
        "- A case with several workers (`-N-workers`, ingest only) starts N `scrapy crawl api` "
        "processes of one job at once (`DISTRIBUTED=1`: one queue and one rate-limit bucket "
        "in a redis-server of its own) storing into one PostgreSQL database of its own: "
        "**done (client)** is read from that database, **wall** is the whole job (the first "
        "start to the last exit), **CPU** the sum of the workers' and **peak RSS** the "
        "largest worker's; **outcome** is the first nonzero exit code, if any.",
        "",
        "Cases:",
        "",
    ]
    lines += [
        f"- `{name}`: {CASES[name].about} (`{' '.join(CASES[name].server)}`"
        + (f"; {CASES[name].ids} ids" if CASES[name].ids and not n else "")
        + ")"
        for name in cases
    ]
    lines += [
        "",
        "Clients (tests/benchmarks/clients.py): `ingest` is `scrapy crawl api` from the repo "
        "root, given the case's rate; `auto` is the same crawl told nothing "
        "(`RATELIMIT_RATE=auto`: it finds the limit; in the `auto-` cases the `ingest` row "
        "is that already); `scrapy-alone` is plain Scrapy with DOWNLOAD_DELAY = "
        "period/limit, no jitter, one request at a time and its default RetryMiddleware; "
        "`aiolimiter` is aiohttp + `AsyncLimiter(count, period)` + tenacity (exponential "
        f"backoff, at least Retry-After, {TENACITY_ATTEMPTS} attempts), "
        f"{AIOLIMITER_CONCURRENCY} at a time; `semaphore` is `Semaphore(count)` over all "
        "ids, a sleep of one period after every `count` requests and after a 429 "
        f"({SEMAPHORE_TRIES} tries; other errors are not retried).",
        "",
        table,
        "",
    ]
    return "\n".join(lines)


def split(value: str, known: tuple[str, ...]) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in names if v not in known]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(known)}, got {value!r}")
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--clients", type=lambda v: split(v, NAMES), default=list(NAMES))
    add("--cases", type=lambda v: split(v, tuple(CASES)), default=list(CASES))
    add("--ids", type=int, help=f"ids per run (default: the case's, else {DEFAULT_IDS})")
    add("--out", type=Path, default=REPO_ROOT / "docs" / "benchmarks" / "pacing.md")
    args = parser.parse_args()
    if args.ids is not None and args.ids < 2:
        parser.error(f"--ids must be at least 2, got {args.ids}")
    command = shlex.join(["python", "-m", "tests.benchmarks.pacing", *sys.argv[1:]])
    load, started, code = os.getloadavg()[0], time.monotonic(), code_version()
    rows = []
    for name in args.cases:
        for client in args.clients:
            case = CASES[name]
            if (case.workers > 1 or case.configured == "auto") and client != "ingest":
                continue  # the auto cases: the ingest row is auto already
            n = args.ids or CASES[name].ids or DEFAULT_IDS
            rows.append(measure(CASES[name], name, client, n))
            print(" | ".join(rows[-1]), flush=True)
    table = markdown(rows)
    took = time.monotonic() - started
    if (now := code_version()) != code:
        code = f"{code} at the start, {now} at the end"
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        report(
            table, command=command, n=args.ids, cases=args.cases, took=took, load=load, code=code
        )
    )
    print(f"written to {args.out} ({took / 60:.1f} min)")


if __name__ == "__main__":
    main()
