"""Conditional refresh: validators kept, sent back, 304s keeping rows; free 304s given back."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ingest.ratelimit.bucket import TokenBucket
from ingest.ratelimit.rates import Rate
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
    api = mockapi("--limit", "600/60", "--no-count-304")
    db = f"sqlite:///{tmp_path}/ingest.db"
    settings = {"RATELIMIT_RATE": "600/60"}
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
