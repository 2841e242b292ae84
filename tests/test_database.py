"""The crawl into PostgreSQL as into SQLite, and no outcome lost when the database goes away.

The outage tests stop and restart a PostgreSQL server of their own, never the session's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import psycopg
import pytest
from scrapy.exceptions import DropItem
from scrapy.statscollectors import MemoryStatsCollector
from scrapy.utils.test import get_crawler

from ingest.config.values import load_schema
from ingest.items import FAILED, INVALID, STORED, Outcome
from ingest.pipelines import StoragePipeline, ValidationPipeline
from ingest.signals import storage_available, storage_unavailable
from ingest.stopping.waiting import Waiter
from ingest.storage import StorageRefused, StorageUnavailable, open_store
from ingest.storage.sqlite import SQLiteStore
from tests.support.crawl import (
    MOCK_SCHEMA,
    REPO_ROOT,
    crawl,
    crawl_command,
    duplicate_rows,
    environment,
    query,
    terminal_states,
)
from tests.support.mockapi import MockAPI, ids_requested_more_than_once, statuses
from tests.support.postgres import PostgresServer, free_port, running_postgres

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

CONCURRENT_REQUESTS = 16  # the project's setting, which the outage tests leave as it is


def stat(log: str, key: str) -> float:
    match = re.search(rf"'{re.escape(key)}': ([\d.]+)", log)
    return float(match.group(1)) if match else 0.0


def secrets_of(server: PostgresServer) -> list[str]:
    """The password as it may appear: raw, and percent-encoded as in the URL."""
    return [server.password, quote(server.password, safe="")]


# ---------------------------------------------------------------- the crawl, either database


def test_the_crawl_is_the_same_into_sqlite_and_postgresql(
    mockapi: Callable[..., MockAPI], database_url: str, postgres_server: PostgresServer
) -> None:
    api = mockapi("--limit", "none", "--not-found", "3", "--invalid", "5", "--not-json", "7")
    done = crawl(
        api.url_template,
        database_url,
        "-a",
        "ids=1-60",
        RATELIMIT_RATE="6000/60",
        LOG_LEVEL="DEBUG",
    )
    assert done.returncode == 3, done.stderr[-3000:]  # finished, id 7 failed (not JSON)
    states = terminal_states(database_url)
    expected = {str(i): STORED for i in range(1, 61)}
    expected |= {"3": "not_found", "5": INVALID, "7": FAILED}
    assert states == expected
    assert duplicate_rows(database_url) == 0
    assert statuses(api.requests()) == {200: 59, 404: 1}
    if database_url.startswith("postgresql://"):
        assert query(database_url, "SELECT data->>'name' FROM items WHERE id = '1'") == [
            ("Item 1",)
        ]
        (kind,) = query(database_url, "SELECT pg_typeof(data)::text FROM items LIMIT 1")[0]
        assert kind == "jsonb"
        # Every line of a DEBUG log, the stats dump included, names the database masked.
        output = done.stdout + done.stderr
        assert f"Storing into postgresql://{postgres_server.user}:***@" in output
        for secret in secrets_of(postgres_server):
            assert secret not in output
    else:
        (name,) = query(
            database_url, "SELECT json_extract(data, '$.name') FROM items WHERE id = '1'"
        )[0]
        assert name == "Item 1"


def test_an_unreachable_database_stops_the_crawl_before_any_request(
    mockapi: Callable[..., MockAPI],
) -> None:
    api = mockapi("--limit", "none")
    port = free_port()  # nothing listens there
    url = f"postgresql://bob:hunter2%40x@127.0.0.1:{port}/ingest"
    started = time.monotonic()
    done = crawl(api.url_template, url, "-a", "ids=1-10")
    assert time.monotonic() - started < 20
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert f"postgresql://bob:***@127.0.0.1:{port}/ingest" in line
    assert "Connection refused" in line
    for secret in ("hunter2", "hunter2%40x", "hunter2@x"):
        assert secret not in done.stdout + done.stderr
    assert api.requests() == []


# ---------------------------------------------------------------- the database goes away


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[PostgresServer]:
    """A server these tests may stop and start again."""
    with running_postgres() as server:
        yield server


def stored_count(url: str) -> int:
    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            row = conn.execute("SELECT count(*) FROM items").fetchone()
    except psycopg.Error:
        return 0
    return int(row[0]) if row else 0


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout}s for {what}")
        time.sleep(0.05)


def start_crawl(api: MockAPI, url: str, ids: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as output:
        return subprocess.Popen(
            crawl_command(api.url_template, url, "-a", f"ids={ids}", RATELIMIT_RATE="1200/60"),
            cwd=REPO_ROOT,
            env=environment(),
            stdout=subprocess.DEVNULL,
            stderr=output,
        )


def test_a_database_outage_pauses_fetching_and_loses_nothing(
    mockapi: Callable[..., MockAPI], own_postgres: PostgresServer, tmp_path: Path
) -> None:
    api = mockapi("--limit", "none")
    log = tmp_path / "crawl.log"
    with own_postgres.database() as url:
        process = start_crawl(api, url, "1-300", log)
        try:
            wait_until(lambda: stored_count(url) >= 50, 30, "50 ids stored")
            with own_postgres.stopped():
                down = len(api.requests())
                time.sleep(4)
                during = len(api.requests()) - down
            process.wait(timeout=60)
        finally:
            process.kill()
        output = log.read_text()
        assert process.returncode == 0, output[-3000:]
        # Once the outage showed, only requests already waiting for a token or in flight
        # went out; one more may have gone before the first failed write revealed it.
        assert during <= CONCURRENT_REQUESTS + 1, during
        states = terminal_states(url)
        assert states == {str(i): STORED for i in range(1, 301)}
        assert duplicate_rows(url) == 0
    # Each id was fetched once: the outcomes kept during the outage were written after it.
    assert statuses(api.requests()) == {200: 300}
    assert len(re.findall(r"\[ingest\.pipelines\] WARNING: Database unavailable", output)) == 1
    assert len(re.findall(r"\[ingest\.pipelines\] INFO: Writing to .* again after", output)) == 1
    assert stat(output, "storage/outages") == 1
    # The idle pass looks for ids with no outcome: none were left to find.
    assert "have no outcome yet" not in output
    assert " ERROR: " not in output
    for secret in secrets_of(own_postgres):
        assert secret not in output


def test_a_stop_during_an_outage_is_quick_and_the_rerun_completes(
    mockapi: Callable[..., MockAPI], own_postgres: PostgresServer, tmp_path: Path
) -> None:
    api = mockapi("--limit", "none")
    log = tmp_path / "crawl.log"
    with own_postgres.database() as url:
        process = start_crawl(api, url, "1-200", log)
        try:
            wait_until(lambda: stored_count(url) >= 30, 30, "30 ids stored")
            with own_postgres.stopped():
                wait_until(lambda: "fetching is paused" in log.read_text(), 10, "the outage")
                time.sleep(1)  # a retry or two
                process.send_signal(signal.SIGINT)
                stopping = time.monotonic()
                process.wait(timeout=30)
                took = time.monotonic() - stopping
        finally:
            process.kill()
        output = log.read_text()
        assert took < 5, output[-3000:]
        match = re.search(
            r"outcomes not written: (\d+) \(the next run fetches them again\)", output
        )
        assert match, output[-3000:]
        unwritten = int(stat(output, "storage/unwritten"))
        assert unwritten >= int(match.group(1)) > 0
        first_run, stored_first = len(api.requests()), len(terminal_states(url))

        again = crawl(api.url_template, url, "-a", "ids=1-200", RATELIMIT_RATE="1200/60")
        assert again.returncode == 0, again.stderr[-3000:]
        assert terminal_states(url) == {str(i): STORED for i in range(1, 201)}
        assert duplicate_rows(url) == 0
    record = api.requests()
    # The rerun fetched exactly the ids with no outcome: the unwritten ones a second time.
    assert len(record) - first_run == 200 - stored_first
    assert len(ids_requested_more_than_once(record)) == unwritten
    assert len(record) == 200 + unwritten


# ---------------------------------------------------------------- telling outages from bad data


def outcome(id_: str, data: str = "{}") -> Outcome:
    return Outcome(id_, STORED, f"http://api/items/{id_}", 200, data)


def test_postgresql_errors_are_sorted_into_refusals_and_outages(
    own_postgres: PostgresServer,
) -> None:
    with own_postgres.database() as url:
        store = open_store(url)
        store.connect()
        with pytest.raises(StorageRefused, match="cannot write to DATABASE_URL"):
            store.write([outcome("1", '{"name": "a\\u0000b"}')])  # jsonb cannot hold it
        # Too long for the primary key's index, even compressed: a limit, not an outage.
        with pytest.raises(StorageRefused, match="index row requires"):
            store.write([outcome(secrets.token_urlsafe(12_000))])
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        with pytest.raises(StorageUnavailable, match="cannot write to DATABASE_URL"):
            store.write([outcome("2")])
        with pytest.raises(StorageUnavailable, match="lost its connection"):
            store.states(["2"])
        store.connect()
        with own_postgres.stopped():
            with pytest.raises(StorageUnavailable, match="cannot read DATABASE_URL"):
                store.counts()  # the server ended the session as it shut down
            with pytest.raises(StorageUnavailable, match="cannot connect to DATABASE_URL"):
                store.connect()
        store.connect()
        store.write([outcome("2")])
        assert store.counts()["stored"] == 1
        store.close()
    with pytest.raises(StorageUnavailable, match="Connection refused"):
        open_store(f"postgresql://bob:pw@127.0.0.1:{free_port()}/db").connect()


def test_sqlite_errors_are_sorted_into_refusals_and_outages(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/ingest.db"
    store = SQLiteStore(f"{tmp_path}/ingest.db", url=url, busy_timeout=0.1)
    store.connect()
    with pytest.raises(StorageRefused, match="CHECK constraint failed"):
        store.write([outcome("1", "{not json")])
    with contextlib.closing(sqlite3.connect(tmp_path / "ingest.db")) as other:
        other.execute("BEGIN IMMEDIATE")  # another writer holds the file
        with pytest.raises(StorageUnavailable, match=f"^cannot write to DATABASE_URL {url}: "):
            store.write([outcome("1")])
        other.rollback()
    store.write([outcome("1")])
    assert store.counts()["stored"] == 1
    store.close()


# ---------------------------------------------------------------- the pipelines


def stats() -> MemoryStatsCollector:
    return MemoryStatsCollector(get_crawler())


def fetched(id_: str, data: str) -> Outcome:
    item = Outcome(id_, STORED, f"http://api/items/{id_}", 200, data=data, fetched_at=1.0)
    item.payload = json.loads(data)
    return item


def payload(**fields: object) -> str:
    doc = {
        "id": 1,
        "name": "widget",
        "price": 1.5,
        "tags": [],
        "updated_at": "2026-01-01T00:00:00Z",
    }
    return json.dumps(doc | fields)


@pytest.mark.parametrize(
    ("data", "state"),
    [
        (payload(name="a\x00b"), INVALID),
        (payload(tags=["ok", "\x00"]), INVALID),
        (payload(extra={"k\x00": 1}), INVALID),
        # An escaped backslash before "u0000" is text PostgreSQL stores as it is.
        (payload(name="C:\\u0000"), STORED),
        (payload(name="plain"), STORED),
    ],
    ids=["in-a-value", "in-a-list", "in-a-key", "escaped-backslash", "none"],
)
def test_a_payload_holding_u0000_is_invalid(data: str, state: str) -> None:
    collector = stats()
    pipeline = ValidationPipeline(load_schema(MOCK_SCHEMA), collector)
    item = pipeline.process_item(fetched("1", data))
    assert item.state == state
    if state == INVALID:
        assert item.reason == (
            "a string holds U+0000 (\\u0000), which PostgreSQL's jsonb cannot store"
        )
        assert collector.get_value("validation/invalid") == 1
    else:
        assert collector.get_value("validation/valid") == 1


def test_an_invalid_u0000_payload_is_kept_in_postgresql(postgres_url: str) -> None:
    data = payload(name="a\x00b")
    item = ValidationPipeline(load_schema(MOCK_SCHEMA), stats()).process_item(fetched("1", data))
    pipeline = StoragePipeline(open_store(postgres_url), stats())

    async def scenario() -> None:
        await pipeline.open_spider()
        await pipeline.process_item(item)
        await pipeline.close_spider()

    asyncio.run(scenario())
    assert terminal_states(postgres_url) == {"1": INVALID}
    # Kept as a JSON string of the text received: jsonb cannot hold it parsed.
    (kept,) = query(postgres_url, "SELECT data #>> '{}' FROM failures")[0]
    assert kept == data


def test_a_payload_postgresql_refuses_becomes_failed_and_the_rest_is_stored(
    postgres_url: str,
) -> None:
    collector = stats()
    pipeline = StoragePipeline(open_store(postgres_url), collector)
    items = [fetched(str(i), payload(id=i)) for i in range(1, 7)]
    # A lone surrogate: JSON to Python, not to jsonb.
    items[3] = fetched("4", payload(id=4).replace('"widget"', '"\\ud800"'))

    async def scenario() -> list[Outcome]:
        await pipeline.open_spider()
        try:
            return list(await asyncio.gather(*(pipeline.process_item(i) for i in items)))
        finally:
            await pipeline.close_spider()

    results = asyncio.run(scenario())
    assert [r.state for r in results] == [STORED] * 3 + [FAILED] + [STORED] * 2
    expected = {str(i): STORED for i in range(1, 7)} | {"4": FAILED}
    assert terminal_states(postgres_url) == expected
    (reason,) = query(postgres_url, "SELECT reason FROM failures WHERE id = '4'")[0]
    assert reason.startswith("refused by the database: cannot write to DATABASE_URL postgresql://")
    assert "surrogate" in reason
    assert collector.get_value("storage/refused") == 1
    assert collector.get_value("storage/outages") is None


class Heard:
    """The storage signals a crawler received, in order."""

    def __init__(self, crawler: Crawler) -> None:
        self.names: list[str] = []
        crawler.signals.connect(self.unavailable, signal=storage_unavailable)
        crawler.signals.connect(self.available, signal=storage_available)

    def unavailable(self) -> None:
        self.names.append("unavailable")

    def available(self) -> None:
        self.names.append("available")


def test_the_pipeline_tells_the_crawler_when_the_database_goes_and_comes_back(
    own_postgres: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ingest.pipelines")
    crawler = get_crawler()
    heard = Heard(crawler)
    collector = MemoryStatsCollector(crawler)

    async def scenario(pipeline: StoragePipeline) -> None:
        await pipeline.open_spider()
        await pipeline.process_item(fetched("1", payload(id=1)))
        await asyncio.to_thread(own_postgres.stop)
        try:
            writing = asyncio.ensure_future(pipeline.process_item(fetched("2", payload(id=2))))
            deadline = time.monotonic() + 10
            while not heard.names and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert heard.names == ["unavailable"]
            assert not writing.done()
        finally:
            await asyncio.to_thread(own_postgres.start)
        await asyncio.wait_for(writing, timeout=30)
        await pipeline.close_spider()

    with own_postgres.database() as url:
        asyncio.run(scenario(StoragePipeline(open_store(url), collector, signals=crawler.signals)))
        assert terminal_states(url) == {"1": STORED, "2": STORED}
    assert heard.names == ["unavailable", "available"]
    assert collector.get_value("storage/outages") == 1
    assert collector.get_value("storage/outage_seconds") > 0
    assert collector.get_value("storage/stored") == 2
    said = [r.getMessage() for r in caplog.records if r.name == "ingest.pipelines"]
    assert len([m for m in said if m.startswith("Database unavailable, so fetching")]) == 1
    assert len([m for m in said if re.match(r"Writing to .* again after", m)]) == 1
    for secret in secrets_of(own_postgres):
        assert all(secret not in message for message in said)


def test_a_stop_while_the_database_is_unreachable_drops_the_item() -> None:
    # Never reachable: every write fails as it would with the server gone.
    crawler = get_crawler()
    heard = Heard(crawler)
    collector = stats()
    pipeline = StoragePipeline(
        open_store(f"postgresql://bob:pw@127.0.0.1:{free_port()}/db"),
        collector,
        sleep=Waiter(lambda: True).sleep,  # the crawl is stopping
        signals=crawler.signals,
    )
    item = fetched("1", payload())

    async def scenario() -> None:
        try:
            await pipeline.process_item(item)
        finally:
            await pipeline.close_spider()

    with pytest.raises(DropItem, match="not written: the database is unreachable; the next run"):
        asyncio.run(scenario())
    assert heard.names == ["unavailable"]
    assert collector.get_value("storage/unwritten") == 1
    assert collector.get_value("storage/stored") is None
