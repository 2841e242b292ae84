"""Which listed ids need a request, and the feed that asks for them as pages commit."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ingest.items import FAILED, STORED, ListingMark, Outcome
from ingest.listing.details import DetailsFeed, ListedIds
from ingest.listing.pages import PagesOut
from ingest.storage import open_store
from ingest.storage.ledger import Ledger


def outcome(id_: str, state: str, fetched_at: float) -> Outcome:
    data = "{}" if state == STORED else None
    return Outcome(id_, state, f"http://api/items/{id_}", 200, data, fetched_at=fetched_at)


def test_the_feed_asks_once_for_each_listed_id_that_needs_it(tmp_path: Path) -> None:
    stats: Counter[str] = Counter()
    asked: list[list[str]] = []

    def requests_for(ids: list[str]) -> Iterator[Any]:
        asked.append(ids)
        yield from ids

    async def scenario() -> list[Any]:
        ledger = Ledger(open_store(f"sqlite:///{tmp_path}/ingest.db"))
        await ledger.open()
        # An earlier run listed 1-4 (4 by a refresh, at 10.0) and fetched 2, 3 and 4 (at 5.0).
        await ledger.write(
            [
                ListingMark("k", "{}", False, None, 1.0, listed=["1", "2", "3"]),
                ListingMark("k", "{}", False, None, 10.0, listed=["4"], stale_before=10.0),
                outcome("2", STORED, 5.0), outcome("3", FAILED, 5.0), outcome("4", STORED, 5.0),
            ]
        )  # fmt: skip
        listed = ListedIds("k", ledger, lambda stat, by=1: stats.update({stat: by}))
        assert [id_ async for id_, _ in listed.todo(lost_only=True)] == ["1", "4"]

        async def sleep(seconds: float) -> None:  # a page of this run commits meanwhile
            await ledger.write([ListingMark("k", None, True, None, 11.0, listed=["5", "2"])])
            pages.done()

        pages = PagesOut()
        feed = DetailsFeed(listed, requests_for, sleep, pages)
        pages.sent()
        requests = [request async for request in feed.listed_requests()]
        await ledger.close()
        return requests

    assert asyncio.run(scenario()) == ["1", "3", "4", "5"]
    assert asked == [["1", "3", "4"], ["5"]]  # a chunk at a time; 2 is done, listed or not
    assert stats == {"ids/scheduled": 4, "ids/skipped": 2}
