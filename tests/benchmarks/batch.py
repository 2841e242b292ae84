"""Many ids a request, measured: pacing by requests, and what the crawler costs per item.

    python -m tests.benchmarks.batch pacing [--n 10000] [--size 50] [--rate 100/60] [--method GET]
    python -m tests.benchmarks.batch throughput [--n 100000] [--size 100] [--rate 6000/60]

``pacing``: a crawl of N ids against a mock API whose limit equals the configured
rate (a fixed window): the requests it received, 429s, the span from the first to
the last request against the ideal for that many requests, and whether every id
was asked for once and ended in exactly one state.

``throughput``: a crawl at a high rate with big batches, into SQLite: items per
second end to end (process start to exit), CPU seconds per 1,000 items (user +
system of the crawler, from wait4), peak RSS, and the backlog of ids the server
had answered but the database did not hold yet, sampled every 0.5 s.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import tempfile
import threading
import time
from collections import Counter
from typing import Any

from tests.support.crawl import crawl_command, environment, terminal_states
from tests.support.mockapi import REPO_ROOT, MockAPI, span, statuses


def ids_of(entry: dict[str, Any]) -> list[str]:
    return entry["ids"] if entry.get("ids") is not None else [entry["id"]]


def endpoint(api: MockAPI, method: str) -> dict[str, str]:
    if method == "POST":
        return {"API_BATCH_METHOD": "POST", "API_BATCH_URL": api.base + "/items/batch"}
    return {"API_BATCH_URL": api.batch_url_template}


def rows(path: str) -> int:
    try:
        with sqlite3.connect(path, timeout=1) as conn:
            (stored,) = conn.execute("SELECT COUNT(*) FROM items").fetchone()
            (failed,) = conn.execute("SELECT COUNT(*) FROM failures").fetchone()
            return int(stored) + int(failed)
    except sqlite3.Error:
        return 0


def pacing(n: int, size: int, rate: str, method: str) -> None:
    limit, period = rate.split("/")
    with (
        MockAPI("--limit", rate, "--algorithm", "fixed") as api,
        tempfile.TemporaryDirectory() as tmp,
    ):
        db = f"sqlite:///{tmp}/batch.db"
        command = crawl_command(
            api.url_template, db, "-a", f"ids=1-{n}", RATELIMIT_RATE=rate,
            API_BATCH_SIZE=size, **endpoint(api, method),
        )  # fmt: skip
        began = time.monotonic()
        done = subprocess.run(
            command, cwd=REPO_ROOT, env=environment(), capture_output=True, text=True, check=False
        )
        wall = time.monotonic() - began
        record = api.requests()
        asked = Counter(id_ for entry in record for id_ in ids_of(entry))
        states = terminal_states(db)
    requests = len(record)
    ideal = (requests - 1) * float(period) / int(limit)
    print(f"pacing {method}: {n} ids, {size} a request, rate {rate}, exit {done.returncode}")
    print(f"  requests {requests} {dict(statuses(record))}, 429s {statuses(record)[429]}")
    print(f"  span {span(record):.2f} s, ideal for {requests} requests {ideal:.2f} s, "
          f"ratio {span(record) / ideal:.4f}; wall {wall:.1f} s")  # fmt: skip
    print(f"  ids asked for {len(asked)}, more than once {sum(c > 1 for c in asked.values())}; "
          f"terminal {len(states)} {dict(Counter(states.values()))}")  # fmt: skip


def throughput(n: int, size: int, rate: str, method: str) -> None:
    with MockAPI("--limit", "none") as api, tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/batch.db"
        command = crawl_command(
            api.url_template, f"sqlite:///{path}", "-a", f"ids=1-{n}", RATELIMIT_RATE=rate,
            API_BATCH_SIZE=size, PROGRESS_INTERVAL=0, LOG_LEVEL="WARNING", **endpoint(api, method),
        )  # fmt: skip
        backlog: list[int] = []
        stop = threading.Event()

        def watch() -> None:
            seen = 0
            answered = 0
            while not stop.wait(0.5):
                fresh = api.requests(since=seen)
                seen += len(fresh)
                answered += sum(len(ids_of(e)) for e in fresh if e["status"] == 200)
                backlog.append(max(0, answered - rows(path)))

        began = time.monotonic()
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=environment(), stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.monotonic() - began
        stop.set()
        watcher.join()
        process.returncode = os.waitstatus_to_exitcode(status)
        stored = rows(path)
        record = api.requests()
    cpu = usage.ru_utime + usage.ru_stime
    limit, period = rate.split("/")
    requests = len(record)
    ideal = (requests - 1) * float(period) / int(limit)
    print(f"throughput {method}: {n} ids, {size} a request, rate {rate}, exit {process.returncode}")
    ratio = span(record) / ideal
    print(f"  {requests} requests, 429s {statuses(record)[429]}, span/ideal {ratio:.2f}")
    print(f"  {stored} ids with an outcome in {wall:.1f} s: {stored / wall:.0f} items/s end to end")
    print(f"  CPU {cpu:.1f} s: {1000 * cpu / max(stored, 1):.3f} CPU s per 1,000 items")
    print(f"  peak RSS {usage.ru_maxrss / 1024:.0f} MB")
    if backlog:
        late = max(backlog[len(backlog) * 2 // 3 :] or [0])
        print(f"  backlog (answered, not written): max {max(backlog)}, "
              f"median {statistics.median(backlog):.0f}, last third's max {late}, "
              f"{len(backlog)} samples")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["pacing", "throughput"])
    parser.add_argument("--n", type=int)
    parser.add_argument("--size", type=int)
    parser.add_argument("--rate")
    parser.add_argument("--method", choices=["GET", "POST"], default="GET")
    args = parser.parse_args()
    if args.what == "pacing":
        pacing(args.n or 10_000, args.size or 50, args.rate or "100/60", args.method)
    else:
        throughput(args.n or 100_000, args.size or 100, args.rate or "6000/60", args.method)


if __name__ == "__main__":
    main()
