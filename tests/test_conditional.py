"""Conditional refresh: validators kept, sent back, 304s keeping rows; free 304s given back."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg

from ingest.items import STORED, UNCHANGED, ListingMark, Outcome
from ingest.ratelimit.pacing.bucket import TokenBucket
from ingest.ratelimit.pacing.rates import Rate
from ingest.storage import open_store
from tests.support.clock import FakeClock
from tests.support.crawl import crawl, query
from tests.support.mockapi import span, statuses


def test_a_refunded_send_gives_its_token_back_and_leaves_the_window() -> None:
    clock = FakeClock()
    b = TokenBucket([Rate(1, 1)], margin=0.0, spacing=0.0, clock=clock, rand=lambda: 0.0)
    first = b.reserve()
    sent = b.confirm(first).at
    waiting = b.reserve()
    assert waiting.delay == 1.0
    clock.now += 0.01
    b.refund(sent)  # answered 304, which the API does not count
    assert b.confirm(waiting).wait is None  # booked behind a send that no longer counts
    again = b.reserve()
    assert again.delay == 0.0
    b.confirm(again)
    assert b.reserve().delay == 1.0  # a counted send paces the next, as before


def test_a_refresh_sends_validators_and_304s_keep_rows(mockapi, tmp_path: Path) -> None:
    api = mockapi("--limit", "300/60", "--no-count-304")
    db = f"sqlite:///{tmp_path}/ingest.db"
    settings = {"RATELIMIT_RATE": "300/60"}
    first = crawl(api.url_template, db, "-a", "ids=1-50", **settings)
    assert first.returncode == 0, first.stderr[-2000:]
    full = span(api.requests())
    with sqlite3.connect(f"{tmp_path}/ingest.db") as conn:
        before = dict(conn.execute("SELECT id, data FROM items"))
    changed = set(api.change([7, 21, 42]))

    result = crawl(
        api.url_template, db, "-a", "ids=1-50", "-a", "refresh=1",
        RATELIMIT_COUNT_304="false", **settings,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    record = api.requests()[50:]
    assert statuses(record) == {304: 47, 200: 3}
    assert {entry["id"] for entry in record if entry["status"] == 200} == changed
    after = dict(query(db, "SELECT id, data FROM items"))
    assert {i for i in after if after[i] != before[i]} == changed
    assert len(after) == 50
    times = query(db, "SELECT min(fetched_at) FROM items")[0][0]
    assert times >= min(entry["t"] for entry in record) - 1  # every row was refreshed
    # 304s the API does not count go as fast as the answers come: far under the paced time.
    assert span(record) < 0.5 * full, (span(record), full)
    assert "storage/unchanged': 47" in result.stderr


OLD_ITEMS = {  # the items table as the first release made it
    "sqlite": "CREATE TABLE items (id TEXT PRIMARY KEY, data JSON TEXT NOT NULL, url TEXT, "
    "status INTEGER, fetched_at REAL NOT NULL)",
    "postgresql": "CREATE TABLE items (id text PRIMARY KEY, data jsonb NOT NULL, url text, "
    "status integer, fetched_at timestamptz NOT NULL)",
}


def test_an_earlier_release_database_gets_the_new_columns_and_tables(
    database_url: str,
) -> None:
    kind = "sqlite" if database_url.startswith("sqlite") else "postgresql"
    if kind == "sqlite":
        with sqlite3.connect(database_url.removeprefix("sqlite:///")) as conn:
            conn.execute(OLD_ITEMS[kind])
            conn.execute("INSERT INTO items VALUES ('1', '{\"id\": 1}', 'u', 200, 5.0)")
    else:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(OLD_ITEMS[kind])
            conn.execute("INSERT INTO items VALUES ('1', '{\"id\": 1}', 'u', 200, now())")
    store = open_store(database_url)
    store.connect()
    try:
        assert store.validators(["1"]) == {}
        store.write(
            [
                Outcome("2", STORED, "u", 200, data="{}", fetched_at=9.0, etag='"e"'),
                Outcome("1", UNCHANGED, "u", 304, fetched_at=10.0),
                ListingMark("k", None, True, '"2024"', 11.0, listed=["1", "2"]),
            ]
        )
        assert store.validators(["1", "2"]) == {"2": ('"e"', None)}
        assert store.states(["1"]) == {"1": ("stored", 10.0)}
        mark = store.listing("k")
        assert mark is not None and (mark.finished, mark.high_water) == (True, '"2024"')
        assert [(row.id, row.stale_before) for row in store.listed("k", 0, 10)] == [
            ("1", 0.0), ("2", 0.0),
        ]  # fmt: skip
    finally:
        store.close()
