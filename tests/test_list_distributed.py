"""The ``list`` spider on several workers through Redis (``DISTRIBUTED``): one walks the listing,
every worker fetches the ids it lists; kill -9 of the walker. Judged from the mock's record and
the database."""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.support.crawl import REPO_ROOT, duplicate_rows, environment, list_command, query
from tests.support.crawl import terminal_states as states_of
from tests.support.mockapi import MockAPI, ids_requested_more_than_once, statuses
from tests.test_list_details import CURSOR, details_settings, pages_and_details


def start(
    api: MockAPI, db: str, redis_url: str, logs: Path, count: int, *args: str, **settings: Any
) -> list[subprocess.Popen[str]]:
    """``count`` workers of one listing, each with its own User-Agent and log file."""
    url = f"{api.base}/items?per_page=50"
    processes = []
    for number in range(count):
        command = list_command(
            url, db, *args, DISTRIBUTED=1, REDIS_URL=redis_url, PROGRESS_INTERVAL=0,
            USER_AGENT=f"worker-{number}", **details_settings(api, "6000/60"), **settings,
        )  # fmt: skip
        with (logs / f"worker-{number}.log").open("w") as log:
            processes.append(
                subprocess.Popen(command, cwd=REPO_ROOT, env=environment(), stderr=log, text=True)
            )
    return processes


def finish(processes: list[subprocess.Popen[str]], logs: Path, timeout: float = 180) -> list[str]:
    """Each worker's log, once every worker has ended (killed after ``timeout``)."""
    try:
        for process in processes:
            process.wait(timeout=timeout)
    finally:
        for process in processes:
            process.kill()
    return [(logs / f"worker-{n}.log").read_text() for n in range(len(processes))]


def walker(logs: Path, count: int) -> int:
    """The worker walking the listing, from the logs; waits for one to say so."""
    for _ in range(3000):
        for number in range(count):
            if "Walking the listing" in (logs / f"worker-{number}.log").read_text():
                return number
        time.sleep(0.02)
    raise AssertionError("no worker walks the listing")


def test_three_workers_fetch_every_listed_id_once(mockapi, tmp_path: Path, redis_url: str) -> None:
    # Answers that take a while: the walker alone could not fetch them all as fast.
    api = mockapi("--limit", "6000/60", "--catalog", "1000", "--pagination", "cursor",
                  "--invalid", "7", "--latency", "0.05")  # fmt: skip
    db = f"sqlite:///{tmp_path}/ingest.db"
    logs = finish(start(api, db, redis_url, tmp_path, 3, *CURSOR), tmp_path)
    for log in logs:
        assert "Spider closed (finished)" in log, log[-3000:]
    record = api.requests()
    pages, details = pages_and_details(record)
    assert len(pages) == 20 and len({page["query"] for page in pages}) == 20
    assert len({page["agent"] for page in pages}) == 1  # walked by one worker
    assert len(details) == 1000 and statuses(record) == {200: len(record)}
    assert ids_requested_more_than_once(details) == set()  # every listed id fetched once
    assert set(Counter(entry["agent"] for entry in details)) == {f"worker-{n}" for n in range(3)}
    expected = {str(n): "stored" for n in range(1, 1001)} | {"7": "invalid"}
    assert states_of(db) == expected and duplicate_rows(db) == 0
    assert query(db, "SELECT finished FROM listings") == [(1,)]


def test_a_plain_listing_is_walked_by_one_worker(mockapi, tmp_path: Path, redis_url: str) -> None:
    api = mockapi("--limit", "6000/60", "--catalog", "500", "--pagination", "cursor")
    db = f"sqlite:///{tmp_path}/ingest.db"
    logs = finish(start(api, db, redis_url, tmp_path, 3, *CURSOR[:2]), tmp_path)
    for log in logs:
        assert "Spider closed (finished)" in log, log[-3000:]
    record = api.requests()
    assert len(record) == 10 and len({entry["query"] for entry in record}) == 10
    assert len({entry["agent"] for entry in record}) == 1  # the others stood by
    assert states_of(db) == {str(n): "stored" for n in range(1, 501)}
    assert duplicate_rows(db) == 0


def test_kill_9_of_the_walker_another_walks_on(mockapi, tmp_path: Path, redis_url: str) -> None:
    # Pages take a while: the kill comes mid-listing, with listed ids left to fetch.
    api = mockapi("--limit", "6000/60", "--catalog", "1500", "--pagination", "cursor",
                  "--latency", "0.1")  # fmt: skip
    db = f"sqlite:///{tmp_path}/ingest.db"
    processes = start(api, db, redis_url, tmp_path, 3, *CURSOR)
    try:
        dead = walker(tmp_path, 3)
        while len(pages_and_details(api.requests())[0]) < 8:
            assert processes[dead].poll() is None, "the walk ended before the kill"
            time.sleep(0.01)
        processes[dead].kill()
        processes[dead].wait()
        committed = {row[0] for row in query(db, "SELECT id FROM listed")}
        ((position,),) = query(db, "SELECT position FROM listings")
    finally:
        logs = finish(processes, tmp_path)
    for number, log in enumerate(logs):
        assert number == dead or "Spider closed (finished)" in log, log[-3000:]
    assert 0 < len(committed) < 1500  # killed mid-listing
    pages, details = pages_and_details(api.requests())
    queries = Counter(page["query"] for page in pages)
    assert len(queries) == 30  # every page, and
    assert sum(queries.values()) - len(queries) <= 2  # no more than two asked twice
    # The successor began at the page after the last one the dead walker committed.
    agents = Counter(page["agent"] for page in pages)
    assert len(agents) == 2 and agents[f"worker-{dead}"] >= 8
    successor = next(page for page in pages if page["agent"] != f"worker-{dead}")
    assert successor["query"] == urlsplit(json.loads(position)["url"]).query
    asked = Counter(id_ for entry in details for id_ in entry["ids"])
    assert set(asked) == {str(n) for n in range(1, 1501)}
    assert states_of(db) == {str(n): "stored" for n in range(1, 1501)}
    assert duplicate_rows(db) == 0
    assert query(db, "SELECT finished FROM listings") == [(1,)]
