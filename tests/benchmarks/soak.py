"""A long crawl over several workers, with faults on purpose, judged from the mock's record and
the database; and how throughput grows with workers.

    python -m tests.benchmarks.soak [--ids 1000000] [--workers 10] [--keys 3] [--size 100]
        [--duration 1200 | --rate 6000/60] [--faults all] [--kill-every 120] [--down 30]
        [--redis-down 5] [--no-aof] [--latency 0] [--timeout SECONDS]
    python -m tests.benchmarks.soak --scaling 1,2,4,8,10 [--ids 200000] [--rate 6000/60] ...

The soak: the mock API with ``--keys`` keys, each limited to ``--rate`` (a sliding window,
the crawler configured the same), or, with ``--duration``, to the rate at which the job
takes that long; PostgreSQL (fsync on) and Redis (append-only file unless ``--no-aof``) as
real servers; ``--workers`` processes of ``scrapy crawl api -s DISTRIBUTED=1`` in batches of
``--size`` under a supervisor that starts again any that dies. The faults (``--faults``,
comma-separated, or all or none), spread over the expected duration:

- ``kill``: kill -9 of a random worker every ``--kill-every`` seconds, started again;
- ``pg``: PostgreSQL restarted (pg_ctl stop -m fast, start); ``pg-down``: down ``--down`` s;
- ``redis``: Redis stopped, and started again ``--redis-down`` s later (what it held kept
  with the append-only file, lost without);
- ``api-down``: the API gone (connections refused) for ``--down`` s;
- ``revoke``: key 2 revoked.

Judged: every id terminal exactly once, duplicate rows, 429s per key, ids and requests
re-sent after each fault against what it had in flight, items/s, CPU seconds per 1,000
items, peak RSS of each worker against its RSS at 10 % of its life, Redis memory, the
mean database write. ``--scaling``: the same crawl without faults for each number of
workers, a fresh set of servers each: items/s, CPU per worker, the machine's CPU, Redis
commands per request, the mean database write.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from tests.benchmarks.soak_cluster import (
    Sampler,
    Servers,
    Supervisor,
    cpu_seconds,
    key_names,
    servers,
    worker_command,
    worker_env,
)
from tests.benchmarks.soak_judge import Fault, Report, judge, render
from tests.support.crawl import duplicate_rows, terminal_states

FAULTS = ("kill", "pg", "pg-down", "redis", "api-down", "revoke")
AT = {"pg": 0.15, "pg-down": 0.30, "redis": 0.45, "api-down": 0.60, "revoke": 0.75}


@dataclass
class Params:
    ids: int = 1_000_000
    workers: int = 10
    keys: int = 3
    size: int = 100
    rate: str | None = None  # each key's limit; None: from duration
    server_rate: str | None = None  # the mock's limit, if not the crawler's (headroom)
    duration: float = 1200.0
    faults: tuple[str, ...] = FAULTS
    kill_every: float = 120.0
    down: float = 30.0
    redis_down: float = 5.0
    aof: bool = True
    latency: float = 0.0
    timeout: float | None = None
    seed: int = 26

    def key_rate(self) -> str:
        """Each key's limit: as given, or the one at which the job takes ``duration``."""
        if self.rate:
            return self.rate
        requests = math.ceil(self.ids / self.size)
        return f"{math.ceil(requests * 60 / (self.duration * self.keys))}/60"

    def expected(self) -> float:
        limit, period = self.key_rate().split("/")
        return math.ceil(self.ids / self.size) / (int(limit) / float(period) * self.keys)


def schedule(params: Params) -> list[tuple[float, str]]:
    """(seconds from the start, fault), in order."""
    span = params.expected()
    planned = [(AT[name] * span, name) for name in params.faults if name in AT]
    if "kill" in params.faults:
        at = params.kill_every
        while at < 0.9 * span:
            planned.append((at, "kill"))
            at += params.kill_every
    return sorted(planned)


class Faults:
    """Each fault in a thread of its own, so that the crawl is watched meanwhile."""

    def __init__(self, params: Params, cluster: Servers, supervisor: Supervisor) -> None:
        self.params, self.cluster, self.supervisor = params, cluster, supervisor
        self.rng = random.Random(params.seed)
        self.done: list[Fault] = []
        self.threads: list[threading.Thread] = []
        self.redis_cpu = 0.0

    def start(self, name: str) -> None:
        fault = Fault(name, time.time())
        self.done.append(fault)
        action: Callable[[Fault], None] = getattr(self, name.replace("-", "_"))
        thread = threading.Thread(target=self._run, args=(action, fault), daemon=True)
        self.threads.append(thread)
        thread.start()

    def _run(self, action: Callable[[Fault], None], fault: Fault) -> None:
        try:
            action(fault)
        except Exception as exc:  # a benchmark reports, it does not die
            fault.detail = f"failed: {exc!r}"
        fault.ended = time.time()

    def kill(self, fault: Fault) -> None:
        victim = self.supervisor.kill(self.rng)
        if victim is not None:
            fault.detail, fault.agent = f"worker {victim.number}", victim.agent

    def pg(self, fault: Fault) -> None:
        self.cluster.postgres.stop("fast")
        self.cluster.postgres.start()

    def pg_down(self, fault: Fault) -> None:
        with self.cluster.postgres.stopped("fast"):
            time.sleep(self.params.down)

    def redis(self, fault: Fault) -> None:
        server = self.cluster.redis
        if server.process is not None:
            self.redis_cpu += cpu_seconds(server.process.pid)
        server.stop()
        time.sleep(self.params.redis_down)
        server.start()
        fault.detail = "append-only file" if self.params.aof else "nothing kept"

    def api_down(self, fault: Fault) -> None:
        self.cluster.api.down(self.params.down)
        time.sleep(self.params.down)

    def revoke(self, fault: Fault) -> None:
        self.cluster.api.revoke(self.cluster.tokens[1])
        fault.detail = "key 2"

    def join(self) -> None:
        for thread in self.threads:
            thread.join()


def soak(params: Params, logs: Path) -> Report:
    """One soak, start to end; the servers stopped after it."""
    rate = params.key_rate()
    limit = params.server_rate or rate
    with servers(params.keys, limit, latency=params.latency, aof=params.aof) as cluster:
        command = worker_command(cluster, params.ids, params.size, rate)
        began = time.time()
        supervisor = Supervisor(command, worker_env(cluster), logs, params.workers)
        sampler = Sampler(supervisor, cluster)
        sampler.start()
        faults = Faults(params, cluster, supervisor)
        pending = schedule(params)
        timeout = params.timeout or 3 * params.expected() + 600
        while supervisor.poll():
            now = time.time() - began
            while pending and pending[0][0] <= now:
                faults.start(pending.pop(0)[1])
            if now > timeout:
                supervisor.stop()
                break
            time.sleep(0.5)
        ended = time.time()
        sampler.halt.set()
        faults.join()
        record = cluster.api.requests()
        kept = {
            "record": record, "faults": [vars(f) for f in faults.done], "began": began,
            "rss": {i.agent: i.rss for i in supervisor.all},
        }  # fmt: skip
        (logs / "record.json").write_text(json.dumps(kept))
        states = terminal_states(cluster.database_url)
        report = judge(
            params.ids, record, states, duplicate_rows(cluster.database_url),
            faults=faults.done, incarnations=supervisor.all, keys=key_names(cluster),
            workers=params.workers, size=params.size, began=began, ended=ended,
        )  # fmt: skip
        report.restarts = supervisor.restarts - sum(1 for f in faults.done if f.name == "kill")
        report.cpu_other = {
            "mock API": cpu_seconds(cluster.api.process.pid),
            "PostgreSQL": cluster.postgres_cpu(),
            "Redis": faults.redis_cpu + _redis_cpu(cluster),
        }
        memory = [used for _, used in sampler.redis_memory] or [0]
        report.redis_memory = (memory[0], max(memory), memory[-1])
        for fault in faults.done:
            print(f"  fault {fault.name} at {fault.began - began:.0f}s for "
                  f"{fault.ended - fault.began:.1f}s {fault.detail}")  # fmt: skip
    return report


def _redis_cpu(cluster: Servers) -> float:
    with redis.Redis.from_url(cluster.redis.url()) as client:
        info: dict[str, Any] = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ids", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=10)
    parser.add_argument("--keys", type=int, default=3)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--duration", type=float, default=1200.0)
    parser.add_argument("--rate", help="each key's limit, N/SECONDS (instead of --duration)")
    parser.add_argument("--faults", default="all", help="comma-separated, all or none")
    parser.add_argument("--kill-every", type=float, default=120.0)
    parser.add_argument("--down", type=float, default=30.0)
    parser.add_argument("--redis-down", type=float, default=5.0)
    parser.add_argument("--no-aof", action="store_true")
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--timeout", type=float)
    parser.add_argument("--scaling", help="numbers of workers, comma-separated: no faults")
    parser.add_argument("--logs", default=str(Path(tempfile.gettempdir()) / "ingest-soak"))
    args = parser.parse_args()
    named = {"all": FAULTS, "none": ()}
    faults = named[args.faults] if args.faults in named else tuple(args.faults.split(","))
    unknown = set(faults) - set(FAULTS)
    if unknown:
        parser.error(f"--faults: unknown {sorted(unknown)}; known: {', '.join(FAULTS)}")
    params = Params(
        ids=args.ids, workers=args.workers, keys=args.keys, size=args.size, rate=args.rate,
        duration=args.duration, faults=faults, kill_every=args.kill_every, down=args.down,
        redis_down=args.redis_down, aof=not args.no_aof, latency=args.latency,
        timeout=args.timeout,
    )  # fmt: skip
    if args.scaling:
        from tests.benchmarks.soak_scaling import scaling

        scaling(params, [int(n) for n in args.scaling.split(",")], Path(args.logs))
        return
    logs = Path(args.logs)
    logs.mkdir(parents=True, exist_ok=True)
    print(f"soak: {params.ids:,} ids, {params.workers} workers, {params.keys} keys at "
          f"{params.key_rate()} each, batches of {params.size}, faults {','.join(faults)}; "
          f"expected {params.expected():.0f} s; logs in {logs}", flush=True)  # fmt: skip
    report = soak(params, logs)
    print(render(report, f"{params.ids:,} ids, {params.workers} workers"))


if __name__ == "__main__":
    main()
