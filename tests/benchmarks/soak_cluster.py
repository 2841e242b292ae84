"""The soak's machinery: the servers (mock API, PostgreSQL, Redis), the workers under a
supervisor that starts again any that dies, and a sampler of what each process holds."""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest.config.masking import fingerprint
from tests.support.crawl import crawl_command, environment
from tests.support.mockapi import REPO_ROOT, MockAPI
from tests.support.postgres import PostgresServer, running_postgres
from tests.support.redis import RedisProcess, restartable_redis

TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
METRICS = re.compile(r"Metrics for Prometheus at (http://\S+/metrics)")
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def tokens(keys: int) -> list[str]:
    return [f"soak-key-{n + 1}" for n in range(keys)]


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process and its waited-for children (/proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(value) for value in fields[11:15]) / TICK


def rss_bytes(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except OSError:
        return 0


def children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (PostgreSQL's backends), from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdecimal():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parents[int(entry.name)] = int(
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
                )
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        kids = [child for child, of in parents.items() if of == parent]
        found += kids
        frontier += kids
    return found


@dataclass
class Servers:
    """The mock API (per-key limits, or none), a PostgreSQL database, a Redis that can restart."""

    api: MockAPI
    postgres: PostgresServer
    database_url: str
    redis: RedisProcess
    tokens: list[str]

    def postgres_pid(self) -> int:
        assert self.postgres.root is not None
        return int((self.postgres.root / "data" / "postmaster.pid").read_text().split()[0])

    def postgres_cpu(self) -> float:
        pid = self.postgres_pid()
        return sum(cpu_seconds(p) for p in [pid, *children(pid)])


@contextlib.contextmanager
def servers(
    keys: int, rate: str | None, *, latency: float = 0.0, aof: bool = True
) -> Iterator[Servers]:
    """The servers of one soak, stopped afterwards; ``rate``: each key's limit (None: none)."""
    keyed = tokens(keys)
    limit = ["--limit", rate, "--algorithm", "sliding"] if rate else ["--limit", "none"]
    with contextlib.ExitStack() as stack:
        api = stack.enter_context(
            MockAPI("--tokens", ",".join(keyed), *limit, "--latency", str(latency))
        )
        postgres = stack.enter_context(running_postgres(durable=True))
        url = stack.enter_context(postgres.database())
        redis = stack.enter_context(restartable_redis(aof=aof))
        yield Servers(api, postgres, url, redis, keyed)


@dataclass
class Incarnation:
    """One process of a worker: from its start to its end, what it used, its log."""

    number: int
    process: subprocess.Popen[bytes]
    log: Path
    started: float
    ended: float | None = None
    code: int | None = None
    cpu: float = 0.0
    rss: list[tuple[float, int]] = field(default_factory=list)
    killed: bool = False
    metrics: str | None = None  # its Prometheus endpoint, once it said where
    agent: str = ""  # its User-Agent: the mock's record names who sent each request
    writes: tuple[float, float] = (0.0, 0.0)  # storage write seconds, transactions: last read


RESTART_AFTER = 5.0  # seconds before a failed worker is started again (systemd's RestartSec=5)


class Supervisor:
    """``count`` workers running ``command``; one that dies (killed, or failing) is started
    again with the same command, as systemd or Kubernetes would. A worker that ends with
    0 (the job is complete) stays ended."""

    def __init__(self, command: list[str], env: dict[str, str], logs: Path, count: int) -> None:
        self.command, self.env, self.logs = command, env, logs
        self.lock = threading.Lock()
        self.all: list[Incarnation] = []
        self.current = [self._start(number) for number in range(count)]
        self.restarts = 0
        self.stopping = False

    def _start(self, number: int) -> Incarnation:
        life = f"{number}.{sum(i.number == number for i in self.all)}"
        log, agent = self.logs / f"worker-{life}.log", f"ingest-soak worker-{life}"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [*self.command, "-s", f"USER_AGENT={agent}"],
                cwd=REPO_ROOT, env=self.env, stdout=subprocess.DEVNULL, stderr=out,
            )  # fmt: skip
        incarnation = Incarnation(number, process, log, time.time(), agent=agent)
        self.all.append(incarnation)
        return incarnation

    def _reap(self, incarnation: Incarnation, status: int, usage: Any) -> None:
        incarnation.ended = time.time()
        incarnation.code = os.waitstatus_to_exitcode(status)
        incarnation.process.returncode = incarnation.code
        incarnation.cpu = usage.ru_utime + usage.ru_stime

    def kill(self, rng: random.Random) -> Incarnation | None:
        """SIGKILL a live worker, picked at random, and start it again; returns the one
        killed."""
        with self.lock:
            live = [i for i in self.current if i.ended is None]
            if not live:
                return None
            victim = rng.choice(live)
            victim.killed = True
            victim.process.send_signal(signal.SIGKILL)
            _, status, usage = os.wait4(victim.process.pid, 0)
            self._reap(victim, status, usage)
            self.current[victim.number] = self._start(victim.number)
            self.restarts += 1
            return victim

    def poll(self) -> bool:
        """Reap the workers that ended, starting again, ``RESTART_AFTER`` seconds later,
        those that failed; True while any runs or waits to start again."""
        with self.lock:
            for incarnation in list(self.current):
                if incarnation.ended is None:
                    pid, status, usage = os.wait4(incarnation.process.pid, os.WNOHANG)
                    if pid == 0:
                        continue
                    self._reap(incarnation, status, usage)
                ended = incarnation.ended or 0.0
                if self.stopping or incarnation.code == 0:
                    continue
                if time.time() - ended >= RESTART_AFTER:
                    self.current[incarnation.number] = self._start(incarnation.number)
                    self.restarts += 1
            return any(i.ended is None or (i.code and not self.stopping) for i in self.current)

    def live(self) -> list[Incarnation]:
        with self.lock:
            return [i for i in self.current if i.ended is None]

    def stop(self) -> None:
        """SIGINT every worker still running (a timeout), then SIGKILL what lingers."""
        self.stopping = True
        for incarnation in self.live():
            incarnation.process.send_signal(signal.SIGINT)
        deadline = time.time() + 30
        while self.poll() and time.time() < deadline:
            time.sleep(0.2)
        for incarnation in self.live():
            incarnation.process.kill()
        self.poll()


def worker_command(servers: Servers, ids: int, size: int, rate: str | None) -> list[str]:
    api = servers.api
    return crawl_command(
        api.url_template, servers.database_url, "-a", f"ids=1-{ids}",
        DISTRIBUTED=1, REDIS_URL=servers.redis.url(), API_BATCH_SIZE=size,
        API_BATCH_URL=api.batch_url_template, RATELIMIT_RATE=rate or "100000/1",
        PROGRESS_INTERVAL=0, LOG_LEVEL="INFO", METRICS_PORT=0,
    )  # fmt: skip


def worker_env(servers: Servers) -> dict[str, str]:
    return environment(INGEST_API_TOKENS=",".join(servers.tokens))


def key_names(servers: Servers) -> dict[str, str]:
    """Fingerprint -> "key N", as the tables name them."""
    return {fingerprint(token): f"key {n + 1}" for n, token in enumerate(servers.tokens)}


class Sampler(threading.Thread):
    """Every ``every`` seconds: each live worker's RSS, its storage writes (from its metrics),
    Redis's memory; until stopped."""

    def __init__(self, supervisor: Supervisor, servers: Servers, every: float = 5.0) -> None:
        super().__init__(daemon=True)
        self.supervisor, self.servers, self.every = supervisor, servers, every
        self.redis_memory: list[tuple[float, int]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(self.every):
            self.sample()

    def sample(self) -> None:
        now = time.time()
        for incarnation in self.supervisor.live():
            incarnation.rss.append((now, rss_bytes(incarnation.process.pid)))
            read_writes(incarnation)
        with contextlib.suppress(Exception):
            self.redis_memory.append((now, self.servers.redis.used_memory()))


def read_writes(incarnation: Incarnation) -> None:
    """The worker's storage write seconds and transactions so far, from its endpoint."""
    if incarnation.metrics is None:
        found = METRICS.search(incarnation.log.read_text(errors="replace"))
        if found is None:
            return
        incarnation.metrics = found.group(1)
    try:
        with _opener.open(incarnation.metrics, timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith("ingest_storage_write_seconds_sum"):
            total = float(line.rsplit(" ", 1)[1])
        elif line.startswith("ingest_storage_write_seconds_count"):
            count = float(line.rsplit(" ", 1)[1])
    incarnation.writes = (total, count)
