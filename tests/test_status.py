"""``scrapy ingest-status``: a read of the database that creates and changes nothing."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from ingest.items import Outcome
from ingest.storage import open_store
from tests.support.crawl import scrapy_command


def status(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return scrapy_command("ingest-status", database_url, *args, timeout=60)


def test_a_missing_database_is_said_and_not_created(tmp_path: Path) -> None:
    path = tmp_path / "missing.db"
    done = status(f"sqlite:///{path}")
    assert done.returncode != 0
    (line,) = done.stderr.strip().splitlines()
    assert "no database at DATABASE_URL" in line and str(path) in line
    assert not path.exists()


def test_a_database_without_the_tables_is_left_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    path.write_bytes(b"")
    done = status(f"sqlite:///{path}")
    assert done.returncode != 0 and "holds no ingest tables" in done.stderr
    assert path.read_bytes() == b""


def test_counts_and_pending_ids(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/ingest.db"
    store = open_store(url)
    store.connect()
    api = "http://api.example/items/"
    store.write(
        [
            Outcome("1", "stored", api + "1", 200, data="{}"),
            Outcome("2", "not_found", api + "2", 404),
            Outcome("4", "failed", api + "4", 503),
        ]
    )
    store.close()
    done = status(url, "-a", "ids=1-6")
    assert done.returncode == 0, done.stderr
    assert "stored: 1" in done.stdout and "not_found: 1" in done.stdout
    assert "failed: 1" in done.stdout
    assert "pending: 3 of 6 requested ids" in done.stdout and "3,5-6" in done.stdout


def test_json_failed_and_pending(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/ingest.db"
    store = open_store(url)
    store.connect()
    api = "http://api.example/items/"
    store.write(
        [Outcome(str(i), "stored", api + str(i), 200, data="{}") for i in (1, 2, 5, 9, 10)]
        + [
            Outcome("3", "failed", api + "3", 503, reason="retries exhausted:\n503"),
            Outcome("7", "invalid", api + "7", 200, data="{}", reason="schema: 'id' missing"),
            Outcome("8", "not_found", api + "8", 404),
            Outcome("x", "failed", api + "x", 500, reason="outside the job"),
            Outcome("007", "stored", api + "007", 200, data="{}"),  # not id 7 as the job names it
        ]
    )
    store.close()

    done = status(url, "-a", "ids=1-12,20-21", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["counts"] == {"stored": 6, "not_found": 1, "invalid": 1, "failed": 2}
    assert report["job"] == {
        "ids": 14,
        "counts": {"stored": 5, "not_found": 1, "invalid": 1, "failed": 1},
        "pending": 6,
    }
    assert report["last_summary"] is None

    done = status(url, "-a", "ids=1-12,20-21", "--failed")
    assert done.stdout.splitlines() == [
        "3\tfailed\tretries exhausted: 503",
        "7\tinvalid\tschema: 'id' missing",
    ]
    out = tmp_path / "pending.txt"
    done = status(url, "-a", "ids=1-12,20-21", "--pending", str(out))
    assert done.returncode == 0 and done.stdout == "", done.stderr
    assert out.read_text().split() == ["4", "6", "11", "12", "20", "21"]
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("x\n4\n007\n3\n", encoding="utf-8")
    done = status(url, "-a", f"ids_file={ids_file}", "--pending")
    assert done.stdout.split() == ["4"]
