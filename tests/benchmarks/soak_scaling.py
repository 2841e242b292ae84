"""How throughput grows with workers: the soak's crawl without faults, for each number of
workers, on a fresh set of servers, and what binds at each step. Throughput is judged from
the database: the items fetched between the 10th and the 90th percentile of their fetch
times (the workers' start-up and the job's end apart), and over the whole run."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import redis

from tests.benchmarks.soak_cluster import (
    Sampler,
    Supervisor,
    cpu_seconds,
    servers,
    worker_command,
    worker_env,
)
from tests.support.crawl import terminal_states

if TYPE_CHECKING:
    from tests.benchmarks.soak import Params


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of every core, from /proc/stat."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def redis_calls(url: str) -> tuple[int, dict[str, int]]:
    """Commands the server has run, in all and by command."""
    with redis.Redis.from_url(url, decode_responses=True) as client:
        total = int(client.info("stats")["total_commands_processed"])
        stats = client.info("commandstats")
    return total, {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def stored_between(database_url: str) -> tuple[float, float, float, float]:
    """When the items were fetched (epoch seconds, from the database): the first, the 10th
    and 90th percentiles, the last."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT extract(epoch FROM min(fetched_at)),"
            " extract(epoch FROM percentile_disc(0.1) WITHIN GROUP (ORDER BY fetched_at)),"
            " extract(epoch FROM percentile_disc(0.9) WITHIN GROUP (ORDER BY fetched_at)),"
            " extract(epoch FROM max(fetched_at)) FROM items"
        ).fetchone()
    assert row is not None
    first, p10, p90, last = (float(value) for value in row)
    return first, p10, p90, last


def one(params: Params, workers: int, logs: Path) -> dict[str, float | str]:
    rate = params.key_rate()
    with servers(params.keys, rate, latency=params.latency, aof=params.aof) as cluster:
        command = worker_command(cluster, params.ids, params.size, rate)
        busy0, total0 = machine_cpu()
        began = time.time()
        supervisor = Supervisor(command, worker_env(cluster), logs, workers)
        sampler = Sampler(supervisor, cluster)
        sampler.start()
        while supervisor.poll():
            if time.time() - began > (params.timeout or 3600):
                supervisor.stop()
                break
            time.sleep(0.2)
        wall = time.time() - began
        sampler.halt.set()
        busy1, total1 = machine_cpu()
        requests = len(cluster.api.requests())
        done = len(terminal_states(cluster.database_url))
        first, p10, p90, last = stored_between(cluster.database_url)
        calls, by_command = redis_calls(cluster.redis.url())
        incarnations = supervisor.all
        cpu = sum(i.cpu for i in incarnations)
        writes = sum(i.writes[0] for i in incarnations), sum(i.writes[1] for i in incarnations)
        top = sorted(by_command.items(), key=lambda item: -item[1])[:4]
        return {
            "workers": workers,
            "items/s": 0.8 * done / (p90 - p10) if p90 > p10 else 0.0,
            "whole": done / wall,
            "start": first - began,
            "tail": began + wall - last,
            "done": done,
            "wall": wall,
            "cpu/worker": cpu / workers / wall,
            "machine": (busy1 - busy0) / (total1 - total0),
            "mock": cpu_seconds(cluster.api.process.pid) / wall,
            "postgres": cluster.postgres_cpu() / wall,
            "redis/request": calls / requests if requests else 0.0,
            "top": ", ".join(f"{name} {count / requests:.1f}" for name, count in top),
            "write ms": 1000 * writes[0] / writes[1] if writes[1] else 0.0,
        }


def scaling(params: Params, counts: list[int], logs: Path) -> None:
    print(f"scaling: {params.ids:,} ids, {params.keys} keys at {params.key_rate()} each, "
          f"batches of {params.size}, latency {params.latency} s", flush=True)  # fmt: skip
    print(
        "| workers | items/s, 10 to 90 % | x one | items/s, whole run | first item, s "
        "| after the last item, s | CPU per worker (cores) | machine CPU | mock API CPU "
        "| PostgreSQL CPU | Redis commands per request (top) | DB write, mean |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    first = None
    for count in counts:
        run_logs = logs / f"scaling-{count}"
        run_logs.mkdir(parents=True, exist_ok=True)
        row = one(params, count, run_logs)
        first = first or float(row["items/s"])
        print(f"| {count} | {row['items/s']:,.0f} | {float(row['items/s']) / first:.2f} "
              f"| {row['whole']:,.0f} | {row['start']:.1f} | {row['tail']:.1f} "
              f"| {row['cpu/worker']:.2f} | {row['machine']:.0%} | {row['mock']:.2f} "
              f"| {row['postgres']:.2f} | {row['redis/request']:.1f} ({row['top']}) "
              f"| {row['write ms']:.1f} ms |", flush=True)  # fmt: skip
        if int(row["done"]) < params.ids:
            print(f"  (only {row['done']:,} of {params.ids:,} ids done in {row['wall']:.0f} s)")
