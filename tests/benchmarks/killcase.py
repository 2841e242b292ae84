"""Workers through Redis, one killed with SIGKILL and started again, run many times: does every
run complete, and how long did the job go without a request while ids had no outcome?

    python -m tests.benchmarks.killcase [--runs 50] [--workers 4] [--ids 30000] [--size 100]
        [--rate 600/60] [--kill-after 2-8] [--victim any|seeder] [--load-every 3] [--stall 60]
        [--timeout 900]

Each run: the mock API at ``--rate`` (a sliding window), a fresh redis-server and SQLite file,
``--workers`` workers of one job in batches of ``--size``; ``--kill-after`` seconds in (a
random time in that range) one worker, picked at random (``--victim seeder``: the one
seeding the job's queue then, if one is), is killed with SIGKILL and the same command
started again, as a supervisor would. Every ``--load-every``-th run goes beside two
processes that keep both cores busy. A run has stalled when the mock has answered no request
for ``--stall`` seconds while workers are alive and ids have no outcome; it is then stopped,
its workers' logs kept in ``--logs``. Printed per run: the outcome, wall time, requests,
ids stored, the longest gap between two requests while ids were pending.
"""

from __future__ import annotations

import argparse
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import redis as redis_client

from tests.benchmarks.batch import ids_of, rows
from tests.support.crawl import crawl_command, environment, terminal_states
from tests.support.mockapi import REPO_ROOT, MockAPI
from tests.support.redis import running_redis

LOAD = "while True: pass"


def worker(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            command, cwd=REPO_ROOT, env=environment(), stdout=subprocess.DEVNULL, stderr=out
        )


def job_state(url: str) -> str:
    """Every key of the job in Redis but the queue's and the filter's contents: what a
    stalled job waits for."""
    lines = []
    with redis_client.Redis.from_url(url, decode_responses=True) as client:
        for key in sorted(client.keys("ingest:*")):
            kind = client.type(key)
            if kind == "hash":
                value: object = client.hgetall(key)
            elif kind == "string":
                value = client.get(key)
            elif kind == "zset":
                value = f"{client.zcard(key)} entries"
            elif kind == "set":
                value = f"{client.scard(key)} members"
            else:
                value = kind
            lines.append(f"{key} (ttl {client.ttl(key)}): {value}")
        lines.append(f"server time {client.time()}")
    return "\n".join(lines) + "\n"


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def victim(rng: random.Random, logs: list[Path], who: str) -> int:
    """The worker to kill: any, or (``seeder``) the one seeding now, if one is."""
    if who == "seeder":
        for number, log in enumerate(logs):
            text = log.read_text(errors="replace")
            if "Seeding the job's queue" in text and "ids are all queued" not in text:
                return number
    return rng.randrange(len(logs))


class Run:
    """One run of the kill case: its workers, the mock's record, what it waited for."""

    def __init__(self, args: argparse.Namespace, api: MockAPI, db: str, redis_url: str) -> None:
        self.args, self.api, self.db, self.redis_url = args, api, db, redis_url
        self.command = crawl_command(
            api.url_template, db, "-a", f"ids=1-{args.ids}",
            RATELIMIT_RATE=args.rate, DISTRIBUTED=1, REDIS_URL=redis_url,
            API_BATCH_SIZE=args.size, API_BATCH_URL=api.batch_url_template,
            PROGRESS_INTERVAL=0, LOG_LEVEL="INFO",
        )  # fmt: skip

    def watch(self, rng: random.Random, kill_at: float, logs: list[Path]) -> tuple[str, float]:
        """Start the workers, kill one at ``kill_at`` and start it again; returns the outcome
        and the longest time without a request while ids had no outcome."""
        args, began = self.args, time.monotonic()
        self.procs = [worker(self.command, log) for log in logs]
        killed, last_count, last_change, longest = False, 0, began, 0.0
        while any(p.poll() is None for p in self.procs):
            now = time.monotonic()
            if not killed and now - began >= kill_at:
                number = victim(rng, logs, args.victim)
                self.procs[number].send_signal(signal.SIGKILL)
                self.procs[number].wait()
                with logs[number].open("a") as out:
                    out.write(f"\n===== killed at {now - began:.1f}s, started again =====\n")
                self.procs[number] = worker(self.command, logs[number])
                killed = True
            count = len(self.api.requests())
            if count != last_count:
                last_count, last_change = count, now
            elif rows(self.db[len("sqlite:///") :]) < args.ids:
                longest = max(longest, now - last_change)
                if now - last_change > args.stall:
                    (logs[0].parent / "redis.txt").write_text(job_state(self.redis_url))
                    return "STALLED", longest
            if now - began > args.timeout:
                return "TIMEOUT", longest
            time.sleep(0.5)
        return "complete", longest


def one_run(number: int, args: argparse.Namespace, loaded: bool, logs: Path) -> dict[str, Any]:
    load = [subprocess.Popen([sys.executable, "-c", LOAD]) for _ in range(2 if loaded else 0)]
    rng = random.Random(args.seed + number)
    low, high = (float(x) for x in args.kill_after.split("-"))
    kill_at = rng.uniform(low, high)
    run_logs = logs / f"run-{number:03d}"
    run_logs.mkdir(parents=True, exist_ok=True)
    try:
        with (
            MockAPI("--limit", args.rate, "--algorithm", "sliding") as api,
            running_redis() as redis,
            tempfile.TemporaryDirectory() as tmp,
        ):
            run = Run(args, api, f"sqlite:///{tmp}/kill.db", redis.url())
            began = time.monotonic()
            logs_ = [run_logs / f"worker-{i}.log" for i in range(args.workers)]
            outcome, longest = run.watch(rng, kill_at, logs_)
            wall = time.monotonic() - began
            stop(run.procs)
            record = api.requests()
            states = terminal_states(run.db)
            asked = Counter(id_ for entry in record for id_ in ids_of(entry))
    finally:
        for p in load:
            p.kill()
            p.wait()
    if outcome == "complete" and (len(states) < args.ids or any(p.returncode for p in run.procs)):
        outcome = "INCOMPLETE"
    return {
        "run": number, "loaded": loaded, "outcome": outcome, "wall": wall, "kill_at": kill_at,
        "requests": len(record), "statuses": dict(Counter(e["status"] for e in record)),
        "stored": len(states), "asked_twice": sum(c > 1 for c in asked.values()),
        "longest_gap": longest, "exit": [p.returncode for p in run.procs], "logs": str(run_logs),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--ids", type=int, default=30_000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--rate", default="600/60")
    parser.add_argument("--kill-after", default="2-8", help="seconds: a range to pick from")
    parser.add_argument("--victim", choices=["any", "seeder"], default="any")
    parser.add_argument("--load-every", type=int, default=3, help="0: never beside load")
    parser.add_argument("--stall", type=float, default=60.0)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--seed", type=int, default=26)
    parser.add_argument("--logs", default=str(Path(tempfile.gettempdir()) / "ingest-killcase"))
    args = parser.parse_args()
    results = []
    for number in range(args.runs):
        loaded = bool(args.load_every) and number % args.load_every == args.load_every - 1
        result = one_run(number, args, loaded, Path(args.logs))
        results.append(result)
        print(
            f"run {number:3d}{' loaded' if loaded else '       '} {result['outcome']:10s} "
            f"wall {result['wall']:6.1f}s kill at {result['kill_at']:4.1f}s "
            f"requests {result['requests']:5d} {result['statuses']} stored {result['stored']} "
            f"asked twice {result['asked_twice']} longest gap {result['longest_gap']:.1f}s "
            f"exit {result['exit']}",
            flush=True,
        )
    bad = [r for r in results if r["outcome"] != "complete"]
    worst = max((r["longest_gap"] for r in results), default=0.0)
    print(f"{len(results) - len(bad)} of {len(results)} complete; longest gap {worst:.1f}s")
    for result in bad:
        print(f"  run {result['run']}: {result['outcome']}, logs in {result['logs']}")


if __name__ == "__main__":
    main()
