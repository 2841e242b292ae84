"""The ``list`` spider with ``-a details=1`` against the mock API: a listing's ids, each fetched
by API_URL (singly or in batches); kill -9 mid-listing; a later page that is not JSON. Judged
from the mock's record and the database."""

from __future__ import annotations

import itertools
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.support.crawl import (
    crawl_list,
    duplicate_rows,
    list_command,
    query,
    spawn,
    terminal_states,
)
from tests.support.mockapi import MockAPI, ids_requested_more_than_once, statuses

CURSOR = ("-a", "pagination=cursor:cursor=next_cursor", "-a", "details=1")
IN_FLIGHT = 16  # CONCURRENT_REQUESTS: the most requests a forced stop can leave unanswered


def details_settings(api: MockAPI, rate: str, batch: int = 1) -> dict[str, Any]:
    settings: dict[str, Any] = {"API_URL": api.url_template, "RATELIMIT_RATE": rate}
    if batch > 1:
        settings |= {"API_BATCH_SIZE": batch, "API_BATCH_URL": api.batch_url_template}
    return settings


def most_between_pages(record: list[dict[str, Any]]) -> int:
    """The most detail requests the server received between two listing pages: pages are
    not starved if a page waits behind at most the requests already in the downloader."""
    at = [n for n, entry in enumerate(record) if not entry["ids"]]
    return max((b - a - 1 for a, b in itertools.pairwise(at)), default=0)


def pages_and_details(record: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[Any]]:
    """The record's listing pages, and its detail requests (one id or a batch)."""
    pages = [e for e in record if e["path"] == "/items" and not e["ids"]]
    return pages, [e for e in record if e["ids"]]


@pytest.mark.parametrize("batch", [1, 50])
def test_details_fetch_every_listed_id_once(mockapi, tmp_path: Path, batch: int) -> None:
    api = mockapi(
        "--limit", "6000/60", "--catalog", "500", "--pagination", "cursor", "--invalid", "7"
    )
    db = f"sqlite:///{tmp_path}/ingest.db"
    url = f"{api.base}/items?per_page=100"
    result = crawl_list(url, db, *CURSOR, **details_settings(api, "6000/60", batch))
    assert result.returncode == 0, result.stderr[-2000:]
    record = api.requests()
    pages, details = pages_and_details(record)
    assert len(pages) == 5
    assert len(details) == 500 // batch and statuses(record) == {200: len(record)}
    assert ids_requested_more_than_once(details) == set()
    expected = {str(n): "stored" for n in range(1, 501)} | {"7": "invalid"}
    assert terminal_states(db) == expected and duplicate_rows(db) == 0
    assert query(db, "SELECT count(*) FROM listed") == [(500,)]
    assert most_between_pages(record) <= IN_FLIGHT

    again = crawl_list(url, db, *CURSOR, **details_settings(api, "6000/60", batch))
    assert again.returncode == 0 and len(api.requests()) == len(record)
    assert "was finished already: nothing to do" in again.stderr


def test_kill_9_mid_listing_then_every_listed_id_ends_once(mockapi, tmp_path: Path, postgres_url):
    # Latency spaces the pages (each waits for the one before), so that details go between
    # them: the kill leaves pages to list and listed ids without an outcome.
    api = mockapi("--limit", "3000/60", "--catalog", "300", "--pagination", "cursor",
                  "--latency", "0.1")  # fmt: skip
    url = f"{api.base}/items?per_page=50"
    settings = details_settings(api, "3000/60")
    process = spawn(list_command(url, postgres_url, *CURSOR, **settings), stderr=False)
    try:
        api.wait_for(1)
        while len(pages_and_details(api.requests())[0]) < 3:
            assert process.poll() is None, "the crawl ended before the kill"
            time.sleep(0.01)
        killed = time.time()
    finally:
        process.kill()
        process.wait(timeout=30)
    listed = {row[0] for row in query(postgres_url, "SELECT id FROM listed")}
    left = listed - set(terminal_states(postgres_url))
    assert query(postgres_url, "SELECT finished FROM listings") == [(False,)]
    assert 0 < len(listed) < 300 and left  # pages still to list, listed ids to fetch
    before = len(api.requests())

    result = crawl_list(url, postgres_url, *CURSOR, **settings)
    assert result.returncode == 0, result.stderr[-2000:]
    record = api.requests()
    assert most_between_pages(record[before:]) <= IN_FLIGHT
    pages, details = pages_and_details(record)
    queries = Counter(page["query"] for page in pages)
    assert len(queries) == 6 and sum(queries.values()) - len(queries) <= 1  # one page in flight
    asked = Counter(entry["id"] for entry in details)
    assert set(asked) == {str(n) for n in range(1, 301)}
    # Re-sent: at most those in flight, sent or answered and not yet written.
    unwritten = sum(1 for entry in record[:before] if entry["ids"] and entry["t"] > killed - 0.25)
    assert sum(asked.values()) - 300 <= IN_FLIGHT + unwritten
    assert left <= {e["id"] for e in pages_and_details(record[before:])[1]}
    assert terminal_states(postgres_url) == {str(n): "stored" for n in range(1, 301)}
    assert duplicate_rows(postgres_url) == 0
    assert query(postgres_url, "SELECT finished FROM listings") == [(True,)]


def test_an_unreachable_api_url_stops_before_the_first_page(mockapi, tmp_path: Path) -> None:
    api = mockapi("--limit", "6000/60", "--catalog", "100")
    db = f"sqlite:///{tmp_path}/ingest.db"
    unreachable = "http://127.0.0.1:9/items/{id}"
    result = crawl_list(f"{api.base}/items", db, *CURSOR, API_URL=unreachable)
    assert result.returncode == 69
    (line,) = result.stderr.strip().splitlines()
    assert "API_URL http://127.0.0.1:9: cannot connect" in line
    assert api.requests() == []


@pytest.mark.parametrize("details", [True, False])
def test_a_later_page_that_is_not_json_stops_where_the_listing_stands(
    mockapi, tmp_path: Path, details: bool
) -> None:
    api = mockapi("--limit", "6000/60", "--catalog", "300", "--pagination", "cursor",
                  "--not-json-page", "3")  # fmt: skip
    db = f"sqlite:///{tmp_path}/ingest.db"
    url = f"{api.base}/items?per_page=50"
    args = CURSOR if details else CURSOR[:2]
    settings = details_settings(api, "6000/60")
    result = crawl_list(url, db, *args, **settings)
    assert result.returncode == 65, result.stderr[-2000:]
    bad = [e for e in api.requests() if e["reason"] == "not_json"]
    assert len(bad) == 1
    errors = [line for line in result.stderr.splitlines() if " ERROR: " in line]
    assert len(errors) == 1 and "is not JSON" in errors[0], result.stderr[-2000:]
    assert f"/items?{bad[0]['query']}" in errors[0]
    ((position, finished),) = query(db, "SELECT position, finished FROM listings")
    assert not finished and urlsplit(json.loads(position)["url"]).query == bad[0]["query"]
    counted = "SELECT count(*) FROM listed" if details else "SELECT count(*) FROM items"
    assert query(db, counted) == [(100,)]  # pages 1 and 2

    api.configure(not_json_page=0)
    again = crawl_list(url, db, *args, **settings)
    assert again.returncode == 0, again.stderr[-2000:]
    pages, fetched = pages_and_details(api.requests())
    assert Counter(Counter(page["query"] for page in pages).values()) == {1: 5, 2: 1}
    assert terminal_states(db) == {str(n): "stored" for n in range(1, 301)}
    assert duplicate_rows(db) == 0
    assert len(fetched) == (300 if details else 0)
    assert ids_requested_more_than_once(fetched) == set()


def test_a_listing_walked_without_details_is_walked_again_with_them(mockapi, tmp_path: Path):
    api = mockapi("--limit", "6000/60", "--catalog", "200", "--pagination", "cursor")
    db = f"sqlite:///{tmp_path}/ingest.db"
    url = f"{api.base}/items?per_page=100"
    plain = crawl_list(url, db, *CURSOR[:2], **details_settings(api, "6000/60"))
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert query(db, "SELECT count(*) FROM listed") == [(0,)]
    listed = len(api.requests())

    result = crawl_list(url, db, *CURSOR, **details_settings(api, "6000/60"))
    assert result.returncode == 0, result.stderr[-2000:]
    pages, details = pages_and_details(api.requests()[listed:])
    # Listed again, as another listing; the items it stored are stored: not asked for again.
    assert len(pages) == 2 and details == []
    assert query(db, "SELECT count(*) FROM listed") == [(200,)] and duplicate_rows(db) == 0
