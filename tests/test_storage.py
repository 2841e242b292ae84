"""The storage contract, run against SQLite and a real PostgreSQL server alike."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ingest.config.masking import mask_url
from ingest.items import STORED, ListingMark, Outcome
from ingest.storage import (
    StorageError,
    StorageRefused,
    StorageUnavailable,
    Store,
    open_store,
)
from tests.support.postgres import PostgresServer, free_port

NAME_QUERIES = {
    ("sqlite", "items"): "SELECT json_extract(data, '$.name') FROM items WHERE id = ?",
    ("sqlite", "failures"): "SELECT json_extract(data, '$.name') FROM failures WHERE id = ?",
    ("postgresql", "items"): "SELECT data->>'name' FROM items WHERE id = ?",
    ("postgresql", "failures"): "SELECT data->>'name' FROM failures WHERE id = ?",
}
DATA_QUERIES = {
    ("sqlite", "items"): "SELECT data FROM items",
    ("sqlite", "failures"): "SELECT data FROM failures",
    ("postgresql", "items"): "SELECT data::text FROM items",
    ("postgresql", "failures"): "SELECT data::text FROM failures",
}


def backend(url: str) -> str:
    return "sqlite" if url.startswith("sqlite:") else "postgresql"


def rows(url: str, query: str, *params: object) -> list[Any]:
    """Run a query written with ? placeholders straight against the database behind `url`."""
    if backend(url) == "sqlite":
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn:
            return conn.execute(query, params).fetchall()
    with psycopg.connect(url) as conn:
        return conn.execute(query.replace("?", "%s"), params).fetchall()


def name_of(url: str, table: str, id_: str) -> list[Any]:
    return [r[0] for r in rows(url, NAME_QUERIES[backend(url), table], id_)]


def data_texts(url: str, table: str) -> list[str]:
    """The `data` column of every row, as JSON text."""
    return [r[0] for r in rows(url, DATA_QUERIES[backend(url), table])]


def item(id_: str, name: str = "widget", fetched_at: float = 1_700_000_000.25) -> Outcome:
    data = json.dumps({"id": id_, "name": name})
    return Outcome(id_, STORED, f"http://api/items/{id_}", 200, data, fetched_at=fetched_at)


def failure(id_: str, state: str, reason: str = "because", data: str | None = None) -> Outcome:
    return Outcome(id_, state, f"http://api/items/{id_}", 500, data, reason, 1_700_000_100.5)


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    store = open_store(database_url)
    store.connect()
    yield store
    store.close()


def test_connect_creates_the_tables_and_is_idempotent(database_url: str) -> None:
    store = open_store(database_url)
    store.connect()
    store.connect()
    store.write([item("1")])
    store.close()
    store.connect()
    if backend(database_url) == "sqlite":
        tables = rows(database_url, "SELECT name FROM sqlite_master WHERE type = 'table'")
        assert rows(database_url, "PRAGMA journal_mode") == [("wal",)]
    else:
        tables = rows(database_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        types = rows(
            database_url,
            "SELECT table_name, data_type FROM information_schema.columns"
            " WHERE table_schema = 'public' AND column_name IN ('data', 'fetched_at')"
            " ORDER BY 1, 2",
        )
        compression = rows(
            database_url,
            "SELECT attrelid::regclass::text, attcompression FROM pg_attribute"
            " WHERE attname = 'data' AND attrelid IN ('items'::regclass, 'failures'::regclass)"
            " ORDER BY 1",
        )
        assert compression == [("failures", "l"), ("items", "l")]
        assert types == [
            ("failures", "jsonb"),
            ("failures", "timestamp with time zone"),
            ("items", "jsonb"),
            ("items", "timestamp with time zone"),
        ]
    assert sorted(t[0] for t in tables) == ["failures", "items", "listed", "listings", "quotas"]
    assert store.counts()["stored"] == 1
    store.close()


def test_stored_record_is_one_row_with_queryable_data(store: Store, database_url: str) -> None:
    store.write([item("42", name="gizmo")])
    assert name_of(database_url, "items", "42") == ["gizmo"]
    assert rows(database_url, "SELECT id, url, status FROM items") == [
        ("42", "http://api/items/42", 200)
    ]
    assert rows(database_url, "SELECT count(*) FROM failures") == [(0,)]
    assert store.states(["42"]) == {"42": ("stored", pytest.approx(1_700_000_000.25, abs=1e-5))}


def test_writing_an_id_again_updates_its_one_row(store: Store, database_url: str) -> None:
    store.write([item("7", name="old", fetched_at=1_000.0)])
    store.write([item("7", name="new", fetched_at=2_000.5)])
    assert name_of(database_url, "items", "7") == ["new"]
    assert store.states(["7"]) == {"7": ("stored", pytest.approx(2_000.5, abs=1e-5))}
    assert store.counts() == {"stored": 1, "not_found": 0, "invalid": 0, "failed": 0}


def test_storing_removes_the_failure_row(store: Store, database_url: str) -> None:
    store.write([failure("5", "failed"), failure("6", "not_found")])
    store.write([item("5"), item("6")])
    assert rows(database_url, "SELECT count(*) FROM failures") == [(0,)]
    assert store.counts() == {"stored": 2, "not_found": 0, "invalid": 0, "failed": 0}


@pytest.mark.parametrize("state", ["not_found", "invalid"])
def test_not_found_and_invalid_remove_the_item_row(
    store: Store, database_url: str, state: str
) -> None:
    store.write([item("9")])
    payload = json.dumps({"name": "bad", "price": -1})
    store.write([failure("9", state, reason="price must be >= 0", data=payload)])
    assert rows(database_url, "SELECT count(*) FROM items") == [(0,)]
    assert rows(database_url, "SELECT state, reason, status, attempts FROM failures") == [
        (state, "price must be >= 0", 500, 1)
    ]
    assert name_of(database_url, "failures", "9") == ["bad"]
    assert store.states(["9"]) == {"9": (state, pytest.approx(1_700_000_100.5, abs=1e-5))}


def test_failed_never_replaces_stored_data(store: Store, database_url: str) -> None:
    store.write([item("1", name="keep")])
    store.write([failure("1", "failed"), failure("2", "failed", reason="timeout")])
    assert name_of(database_url, "items", "1") == ["keep"]
    assert rows(database_url, "SELECT id, state, reason FROM failures") == [
        ("2", "failed", "timeout")
    ]
    assert store.states(["1", "2"])["1"][0] == "stored"


def test_attempts_count_the_failures_of_an_id(store: Store, database_url: str) -> None:
    store.write([failure("3", "failed")])
    store.write([failure("3", "failed")])
    store.write([failure("3", "not_found"), failure("3", "failed")])
    assert rows(database_url, "SELECT state, attempts FROM failures") == [("failed", 4)]
    store.write([item("3")])
    store.write([failure("3", "invalid", data="{}")])
    assert rows(database_url, "SELECT state, attempts FROM failures") == [("invalid", 1)]


@pytest.mark.parametrize(
    ("batch", "expected"),
    [
        ([item("1", "a"), failure("1", "not_found"), item("1", "b")], ("stored", "b")),
        ([item("1", "a"), failure("1", "invalid", data='{"name": "c"}')], ("invalid", "c")),
        ([failure("1", "failed"), item("1", "d")], ("stored", "d")),
        # Applied in turn, the stored record comes first, then the failure leaves it alone.
        ([item("1", "e"), failure("1", "failed")], ("stored", "e")),
    ],
)
def test_the_last_record_of_an_id_in_a_batch_wins(
    store: Store, database_url: str, batch: list[Outcome], expected: tuple[str, str]
) -> None:
    store.write(batch)
    state, name = expected
    assert store.states(["1"])["1"][0] == state
    table = "items" if state == "stored" else "failures"
    assert name_of(database_url, table, "1") == [name]
    assert sum(store.counts().values()) == 1


def test_states_and_counts(store: Store) -> None:
    assert store.counts() == {"stored": 0, "not_found": 0, "invalid": 0, "failed": 0}
    assert store.states([]) == {}
    outcomes = [item(str(i), fetched_at=1_000.0 + i) for i in range(600)]
    outcomes += [failure("nf", "not_found"), failure("bad", "invalid", data="{}")]
    outcomes += [failure("f1", "failed"), failure("f2", "failed")]
    store.write(outcomes)
    assert store.counts() == {"stored": 600, "not_found": 1, "invalid": 1, "failed": 2}
    ids = [str(i) for i in range(0, 1200, 2)] + ["nf", "bad", "f1", "nope"]
    started = time.perf_counter()
    states = store.states(ids[:1000])
    elapsed = time.perf_counter() - started
    assert elapsed < 0.5
    assert len(states) == 300 + 3
    assert states["598"] == ("stored", pytest.approx(1_598.0))
    assert "600" not in states
    assert store.states(["nf", "bad", "f2", "nope"]) == {
        "nf": ("not_found", pytest.approx(1_700_000_100.5)),
        "bad": ("invalid", pytest.approx(1_700_000_100.5)),
        "f2": ("failed", pytest.approx(1_700_000_100.5)),
    }


def test_listed_ids_keep_their_order_and_a_relisted_id_moves_to_the_end(store: Store) -> None:
    store.write([ListingMark("k", '{"url": "a"}', False, None, 1.0, listed=["3", "1", "2"])])
    store.write([ListingMark("other", None, True, None, 1.5, listed=["1"])])
    store.write([ListingMark("k", None, True, None, 2.0, listed=["1", "9"], stale_before=2.0)])
    store.write([ListingMark("k", None, True, None, 3.0, listed=["9"])])  # keeps the later time
    listed = store.listed("k", 0, 10)
    assert [(row.id, row.stale_before) for row in listed] == [
        ("3", 0.0), ("2", 0.0), ("1", 2.0), ("9", 2.0),
    ]  # fmt: skip
    assert [row.place for row in listed] == sorted(row.place for row in listed)
    assert [row.id for row in store.listed("k", listed[1].place, 2)] == ["1", "9"]
    assert [row.id for row in store.listed("other", 0, 10)] == ["1"]


def test_unicode_and_large_payloads_round_trip(store: Store, database_url: str) -> None:
    name = 'Zoë ☃ 東京 🚀 "quoted" back\\slash'
    big = {"name": name, "blob": "x" * 2_000_000, "list": list(range(10_000))}
    data = json.dumps(big, ensure_ascii=False)
    store.write([Outcome("ü-1", STORED, "http://api/items/ü-1", data=data, fetched_at=1.0)])
    assert name_of(database_url, "items", "ü-1") == [name]
    [stored] = data_texts(database_url, "items")
    assert json.loads(stored) == big
    if backend(database_url) == "sqlite":
        assert stored == data


def test_a_refused_write_leaves_nothing_half_written(store: Store, database_url: str) -> None:
    store.write([item("1", name="before")])
    broken = Outcome("3", STORED, "http://api/items/3", data="{not json", fetched_at=1.0)
    with pytest.raises(StorageRefused, match="cannot write to DATABASE_URL"):
        store.write([item("1", name="after"), failure("2", "not_found"), broken])
    assert name_of(database_url, "items", "1") == ["before"]
    assert store.counts() == {"stored": 1, "not_found": 0, "invalid": 0, "failed": 0}
    store.write([item("4")])
    assert store.counts()["stored"] == 2


def test_an_invalid_payload_that_is_not_json_is_kept_as_a_json_string(
    store: Store, database_url: str
) -> None:
    store.write([failure("1", "invalid", reason="not JSON", data="<html>oops</html>")])
    assert [json.loads(d) for d in data_texts(database_url, "failures")] == ["<html>oops</html>"]


def test_write_rejects_a_record_it_cannot_store(store: Store) -> None:
    with pytest.raises(ValueError, match="'1' has an unknown state: 'done'"):
        store.write([Outcome("1", "done", "http://api/items/1", data="{}")])
    with pytest.raises(ValueError, match="'2' is stored but has no data"):
        store.write([Outcome("2", STORED, "http://api/items/2")])
    assert sum(store.counts().values()) == 0


def test_a_store_that_is_not_connected_is_unavailable(database_url: str) -> None:
    # Unavailable, not wrong: connecting is the cure.
    store = open_store(database_url)
    with pytest.raises(StorageUnavailable, match="is not connected"):
        store.write([item("1")])
    store.connect()
    store.close()
    with pytest.raises(StorageUnavailable, match="is not connected"):
        store.counts()


def test_a_relative_sqlite_path_is_relative_to_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_store("sqlite:///relative.db")
    monkeypatch.chdir("/")
    store.connect()
    store.write([item("1")])
    store.close()
    assert (tmp_path / "relative.db").is_file()
    assert open_store(f"sqlite:///{tmp_path}/x.db").url == f"sqlite:///{tmp_path}/x.db"


@pytest.mark.parametrize(
    ("make_path", "cause"),
    [
        (lambda tmp: tmp / "missing" / "x.db", f"directory {{tmp}}{os.sep}missing does not exist"),
        (lambda tmp: tmp, "unable to open database file"),
        (lambda tmp: tmp / "file" / "x.db", "is not a directory"),
        (lambda tmp: tmp / "garbage.db", "file is not a database"),
    ],
    ids=["missing-directory", "path-is-a-directory", "parent-is-a-file", "not-a-database"],
)
def test_sqlite_connect_errors_name_the_url(tmp_path: Path, make_path: Any, cause: str) -> None:
    (tmp_path / "file").write_text("")
    (tmp_path / "garbage.db").write_bytes(b"this is not a database file" * 100)
    url = f"sqlite:///{make_path(tmp_path)}"
    with pytest.raises(StorageError) as error:
        open_store(url).connect()
    assert str(error.value).startswith(f"cannot open DATABASE_URL {url}: ")
    assert cause.format(tmp=tmp_path) in str(error.value)


def test_sqlite_connect_error_for_an_unwritable_directory(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        directory = Path("/proc")  # not writable even by root
    else:
        directory = tmp_path / "read-only"
        directory.mkdir(mode=0o555)
    url = f"sqlite:///{directory}/ingest.db"
    with pytest.raises(StorageError, match=f"^cannot open DATABASE_URL {url}: unable to open"):
        open_store(url).connect()


def test_unreachable_postgresql_names_the_masked_url_and_hides_the_password() -> None:
    port = free_port()
    store = open_store(f"postgresql://bob:hunter2@127.0.0.1:{port}/db")
    assert store.url == f"postgresql://bob:***@127.0.0.1:{port}/db"
    started = time.perf_counter()
    with pytest.raises(StorageError) as error:
        store.connect()
    assert time.perf_counter() - started < 5
    message = str(error.value)
    assert message.startswith(f"cannot connect to DATABASE_URL {store.url}: ")
    assert "Connection refused" in message
    assert "hunter2" not in message
    assert isinstance(error.value, StorageUnavailable)
    assert isinstance(error.value.__cause__, psycopg.OperationalError)


def test_a_wrong_postgresql_password_is_not_echoed(postgres_server: PostgresServer) -> None:
    server = postgres_server
    url = f"postgresql://{server.user}:hunter2@{server.host}:{server.port}/postgres"
    with pytest.raises(StorageError, match="password authentication failed") as error:
        open_store(url).connect()
    assert "hunter2" not in str(error.value)
    assert f"{server.user}:***@" in str(error.value)


def test_postgres_scheme_is_accepted(postgres_url: str) -> None:
    store = open_store(postgres_url.replace("postgresql://", "postgres://", 1))
    store.connect()
    store.write([item("1")])
    assert store.counts()["stored"] == 1
    store.close()


def test_stores_connecting_at_once_create_the_schema_once(postgres_url: str) -> None:
    errors: list[BaseException] = []

    def connect() -> None:
        store = open_store(postgres_url)
        try:
            store.connect()
        except BaseException as exc:
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=connect) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_postgresql_reconnects_after_its_connection_is_killed(
    postgres_url: str, postgres_server: PostgresServer
) -> None:
    store = open_store(postgres_url)
    store.connect()
    store.write([item("1")])
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
    assert killed == (1,)
    with pytest.raises(StorageUnavailable, match="cannot write to DATABASE_URL") as error:
        store.write([item("2")])
    assert postgres_server.password not in str(error.value)
    with pytest.raises(StorageUnavailable, match="lost its connection: call connect"):
        store.states(["1"])
    store.connect()
    store.write([item("2")])
    assert store.counts()["stored"] == 2
    store.close()


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://bob:s3cret@h/db", "postgresql://bob:***@h/db"),
        (
            "postgresql://bob:p%40ss@h:5432/db?sslmode=require",
            "postgresql://bob:***@h:5432/db?sslmode=require",
        ),
        ("postgresql://bob:pa/ss#w@h/db", "postgresql://bob:***@h/db"),
        ("postgresql://h/db?user=bob&password=s3cret", "postgresql://h/db?user=bob&password=***"),
        ("postgresql://bob@h/db", "postgresql://bob@h/db"),
        ("sqlite:///ingest.db", "sqlite:///ingest.db"),
        ("sqlite:////var/lib/ingest.db", "sqlite:////var/lib/ingest.db"),
        ("redis://:s3cret@localhost:6379/0", "redis://:***@localhost:6379/0"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "mysql://bob:s3cret@h/db",
            "DATABASE_URL has an unknown scheme: 'mysql://bob:***@h/db' "
            "(use sqlite:///path or postgresql://…)",
        ),
        ("ingest.db", "DATABASE_URL has an unknown scheme: 'ingest.db'"),
        ("", "DATABASE_URL has an unknown scheme: ''"),
        ("sqlite://", "DATABASE_URL has no SQLite file path: 'sqlite://'"),
        ("sqlite://host/x.db", "DATABASE_URL has no SQLite file path: 'sqlite://host/x.db'"),
        (
            "postgresql://bob:s3cret@h:5432/db?nosuchoption=1",
            "DATABASE_URL is not a valid PostgreSQL URL: 'postgresql://bob:***@h:5432/db?",
        ),
    ],
)
def test_open_store_rejects_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError) as error:
        open_store(url)
    assert str(error.value).startswith(message)
    assert "s3cret" not in str(error.value)


def test_open_store_does_no_io(tmp_path: Path) -> None:
    open_store(f"sqlite:///{tmp_path}/missing/x.db")
    open_store(f"postgresql://bob:pw@127.0.0.1:{free_port()}/db")
    assert list(tmp_path.iterdir()) == []


def test_invalid_ids_are_kept_for_another_schema_to_check(store: Store, database_url: str) -> None:
    def invalid(id_: str, reason: str, schema: str | None) -> Outcome:
        outcome = failure(id_, "invalid", reason, json.dumps({"id": id_, "name": "w"}))
        outcome.schema = schema
        return outcome

    store.write(
        [
            invalid("1", "schema: 'sku' is a required property (at $)", "aaa"),
            invalid("2", "schema: 'sku' is a required property (at $)", "bbb"),
            invalid(
                "3", "a string holds U+0000 (\\u0000), which PostgreSQL's jsonb cannot store", None
            ),
            invalid("4", "schema: made by an earlier release (at $)", None),
            failure("5", "failed"),
        ]
    )
    kept = store.kept_invalid("bbb", "", 10)
    # Another schema's (or none recorded); not the one checked already, nor U+0000's.
    assert [row.id for row in kept] == ["1", "4"]
    assert json.loads(kept[0].data) == {"id": "1", "name": "w"}
    assert kept[0].fetched_at == pytest.approx(1_700_000_100.5)
    assert [row.id for row in store.kept_invalid("bbb", "1", 10)] == ["4"]  # after "1"
    store.checked("bbb", [("1", "schema: still wrong (at $)")])
    assert [row.id for row in store.kept_invalid("bbb", "", 10)] == ["4"]
    assert rows(database_url, "SELECT reason FROM failures WHERE id = ?", "1") == [
        ("schema: still wrong (at $)",)
    ]
