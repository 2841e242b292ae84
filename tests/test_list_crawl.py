"""The ``list`` spider against the mock API: every style, resume after kill -9, incremental
sync, and bad arguments; judged from the mock's record and the database."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.support.crawl import (
    crawl_list,
    duplicate_rows,
    list_command,
    query,
    spawn,
    terminal_states,
)
from tests.support.mockapi import statuses

FAST = {"RATELIMIT_RATE": "3000/60"}
# (mock's --pagination, the spider's -a pagination, the page size parameter)
STYLES = [
    ("page", "page:page", "per_page"),
    ("offset", "offset:offset", "limit"),
    ("cursor", "cursor:cursor=next_cursor", "per_page"),
    ("link", "link", "per_page"),
    ("next", "auto", "per_page"),
]


def listing(database_url: str) -> tuple[bool, object]:
    ((finished, high_water),) = query(database_url, "SELECT finished, high_water FROM listings")
    return bool(finished), None if high_water is None else json.loads(high_water)


@pytest.mark.parametrize(("mock_style", "style", "size"), STYLES)
def test_every_style_lists_every_item_once(mockapi, tmp_path: Path, mock_style, style, size):
    api = mockapi("--limit", "3000/60", "--catalog", "300", "--pagination", mock_style)
    db = f"sqlite:///{tmp_path}/ingest.db"
    result = crawl_list(f"{api.base}/items?{size}=50", db, "-a", f"pagination={style}", **FAST)
    assert result.returncode == 0, result.stderr[-2000:]
    record = api.requests()
    assert len(record) == 6 and statuses(record) == {200: 6}
    assert len(set(entry["query"] for entry in record)) == 6  # no page asked twice
    assert terminal_states(db) == {str(n): "stored" for n in range(1, 301)}
    assert listing(db) == (True, None)

    again = crawl_list(f"{api.base}/items?{size}=50", db, "-a", f"pagination={style}", **FAST)
    assert again.returncode == 0 and len(api.requests()) == 6
    assert "was finished already" in again.stderr


def test_a_known_total_sends_pages_ahead_at_the_full_pace(mockapi, tmp_path: Path) -> None:
    # With 0.3 s of latency and a page allowed every 0.1 s, one page at a time would take
    # three times as long as the limit allows.
    api = mockapi("--limit", "600/60", "--catalog", "1000", "--latency", "0.3")
    db = f"sqlite:///{tmp_path}/ingest.db"
    result = crawl_list(
        f"{api.base}/items?per_page=50", db, "-a", "pagination=page", RATELIMIT_RATE="600/60"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    record = api.requests()
    assert statuses(record) == {200: 20}
    times = sorted(entry["t"] for entry in record)
    assert times[-1] - times[0] <= 19 * 0.1 * 1.2 + 0.3  # the first answer tells the total
    assert len(terminal_states(db)) == 1000


def test_kill_9_mid_listing_resumes_after_the_last_page_committed(mockapi, tmp_path: Path):
    api = mockapi("--limit", "600/60", "--catalog", "1000", "--pagination", "cursor")
    db = f"sqlite:///{tmp_path}/ingest.db"
    args = ("-a", "pagination=cursor:cursor=next_cursor")
    url = f"{api.base}/items?per_page=25"
    process = spawn(list_command(url, db, *args, RATELIMIT_RATE="600/60"), stderr=False)
    try:
        api.wait_for(15)
    finally:
        process.kill()
        process.wait(timeout=30)
    finished, _ = listing(db)
    assert not finished
    result = crawl_list(url, db, *args, RATELIMIT_RATE="600/60")
    assert result.returncode == 0, result.stderr[-2000:]
    pages = Counter(entry["query"] for entry in api.requests())
    assert len(pages) == 40  # every page listed
    assert sum(pages.values()) - 40 <= 2  # re-sent: at most the pages in flight
    assert terminal_states(db) == {str(n): "stored" for n in range(1, 1001)}
    assert duplicate_rows(db) == 0 and listing(db)[0]


def test_incremental_sync_lists_only_what_changed(mockapi, tmp_path: Path, postgres_url) -> None:
    api = mockapi("--limit", "3000/60", "--catalog", "500", "--pagination", "link")
    args = ("-a", "pagination=link", "-a", "since=updated_at:updated_since")
    url = f"{api.base}/items?per_page=100"
    first = crawl_list(url, postgres_url, *args, **FAST)
    assert first.returncode == 0, first.stderr[-2000:]
    assert len(api.requests()) == 5
    _, high_water = listing(postgres_url)
    assert isinstance(high_water, str) and high_water.startswith("2024-")
    before = time.time()
    changed = api.change(range(100, 130))
    result = crawl_list(url, postgres_url, *args, **FAST)
    assert result.returncode == 0, result.stderr[-2000:]
    second = api.requests()[5:]
    assert (
        len(second) == 1
        and f"updated_since={high_water}".replace(":", "%3A") in (second[0]["query"])
    )
    rows = query(postgres_url, "SELECT id, data, extract(epoch FROM fetched_at) FROM items")
    assert {i: data["version"] for i, data, at in rows if at > before} == {i: 2 for i in changed}
    assert listing(postgres_url) == (True, max(c["updated_at"] for c in changed.values()))


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("-a", "pagination=pages:page"), "pagination"),
        (("-a", "pagination=page", "-a", "items=result.items"), "items='result.items'"),
        (("-a", "pagination=cursor:c=meta.cursor"), "pagination=cursor:c=meta.cursor"),
        (("-a", "pagination=page", "-a", "since=changed:since"), "since=changed:since"),
        (("-a", "pagination=page", "-a", "details=maybe"), "details must be 1 or 0, got 'maybe'"),
    ],
)
def test_bad_arguments_are_named_and_nothing_is_marked(mockapi, tmp_path: Path, args, named):
    api = mockapi("--limit", "3000/60", "--catalog", "100")
    db = f"sqlite:///{tmp_path}/ingest.db"
    result = crawl_list(f"{api.base}/items", db, *args, **FAST)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    errors = [line for line in lines if " ERROR: " in line or ": error: " in line]
    assert len(errors) == 1 and named in errors[0], result.stderr[-2000:]
    assert len(api.requests()) <= 1
    if Path(f"{tmp_path}/ingest.db").exists():
        assert query(db, "SELECT count(*) FROM items UNION ALL SELECT count(*) FROM listings") == [
            (0,), (0,),
        ]  # fmt: skip


def test_a_page_that_is_not_json_stops_with_its_url(mockapi, tmp_path: Path) -> None:
    api = mockapi("--limit", "3000/60", "--not-json", "5")
    db = f"sqlite:///{tmp_path}/ingest.db"
    result = crawl_list(f"{api.base}/items/5", db, "-a", "pagination=page", **FAST)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if " ERROR: " in line]
    assert len(errors) == 1 and "/items/5" in errors[0] and "is not JSON" in errors[0]
    assert query(db, "SELECT count(*) FROM listings") == [(0,)]
