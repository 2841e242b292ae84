"""Several workers through Redis: one rate limit, ids queued once, nothing lost when one dies."""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.support.crawl import (
    REPO_ROOT,
    crawl,
    crawl_command,
    duplicate_rows,
    environment,
    terminal_states,
)
from tests.support.mockapi import MockAPI, span, statuses
from tests.support.redis import restartable_redis

N = 300
RATE = "100/5"  # the server's too: a sliding window that counts rejected requests


def workers(
    api: MockAPI, db: str, redis_url: str, count: int, n: int = N, **settings: object
) -> list[subprocess.Popen[str]]:
    """``count`` workers of one job; each sends its own User-Agent, which the mock records."""
    settings = {"RATELIMIT_RATE": RATE, **settings}
    return [
        subprocess.Popen(
            crawl_command(
                api.url_template,
                db,
                "-a",
                f"ids=1-{n}",
                DISTRIBUTED=1,
                REDIS_URL=redis_url,
                PROGRESS_INTERVAL=0,
                USER_AGENT=f"worker-{number}",
                **settings,
            ),
            cwd=REPO_ROOT,
            env=environment(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for number in range(count)
    ]


def finish(processes: list[subprocess.Popen[str]], timeout: float = 180) -> list[str]:
    logs = []
    try:
        for process in processes:
            _, stderr = process.communicate(timeout=timeout)
            logs.append(stderr)
    finally:
        for process in processes:
            process.kill()
    return logs


def test_three_workers_share_one_limit(mockapi, postgres_url: str, redis_url: str) -> None:
    api = mockapi("--limit", RATE, "--algorithm", "sliding")
    logs = finish(workers(api, postgres_url, redis_url, 3))
    for process_log in logs:
        assert "Spider closed (finished)" in process_log, process_log[-3000:]
    record = api.requests()
    assert statuses(record) == {200: N}
    assert span(record) >= (N - 1) * 5 / 100  # never faster than the one shared limit
    states = terminal_states(postgres_url)
    assert len(states) == N and set(states.values()) == {"stored"}
    assert duplicate_rows(postgres_url) == 0
    twice = [id_ for id_, count in Counter(e["id"] for e in record).items() if count > 1]
    assert len(twice) <= 3
    # Every worker did a share of the work, as the server saw it.
    shares = Counter(entry["agent"] for entry in record)
    assert set(shares) == {"worker-0", "worker-1", "worker-2"}
    assert min(shares.values()) >= N / 10


def test_a_dead_worker_loses_nothing(mockapi, postgres_url: str, redis_url: str) -> None:
    api = mockapi("--limit", RATE, "--algorithm", "sliding")
    processes = workers(api, postgres_url, redis_url, 3)
    api.wait_for(N // 3, timeout=60)
    processes[0].kill()
    logs = finish(processes[1:])
    for process_log in logs:
        assert "Spider closed (finished)" in process_log, process_log[-3000:]
    states = terminal_states(postgres_url)
    assert len(states) == N and set(states.values()) == {"stored"}
    assert duplicate_rows(postgres_url) == 0
    assert statuses(api.requests())[429] == 0


def test_workers_share_batches(mockapi, postgres_url: str, redis_url: str) -> None:
    # Answers that take 2 s make one worker alone take 15 s: the other, however late a
    # loaded machine starts it, joins in.
    api = mockapi("--limit", RATE, "--algorithm", "sliding", "--not-found", "77", "--latency", "2")
    n, size = 6000, 50
    batches = {"API_BATCH_SIZE": size, "API_BATCH_URL": api.batch_url_template}
    logs = finish(workers(api, postgres_url, redis_url, 2, n, **batches))
    for process_log in logs:
        assert "Spider closed (finished)" in process_log, process_log[-3000:]
    record = api.requests()
    assert statuses(record) == {200: len(record)} and len(record) <= n / size + 4
    asked = Counter(id_ for entry in record for id_ in entry["ids"])
    assert set(asked) == {str(i) for i in range(1, n + 1)}
    assert sum(asked.values()) - n <= 2 * size  # a batch queued again by a successor, at most
    states = terminal_states(postgres_url)
    assert len(states) == n and Counter(states.values()) == {"stored": n - 1, "not_found": 1}
    assert duplicate_rows(postgres_url) == 0
    assert set(Counter(entry["agent"] for entry in record)) == {"worker-0", "worker-1"}


def test_unreachable_redis_is_one_clear_line(mockapi, tmp_path: Path) -> None:
    api = mockapi("--limit", "none")
    done = crawl(
        api.url_template, f"sqlite:///{tmp_path}/x.db", "-a", "ids=1-5",
        DISTRIBUTED=1, REDIS_URL="redis://:hunter2@127.0.0.1:9/0",
    )  # fmt: skip
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "REDIS_URL redis://:***@127.0.0.1:9/0" in line
    assert "hunter2" not in done.stderr
    assert api.requests() == []


def test_a_seeder_killed_mid_seeding_is_taken_over(mockapi, tmp_path: Path, redis_url: str) -> None:
    # The seeder keeps the shared queue short: it queues 500 requests (of 10 ids), then the
    # rest as the workers take them, and is killed meanwhile, holding the seeding lease.
    # Another worker seeds from the place recorded, behind what the dead one had queued,
    # while the queue still holds much of it: the batches queued twice are sent once. An
    # id is asked twice only when the dead worker asked it first (in flight when it died).
    api = mockapi("--limit", "none", "--latency", "0.2")
    n, db = 6000, f"sqlite:///{tmp_path}/x.db"
    logs = [tmp_path / f"worker-{number}.log" for number in range(3)]
    processes = []
    for number, log in enumerate(logs):
        command = crawl_command(
            api.url_template, db, "-a", f"ids=1-{n}", RATELIMIT_RATE="1200/60", DISTRIBUTED=1,
            REDIS_URL=redis_url, PROGRESS_INTERVAL=0, API_BATCH_SIZE=10,
            API_BATCH_URL=api.batch_url_template, USER_AGENT=f"worker-{number}",
        )  # fmt: skip
        with log.open("w") as out:
            processes.append(
                subprocess.Popen(command, cwd=REPO_ROOT, env=environment(), stderr=out)
            )
    try:
        api.wait_for(40, timeout=60)
        seeders = [i for i, log in enumerate(logs) if "Seeding the job's queue" in log.read_text()]
        assert len(seeders) == 1 and "ids are all queued" not in logs[seeders[0]].read_text()
        processes[seeders[0]].kill()
        for process in processes:
            process.wait(timeout=180)
    finally:
        for process in processes:
            process.kill()
    survivors = [log.read_text() for i, log in enumerate(logs) if i != seeders[0]]
    for survivor in survivors:
        assert "Spider closed (finished)" in survivor, survivor[-3000:]
    assert sum("Seeding the job's queue from id number" in s for s in survivors) == 1
    states = terminal_states(db)
    assert len(states) == n and set(states.values()) == {"stored"}
    assert duplicate_rows(db) == 0
    first: dict[str, str] = {}
    again = Counter()
    for entry in api.requests():
        for id_ in entry["ids"]:
            if id_ in first:
                again[first[id_]] += 1
            first.setdefault(id_, entry["agent"])
    assert set(again) <= {f"worker-{seeders[0]}"}, again  # else: queued twice, sent twice


@pytest.mark.parametrize("aof", [True, False], ids=["append-only file", "nothing kept"])
def test_workers_wait_out_a_redis_restart(mockapi, tmp_path: Path, aof: bool) -> None:
    # With its append-only file Redis keeps what it holds: the job goes on where it was.
    # Without, the queue and where seeding got to are lost: once every worker is idle,
    # one queues again every id without an outcome.
    api = mockapi("--limit", "none", "--latency", "0.05")
    n, db = 3000, f"sqlite:///{tmp_path}/x.db"
    with restartable_redis(aof=aof) as server:
        processes = workers(api, db, server.url(), 2, n, RATELIMIT_RATE="200/1")
        try:
            api.wait_for(300, timeout=60)
            server.stop()
            time.sleep(3)  # down for a while: every call meanwhile fails at once
            server.start()
            logs = finish(processes)
        finally:
            for process in processes:
                process.kill()
    for process_log in logs:
        assert "Spider closed (finished)" in process_log, process_log[-3000:]
    assert any("is unreachable" in process_log for process_log in logs)
    states = terminal_states(db)
    assert len(states) == n and set(states.values()) == {"stored"}
    assert duplicate_rows(db) == 0
