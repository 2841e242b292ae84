"""``scrapy ingest-plan``: the requests a job needs and when they go, before any request; the
schedule's arithmetic; the quotas kept in the database for it, in SQLite and PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest

from ingest.items import Outcome
from ingest.planning.schedule import Allowance, allowance_of, schedule, span
from ingest.ratelimit.pacing.rates import Rate
from ingest.storage import open_store
from ingest.storage.base import CONFIGURED, SERVER, KeptQuota
from tests.support.crawl import scrapy_command

DAY = 86_400.0
MOCK = "http://127.0.0.1:8700"  # the default API_URL's origin


def plan(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return scrapy_command("ingest-plan", database_url, *args)


def epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


# ---------------------------------------------------------------- the arithmetic


def test_the_span_of_requests_at_several_rates() -> None:
    assert span(1, [Rate(100, 60)]) == 0
    assert span(101, [Rate(100, 60)]) == pytest.approx(60.0)
    # 300 in any 600 s at 100 a minute: 300 in 179.4 s, the next 300 from 600 s on.
    assert span(301, [Rate(100, 60), Rate(300, 600)]) == pytest.approx(600.0)
    assert span(600, [Rate(100, 60), Rate(300, 600)]) == pytest.approx(600 + 179.4)
    # A long rate the pace never fills binds nothing.
    assert span(5000, [Rate(100, 60), Rate(1_000_000, DAY)]) == span(5000, [Rate(100, 60)])
    assert allowance_of([Rate(100, 60), Rate(1_000_000, DAY)]) is None
    assert allowance_of([Rate(100, 60), Rate(5000, 3600), Rate(15000, DAY)]) == Rate(15000, DAY)


def test_40000_requests_at_15000_a_day_take_three_days() -> None:
    timed = schedule(40_000, [Rate(100, 60), Rate(15_000, DAY)], start=0.0)
    assert timed.allowance == Rate(15_000, DAY)
    assert timed.allowances == (
        Allowance(15_000, 0.0, pytest.approx(8999.4), DAY),
        Allowance(15_000, DAY, pytest.approx(DAY + 8999.4), 2 * DAY),
        Allowance(10_000, 2 * DAY, pytest.approx(2 * DAY + 5999.4), None),
    )


def test_a_quota_seen_partly_spent_fills_the_first_allowance_only() -> None:
    timed = schedule(1000, [Rate(100, 60), Rate(500, DAY)], start=0.0, first=200, renews=3600.0)
    assert [(a.requests, a.starts) for a in timed.allowances] == [
        (200, 0.0), (500, 3600.0), (300, 3600.0 + DAY),
    ]  # fmt: skip
    spent = schedule(10, [Rate(100, 60), Rate(500, DAY)], start=0.0, first=0, renews=3600.0)
    assert [(a.requests, a.starts) for a in spent.allowances] == [(10, 3600.0)]


# ---------------------------------------------------------------- the quotas table


def test_quotas_are_kept_one_per_bucket_and_name(database_url: str) -> None:
    store = open_store(database_url)
    store.connect()
    daily = KeptQuota(MOCK, "daily", SERVER, 250_000, DAY, 249_999, None, 1000.0)
    spent = KeptQuota(f"{MOCK}#ab12cd34", "300/600", CONFIGURED, 300, 600.0, 0, 2000.5, 1400.0)
    other = KeptQuota("http://127.0.0.1:87001", "daily", SERVER, 1, DAY, 0, None, 1.0)
    for quota in (daily, spent, other):
        store.keep_quota(quota)
    later = KeptQuota(MOCK, "daily", SERVER, 250_000, DAY, 249_000, None, 1100.0)
    store.keep_quota(later)
    assert store.kept_quotas(MOCK) == [later, spent]
    assert store.kept_quotas("http://127.0.0.1:870_") == []  # a LIKE pattern is no wildcard
    store.close()


# ---------------------------------------------------------------- the command


def test_the_plan_of_40000_ids_at_15000_a_day(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'ingest.db'}"
    began = time.time()
    done = plan(db, "-a", "ids=1-40000", "-s", "RATELIMIT_RATE=100/60,15000/86400", "--json")
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert (found["requests"], found["days"], found["todo"]) == (40_000, 3, 40_000)
    periods = found["allowance"]["periods"]
    assert [p["requests"] for p in periods] == [15_000, 15_000, 10_000]
    first = epoch(periods[0]["starts_at"])
    assert began - 1 <= first <= time.time() + 1
    # Each day's allowance ends 2 h 30 min after it begins: 15,000 at 100 a minute.
    ends = [epoch(p["ends_at"]) - epoch(p["starts_at"]) for p in periods]
    assert ends == pytest.approx([9000, 9000, 6000], abs=1)
    assert [epoch(p["next_at"]) - first for p in periods[:2]] == pytest.approx(
        [DAY, 2 * DAY], abs=1
    )
    assert not (tmp_path / "ingest.db").exists()  # a plan creates nothing
    text = plan(db, "-a", "ids=1-40000", "-s", "RATELIMIT_RATE=100/60,15000/86400")
    assert "40,000 requests" in text.stdout and "over 3 days" in text.stdout
    assert text.stdout.count("the allowance spent until") == 2, text.stdout


def test_the_plan_counts_only_what_is_not_done_in_batches_and_keys(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ingest.db'}"
    store = open_store(url)
    store.connect()
    api = "http://api.example/items/"
    store.write(
        [Outcome(str(i), "stored", api, 200, data="{}") for i in range(1, 101)]
        + [Outcome("101", "not_found", api, 404), Outcome("102", "failed", api, 503)]
    )
    store.close()
    settings = ["-s", "RATELIMIT_RATE=100/60", "-s", "API_TOKENS=one,two"]
    found = json.loads(plan(url, "-a", "ids=1-1000", *settings, "--json").stdout)
    # 101 done (the failed id is asked again): 899 ids, two keys at 100/60 each.
    assert (found["done"], found["requests"], found["keys"]) == (101, 899, 2)
    assert found["seconds"] == pytest.approx(449 * 0.6)
    batches = ["-s", "API_BATCH_SIZE=50", "-s", f"API_BATCH_URL={MOCK}/items?ids={{ids}}"]
    found = json.loads(plan(url, "-a", "ids=1-1000", *batches, "--json").stdout)
    assert found["requests"] == 18  # 899 ids, 50 a request
    refresh = json.loads(plan(url, "-a", "ids=1-1000", "-a", "refresh=1", "--json").stdout)
    assert refresh["requests"] == 1000


def test_a_daily_quota_the_api_said_before_is_planned_by(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ingest.db'}"
    store = open_store(url)
    store.connect()
    now = time.time()
    # Seen an hour ago: 1,000 of 15,000 left; a rolling day, so renewed 23 h from now.
    store.keep_quota(KeptQuota(MOCK, "api-usage", SERVER, 15_000, DAY, 1000, None, now - 3600))
    store.close()
    found = json.loads(
        plan(url, "-a", "ids=1-20000", "-s", "RATELIMIT_RATE=100/60", "--json").stdout
    )
    allowance = found["allowance"]
    assert (allowance["rate"], allowance["source"]) == ("15000/86400", "the API's api-usage quota")
    assert [p["requests"] for p in allowance["periods"]] == [1000, 15_000, 4000]
    assert epoch(allowance["periods"][1]["starts_at"]) == pytest.approx(now - 3600 + DAY, abs=1)


def test_bad_arguments_are_said_in_one_line(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'ingest.db'}"
    done = plan(db, "-s", "RATELIMIT_RATE=100/60")
    assert done.returncode == 2 and "needs -a ids=1-100 or -a ids_file=PATH" in done.stderr
    done = plan(db, "-a", "ids=1-5", "-s", "RATELIMIT_RATE=fast")
    assert done.returncode == 2 and "RATELIMIT_RATE must look like" in done.stderr
