"""Many ids a request, end to end against the mock API: every id its own outcome, as singly."""

from __future__ import annotations

import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.support.crawl import (
    crawl,
    crawl_command,
    duplicate_rows,
    failures,
    query,
    spawn,
    terminal_states,
)
from tests.support.mockapi import MockAPI, statuses

FAST = {"RATELIMIT_RATE": "6000/60"}


def batched(api: MockAPI, size: int, method: str = "GET", **settings: Any) -> dict[str, Any]:
    if method == "POST":
        endpoint = {"API_BATCH_METHOD": "POST", "API_BATCH_URL": api.base + "/items/batch"}
    else:
        endpoint = {"API_BATCH_URL": api.batch_url_template}
    return {"API_BATCH_SIZE": size, **endpoint, **FAST, **settings}


def ids_of(entry: dict[str, Any]) -> list[str]:
    return entry["ids"] if entry.get("ids") is not None else [entry["id"]]


def rows(db: str) -> set[tuple[Any, ...]]:
    """What each id became, with its payload: what single and batched fetching must agree on."""
    stored = query(db, "SELECT id, 'stored', data FROM items")
    failed = query(db, "SELECT id, state, data FROM failures")
    return {
        (id_, state, None if data is None else str(data)) for id_, state, data in stored + failed
    }


def stat(log: str, key: str) -> int:
    match = re.search(rf"'{re.escape(key)}': (\d+)", log)
    return int(match.group(1)) if match else 0


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_batches_store_exactly_what_single_ids_store(mockapi, tmp_path: Path, method: str) -> None:
    api = mockapi("--limit", "none", "--not-found", "13,250", "--invalid", "7,77", "--gone", "99")
    ids = ["-a", "ids=1-300"]
    single, many = f"sqlite:///{tmp_path}/single.db", f"sqlite:///{tmp_path}/batched.db"
    assert crawl(api.url_template, single, *ids, **FAST).returncode == 0
    api.reset()

    done = crawl(api.url_template, many, *ids, **batched(api, 50, method))
    assert done.returncode == 0, done.stderr[-3000:]
    record = api.requests()
    assert statuses(record) == {200: 6}  # 300 ids, 50 a request
    summary = next(line for line in done.stderr.splitlines() if "Summary (finished" in line)
    assert "; 6 requests (0 retries, 0 x 429)" in summary and "; 50.0 ids/request" in summary
    assert {entry["path"] for entry in record} == {"/items/batch" if method == "POST" else "/items"}
    asked = Counter(id_ for entry in record for id_ in ids_of(entry))
    assert asked == Counter(str(i) for i in range(1, 301))  # each id once
    assert rows(many) == rows(single)
    states = Counter(terminal_states(many).values())
    assert states == {"stored": 295, "not_found": 3, "invalid": 2}
    assert duplicate_rows(many) == 0


def test_a_rerun_gathers_the_scattered_failed_ids_into_full_batches(
    mockapi, tmp_path: Path
) -> None:
    scattered = [str(i) for i in range(7, 200, 20)]  # 10 ids, one in each batch of 20
    broken = mockapi("--limit", "none", "--not-json", ",".join(scattered))
    db = f"sqlite:///{tmp_path}/ingest.db"
    assert crawl(broken.url_template, db, "-a", "ids=1-200", **FAST).returncode == 3
    assert sorted(failures(db)) == sorted(scattered)

    api = mockapi("--limit", "none")
    done = crawl(api.url_template, db, "-a", "ids=1-200", **batched(api, 20))
    assert done.returncode == 0, done.stderr[-3000:]
    assert [ids_of(entry) for entry in api.requests()] == [scattered]  # one request, not ten
    assert failures(db) == {}


@pytest.mark.parametrize("ids", [500, 3000])
def test_the_size_the_server_takes_is_found_and_every_batch_after_is_full(
    mockapi, tmp_path: Path, ids: int
) -> None:
    api = mockapi("--limit", "none", "--max-batch", "20")
    db = f"sqlite:///{tmp_path}/ingest.db"
    done = crawl(api.url_template, db, "-a", f"ids=1-{ids}", **batched(api, 100))
    assert done.returncode == 0, done.stderr[-3000:]
    record = api.requests()
    refused = [len(ids_of(entry)) for entry in record if entry["status"] == 400]
    answered = [len(ids_of(entry)) for entry in record if entry["status"] == 200]
    assert len(refused) <= 4, refused
    assert max(answered) == 20 == stat(done.stderr, "batch/size")
    settled = answered.index(20)
    assert [n for n in answered[settled:-1] if n != 20] == []  # all full but the last
    # 20 a request, plus what the search for it cost: 3,000 ids took 302 requests when
    # the size settled at 12 and groups were cut 12 + 12 + 1.
    assert len(record) <= ids / 20 + 16, Counter(answered)
    assert "Batches of" in done.stderr  # said once
    assert set(terminal_states(db).values()) == {"stored"} and len(terminal_states(db)) == ids


def test_a_single_id_refused_fails_with_the_servers_reason(mockapi, tmp_path: Path) -> None:
    api = mockapi("--limit", "none")
    api.inject(status=400, count=3)  # the batch of 2, then each id alone
    db = f"sqlite:///{tmp_path}/ingest.db"
    done = crawl(api.url_template, db, "-a", "ids=1-2", **batched(api, 2))
    assert done.returncode == 3, done.stderr[-3000:]  # finished, with an id failed
    assert [len(ids_of(entry)) for entry in api.requests()] == [2, 1, 1]
    reasons = {id_: reason for id_, (state, reason, _) in failures(db).items() if state == "failed"}
    assert set(reasons) == {"1", "2"}
    assert all(reason and reason.startswith("400 Bad Request: ") for reason in reasons.values())


def test_server_errors_fail_the_whole_batch_after_its_retries(mockapi, tmp_path: Path) -> None:
    api = mockapi("--limit", "none", "--error-rate", "1", "--error-statuses", "503")
    db = f"sqlite:///{tmp_path}/ingest.db"
    settings = batched(api, 5, RETRY_TIMES=1, RETRY_BACKOFF_BASE=0)
    done = crawl(api.url_template, db, "-a", "ids=1-10", **settings)
    assert done.returncode == 3, done.stderr[-3000:]  # finished, with ids failed
    record = api.requests()
    assert statuses(record) == {503: 4}  # two batches, each tried twice
    assert Counter(tuple(ids_of(entry)) for entry in record) == {
        tuple(map(str, range(1, 6))): 2,
        tuple(map(str, range(6, 11))): 2,
    }
    got = failures(db)
    assert set(got) == {str(i) for i in range(1, 11)}
    assert {reason for _, reason, _ in got.values()} == {
        "503 Service Unavailable (after 1 retries)"
    }


def test_a_rate_limited_batch_goes_again_whole(mockapi, tmp_path: Path) -> None:
    api = mockapi("--limit", "none")
    api.inject(status=429, count=1, after=1, retry_after=1)
    db = f"sqlite:///{tmp_path}/ingest.db"
    done = crawl(api.url_template, db, "-a", "ids=1-30", **batched(api, 10))
    assert done.returncode == 0, done.stderr[-3000:]
    record = api.requests()
    limited = [ids_of(entry) for entry in record if entry["status"] == 429]
    assert len(limited) == 1
    again = [ids_of(entry) for entry in record if entry["status"] == 200]
    assert limited[0] in again  # the same ids, in one request
    assert len(again) == 3 and len(terminal_states(db)) == 30
    assert set(terminal_states(db).values()) == {"stored"}


def test_items_not_asked_for_are_counted_not_stored(mockapi, tmp_path: Path) -> None:
    api = mockapi("--limit", "none", "--extra-ids", "900-901", "--duplicate-ids")
    db = f"sqlite:///{tmp_path}/ingest.db"
    done = crawl(api.url_template, db, "-a", "ids=1-20", **batched(api, 10))
    assert done.returncode == 0, done.stderr[-3000:]
    assert stat(done.stderr, "batch/unexpected") == 4  # two in each of the two answers
    assert done.stderr.count("ids not asked for") == 1  # logged once
    assert set(terminal_states(db)) == {str(i) for i in range(1, 21)}


def test_items_at_a_wrong_path_stop_the_crawl_and_lose_nothing(mockapi, tmp_path: Path) -> None:
    api = mockapi("--limit", "none", "--batch-items", "result.items")
    db = f"sqlite:///{tmp_path}/ingest.db"
    ids = ["-a", "ids=1-100"]
    wrong = batched(api, 10, API_BATCH_ITEMS="items", CONCURRENT_REQUESTS=1)
    done = crawl(api.url_template, db, *ids, **wrong)
    assert done.returncode == 2, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if " ERROR: " in line]
    assert len(errors) == 1 and "API_BATCH_ITEMS='items'" in errors[0], errors
    assert terminal_states(db) == {}  # nothing marked
    assert len(api.requests()) <= 2

    done = crawl(api.url_template, db, *ids, **{**wrong, "API_BATCH_ITEMS": "result.items"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert set(terminal_states(db).values()) == {"stored"} and len(terminal_states(db)) == 100


@pytest.mark.parametrize(
    ("wrong", "said"),
    [
        ({"API_ITEM_ID": "uuid"}, "API_ITEM_ID='uuid': none of the 10 items"),
        ({"API_ITEM_ID": "name"}, "API_ITEM_ID='name': the 10 items of a batch's answer name"),
    ],
)
def test_an_item_id_that_matches_no_item_stops_the_crawl_and_marks_nothing(
    mockapi, tmp_path: Path, wrong: dict[str, str], said: str
) -> None:
    api = mockapi("--limit", "none")
    db = f"sqlite:///{tmp_path}/ingest.db"
    ids = ["-a", "ids=1-100"]
    done = crawl(api.url_template, db, *ids, **batched(api, 10, **wrong))
    assert done.returncode == 2, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if " ERROR: " in line]
    assert len(errors) == 1 and said in errors[0], errors
    assert terminal_states(db) == {}  # nothing marked, whatever was in flight

    done = crawl(api.url_template, db, *ids, **batched(api, 10))
    assert done.returncode == 0, done.stderr[-3000:]
    assert set(terminal_states(db).values()) == {"stored"} and len(terminal_states(db)) == 100


def test_a_killed_batch_crawl_resends_at_most_the_batches_in_flight(
    mockapi, tmp_path: Path
) -> None:
    n, size, concurrency = 3000, 20, 4
    api = mockapi("--limit", "none", "--not-found", "33,2500")
    db, jobdir = f"sqlite:///{tmp_path}/ingest.db", tmp_path / "job"
    settings = batched(api, size, JOBDIR=jobdir, CONCURRENT_REQUESTS=concurrency)
    settings["RATELIMIT_RATE"] = "1200/60"
    command = crawl_command(api.url_template, db, "-a", f"ids=1-{n}", **settings)
    process = spawn(command, stderr=False)
    try:
        api.wait_for(40)
        killed = time.time()
        process.kill()
        process.wait(timeout=30)
    finally:
        process.kill()
    before = len(api.requests())
    assert before * size < n  # it stopped early

    done = crawl(api.url_template, db, "-a", f"ids=1-{n}", **settings)
    assert done.returncode == 0, done.stderr[-3000:]
    states = terminal_states(db)
    assert len(states) == n and Counter(states.values()) == {"stored": n - 2, "not_found": 2}
    assert duplicate_rows(db) == 0
    record = api.requests()
    asked = Counter(id_ for entry in record for id_ in ids_of(entry))
    assert set(asked) == {str(i) for i in range(1, n + 1)}
    again = sum(count - 1 for count in asked.values())
    # In flight: batches sent, and answers not yet written (the last write window).
    unwritten = sum(len(ids_of(e)) for e in record[:before] if e["t"] > killed - 0.25)
    assert again <= concurrency * size + unwritten, (again, unwritten)
