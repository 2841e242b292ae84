"""A crawl that spends an allowance of RATELIMIT_RATE (a day's, here a few seconds' stand-in)
stops cleanly, says when it may go on, and the same command then continues."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from scrapy.utils.test import get_crawler

from ingest.ratelimit.backends.memory import MemoryBackend
from ingest.ratelimit.feedback import Pauses
from ingest.ratelimit.pacing.bucket import TokenBucket
from ingest.ratelimit.pacing.rates import Rate
from ingest.ratelimit.routing import Router
from ingest.signals import allowance_spent
from ingest.stopping.waiting import Stopping, Waiter
from tests.support.clock import FakeClock
from tests.support.crawl import crawl, query
from tests.support.mockapi import ids_requested_more_than_once, statuses

DAILY = [Rate(20, 1.0), Rate(30, 6.0)]  # 20 a second, 30 in any 6 s: "a day" of 30


def bucket(clock: FakeClock) -> TokenBucket:
    return TokenBucket(DAILY, margin=0.0, spacing=0.0, clock=clock, rand=lambda: 0.0)


def test_a_slot_an_allowance_holds_too_long_is_not_booked() -> None:
    clock = FakeClock(0.0)
    b = bucket(clock)
    slots = [b.reserve(longest=2.0) for _ in range(30)]
    assert [s.held for s in slots] == [0.0] * 30  # the allowance, booked ahead
    clock.now = 1.0
    # The 31st: the window holds 30 sends from the first (made at 0), free again at 6.
    held = b.reserve(longest=2.0)
    assert (held.held, held.held_by) == (pytest.approx(5.0), Rate(30, 6.0))
    assert len(b.state.sends) == 30  # nothing booked for it
    assert b.last_booked() == pytest.approx(0.45)  # the allowance's last send is ahead
    clock.now = 1.46
    assert b.last_booked() > 0  # its time came, it has not gone yet
    assert b.confirm(slots[-1]).wait == 0
    assert b.last_booked() == 0
    # Waiting no longer than that, or without a limit, it is booked as always.
    assert b.reserve(longest=5.5).at == pytest.approx(6.0)
    assert b.reserve().at == pytest.approx(6.05)


def test_the_pacing_rate_alone_holds_nothing() -> None:
    clock = FakeClock(0.0)
    b = TokenBucket([Rate(1, 60.0)], clock=clock, margin=0.0, spacing=0.0)
    b.reserve(longest=30.0)
    clock.now = 1.0
    slot = b.reserve(longest=30.0)
    assert (slot.held, slot.delay) == (0.0, pytest.approx(59.0))


def test_the_router_lets_the_allowance_go_then_stops_saying_when() -> None:
    clock = FakeClock(1000.0)
    crawler = get_crawler()
    assert crawler.stats is not None
    crawler.stats.open_spider()
    crawler.engine = SimpleNamespace(running=False)
    spent: list[dict[str, Any]] = []

    def told(**kwargs: Any) -> None:
        spent.append(kwargs)

    crawler.signals.connect(told, signal=allowance_spent)
    backend = MemoryBackend(DAILY, clock=clock, rand=lambda: 0.0)
    pauses = Pauses(crawler, backend, max_pause=2.0, clock=clock)
    router = Router(
        (), backend, pauses=pauses, stats=crawler.stats, on_all_rejected=lambda api: None,
        waiter=Waiter(lambda: False, spin=0.0, clock=clock, sleep=clock.sleep),
    )  # fmt: skip

    async def scenario() -> None:
        sent = [(await router.send_slot("api")).at for _ in range(30)]
        assert sent[-1] - sent[0] == pytest.approx(29 / 20, abs=0.05)
        with pytest.raises(Stopping):
            await router.send_slot("api")

    asyncio.run(scenario())
    (event,) = spent
    assert (event["bucket"], event["rate"]) == ("api", "30/6")
    assert event["until"] == pytest.approx(1006.0, abs=0.1)  # the first send, a window on
    assert crawler.stats.get_value("ratelimit/resume_after") == "1970-01-01T00:16:47+00:00"


def test_a_spent_allowance_stops_the_crawl_and_the_same_command_goes_on_after(
    mockapi, tmp_path: Path
) -> None:
    api = mockapi("--limit", "20/1,30/6", "--algorithm", "sliding")
    db = f"sqlite:///{tmp_path / 'ingest.db'}"
    settings = {"RATELIMIT_RATE": "20/1,30/6", "RATELIMIT_MAX_PAUSE": "2"}
    first = crawl(api.url_template, db, "-a", "ids=1-50", **settings)
    assert first.returncode == 75, first.stderr[-3000:]
    sent = statuses(api.requests())
    assert sent == {200: 30}, (sent, first.stderr[-3000:])  # the allowance, then nothing
    said = re.search(
        r"the allowance of RATELIMIT_RATE's 30/6 is spent, the next request may go in \d+s, "
        r"more than RATELIMIT_MAX_PAUSE=2s: stopping\. Run the same command again after "
        r"(\S+ \S+) UTC to continue\.",
        first.stderr,
    )
    assert said, first.stderr[-3000:]
    resume = datetime.strptime(said.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()
    ((name, until),) = query(db, "SELECT name, reset_at FROM quotas WHERE source = 'configured'")
    assert name == "30/6" and until <= resume
    # Too early: said again, before any request.
    if time.time() < until - 1:
        early = crawl(api.url_template, db, "-a", "ids=1-50", **settings)
        assert early.returncode == 75 and "was spent by an earlier run" in early.stderr
        assert len(api.requests()) == 30
    time.sleep(max(0.0, resume - time.time()))
    later = crawl(api.url_template, db, "-a", "ids=1-50", **settings)
    assert later.returncode == 0, later.stderr[-3000:]
    record = api.requests()
    assert statuses(record) == {200: 50}
    assert ids_requested_more_than_once(record) == set()
