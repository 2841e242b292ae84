"""``scrapy ingest-status`` on a big job: wall time and peak RSS of --json, --pending, --failed.

    python -m tests.benchmarks.status [--n 1000000] [--pending-share 0.1] [--ids-file]

Builds an SQLite database in which ``n`` ids (1..n) are spread over the four states,
a share of them left pending, then runs each mode as users do (its own process) and
prints the time and peak resident memory of that process.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ingest.storage import open_store
from tests.support.crawl import REPO_ROOT, environment

LIMIT = 5.0  # seconds, for 1,000,000 ids


def build(path: Path, n: int, pending_share: float, seed: int = 17) -> int:
    """Ids 1..n: a ``pending_share`` without a row, the rest stored or failed; the pending count."""
    store = open_store(f"sqlite:///{path}")
    store.connect()
    store.close()
    rand = random.Random(seed)
    items, failures, pending = [], [], 0
    for n_id in range(1, n + 1):
        draw = rand.random()
        if draw < pending_share:
            pending += 1
        elif draw < pending_share + 0.02:
            state = ("not_found", "invalid", "failed")[n_id % 3]
            failures.append((str(n_id), state, f"reason {n_id}", "http://api/x", 1.0))
        else:
            items.append((str(n_id), f'{{"id": {n_id}}}', "http://api/x", 200, 1.0))
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "INSERT INTO items (id, data, url, status, fetched_at) VALUES (?, ?, ?, ?, ?)", items
        )
        conn.executemany(
            "INSERT INTO failures (id, state, reason, url, fetched_at) VALUES (?, ?, ?, ?, ?)",
            failures,
        )
    return pending


def run(args: list[str], out: Path) -> tuple[float, float, int]:
    """Seconds, peak RSS in MiB and exit code of ``scrapy ingest-status ARGS > out``.

    The peak is the child's ``ru_maxrss``, which includes what this process held when it
    forked (about 40 MiB): an upper bound."""
    started = time.perf_counter()
    with out.open("w") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "scrapy", "ingest-status", *args],
            cwd=REPO_ROOT, env=environment(), stdout=sink, stderr=subprocess.PIPE,
        )  # fmt: skip
        _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        assert process.stderr is not None
        sys.stderr.write(process.stderr.read().decode())
    return elapsed, usage.ru_maxrss / 1024, process.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--pending-share", type=float, default=0.1)
    parser.add_argument("--ids-file", action="store_true", help="the job as a file of ids too")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "status.db"
        started = time.perf_counter()
        # Built in a process of its own: a child's peak RSS counts its parent's memory at
        # the fork, so this one must stay small.
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            pending = pool.apply(build, (db, opts.n, opts.pending_share))
        print(f"built {opts.n:,} ids ({pending:,} pending) in {time.perf_counter() - started:.1f}s")
        database = f"DATABASE_URL=sqlite:///{db}"
        jobs = [("ids", f"ids=1-{opts.n}")]
        if opts.ids_file:
            ids_file = Path(tmp) / "ids.txt"
            ids_file.write_text("".join(f"{i}\n" for i in range(1, opts.n + 1)))
            jobs.append(("ids_file", f"ids_file={ids_file}"))
        print(f"{'job':<9} {'mode':<10} {'seconds':>8} {'peak RSS':>10}  output")
        for job, spec in jobs:
            for mode in ("(text)", "--json", "--pending", "--failed"):
                out = Path(tmp) / "out.txt"
                extra = [] if mode == "(text)" else [mode]
                seconds, rss, code = run(["-s", database, "-a", spec, *extra], out)
                lines = sum(1 for _ in out.open())
                verdict = "" if seconds <= LIMIT else "  (over 5 s)"
                print(
                    f"{job:<9} {mode:<10} {seconds:>7.2f}s {rss:>7.0f} MiB  "
                    f"{lines:,} lines, exit {code}{verdict}"
                )
                if mode == "--pending":
                    assert lines == pending, f"--pending wrote {lines:,} ids, {pending:,} pending"


if __name__ == "__main__":
    main()
