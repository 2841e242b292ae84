"""A long job against a daily allowance: its plan, and a crawl that spends one and goes on later.

    python -m tests.benchmarks.daily [--runs 5] [--skip-crawl]

1. ``scrapy ingest-plan -a ids=1-40000 -s RATELIMIT_RATE=100/60,15000/86400``, timed
   ``--runs`` times from the command's start to its exit (a SQLite database with the
   tables and nothing done): the requests, the days, each day's allowance end, and the wall time.
2. ``scrapy crawl api -a ids=1-400 -s RATELIMIT_RATE=100/60,300/600 -s
   RATELIMIT_MAX_PAUSE=300`` (a short stand-in for a day: its allowance of 300, spent in
   3 minutes, frees 7 minutes later, longer than the pause allowed, as a day's 21 hours
   are longer than the default 15 minutes) against the mock API enforcing the same
   (sliding windows): the exit code,
   the requests sent, the time it says it may go on; then the same command run at that
   time: its exit code, the requests it sent, ids requested twice, ids stored. About 11
   minutes.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime

from ingest.storage import open_store
from tests.support.crawl import REPO_ROOT, crawl, environment, terminal_states
from tests.support.mockapi import MockAPI, ids_requested_more_than_once, statuses

PLAN_RATE = "100/60,15000/86400"
DAILY_RATE = "100/60,300/600"
DAILY_MAX_PAUSE = 300
RESUME = re.compile(r"Run the same command again after (\S+ \S+) UTC")


def time_plan(runs: int) -> None:
    with tempfile.TemporaryDirectory(prefix="plan-") as workdir:
        store = open_store(f"sqlite:///{workdir}/x.db")
        store.connect()  # the tables, empty: the ids not done are counted by SQL
        store.close()
        command = [
            sys.executable, "-m", "scrapy", "ingest-plan", "-a", "ids=1-40000",
            "-s", f"RATELIMIT_RATE={PLAN_RATE}", "-s", f"DATABASE_URL=sqlite:///{workdir}/x.db",
        ]  # fmt: skip
        walls, shown = [], None
        for _ in range(runs):
            began = time.monotonic()
            done = subprocess.run(
                command, cwd=REPO_ROOT, env=environment(), capture_output=True, text=True,
                check=True,
            )  # fmt: skip
            walls.append(time.monotonic() - began)
            shown = done.stdout
        found = json.loads(
            subprocess.run(
                [*command, "--json"], cwd=REPO_ROOT, env=environment(), capture_output=True,
                text=True, check=True,
            ).stdout
        )  # fmt: skip
    print(f"$ scrapy ingest-plan -a ids=1-40000 -s RATELIMIT_RATE={PLAN_RATE}")
    print(shown, end="")
    print(
        f"requests {found['requests']}, days {found['days']}, allowances "
        f"{[p['requests'] for p in found['allowance']['periods']]}"
    )
    print(
        f"wall time over {runs} runs: min {min(walls):.2f} s, median "
        f"{statistics.median(walls):.2f} s, max {max(walls):.2f} s"
    )


def daily_crawl() -> None:
    with (
        tempfile.TemporaryDirectory(prefix="daily-") as workdir,
        MockAPI("--limit", DAILY_RATE, "--algorithm", "sliding") as api,
    ):
        db = f"sqlite:///{workdir}/ingest.db"
        settings = {
            "RATELIMIT_RATE": DAILY_RATE, "RATELIMIT_MAX_PAUSE": DAILY_MAX_PAUSE,
            "PROGRESS_INTERVAL": 0,
        }  # fmt: skip
        began = time.time()
        first = crawl(api.url_template, db, "-a", "ids=1-400", timeout=900, **settings)
        sent = len(api.requests())
        said = RESUME.search(first.stderr)
        print(
            f"$ scrapy crawl api -a ids=1-400 -s RATELIMIT_RATE={DAILY_RATE} "
            f"-s RATELIMIT_MAX_PAUSE={DAILY_MAX_PAUSE}"
        )
        print(f"first run: exit {first.returncode} after {time.time() - began:.0f} s, {sent} sent")
        if said is None:
            print(first.stderr[-3000:])
            return
        line = next(line for line in first.stderr.splitlines() if "allowance" in line)
        print(f"  {line}")
        resume = datetime.strptime(said[1], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()
        time.sleep(max(0.0, resume - time.time()))
        second = crawl(api.url_template, db, "-a", "ids=1-400", timeout=900, **settings)
        record = api.requests()
        stored = sum(1 for state in terminal_states(db).values() if state == "stored")
        print(
            f"the same command at {said[1]} UTC: exit {second.returncode}, "
            f"{len(record) - sent} sent; in all {dict(statuses(record))}, ids requested twice "
            f"{len(ids_requested_more_than_once(record))}, stored {stored}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs of ingest-plan")
    parser.add_argument("--skip-crawl", action="store_true", help="only the plan")
    args = parser.parse_args()
    time_plan(max(1, args.runs))
    if not args.skip_crawl:
        daily_crawl()


if __name__ == "__main__":
    main()
