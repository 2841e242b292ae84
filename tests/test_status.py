"""``scrapy ingest-status``: a read of the database that creates and changes nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ingest.items import Outcome
from ingest.storage import open_store
from tests.support.crawl import REPO_ROOT, environment


def status(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scrapy", "ingest-status", "-s", f"DATABASE_URL={database_url}",
         *args],
        cwd=REPO_ROOT, env=environment(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


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
