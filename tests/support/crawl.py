"""Running ``scrapy crawl api`` as users do, in its own process, and reading what it stored."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg

REPO_ROOT = Path(__file__).resolve().parents[2]
# The bundled mock API's schema: what the tests' crawls validate against, named explicitly
# (the default, any JSON object, fits a stranger's API).
MOCK_SCHEMA = str(REPO_ROOT / "mockapi" / "item.schema.json")


def crawl_command(api_url: str, database_url: str, *args: str, **settings: Any) -> list[str]:
    """``scrapy crawl api`` with ``args`` (``-a ids=…``) and ``-s NAME=VALUE`` settings."""
    command = [sys.executable, "-m", "scrapy", "crawl", "api", *args]
    merged = {
        "API_URL": api_url, "DATABASE_URL": database_url, "ITEM_SCHEMA": MOCK_SCHEMA, **settings
    }  # fmt: skip
    for name, value in merged.items():
        if value is not None:  # None: the project's default
            command += ["-s", f"{name}={value}"]
    return command


def list_command(url: str, database_url: str, *args: str, **settings: Any) -> list[str]:
    """``scrapy crawl list -a url=URL`` with ``args`` (``-a pagination=…``) and settings."""
    command = [sys.executable, "-m", "scrapy", "crawl", "list", "-a", f"url={url}", *args]
    merged = {"DATABASE_URL": database_url, "ITEM_SCHEMA": MOCK_SCHEMA, **settings}
    for name, value in merged.items():
        if value is not None:  # None: the project's default
            command += ["-s", f"{name}={value}"]
    return command


def crawl_list(
    url: str, database_url: str, *args: str, timeout: float = 300, **settings: Any
) -> subprocess.CompletedProcess[str]:
    """Walk a listing to its end; its output is in ``.stdout`` / ``.stderr``."""
    return subprocess.run(
        list_command(url, database_url, *args, **settings),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment(),
        check=False,
    )


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INGEST_")}
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    env.update(extra)
    return env


def spawn(
    command: list[str], env: dict[str, str] | None = None, *, stderr: bool = True
) -> subprocess.Popen[str]:
    """Start ``command`` (a crawl) in its own process, to stop or kill it while it runs;
    its stderr is kept (``communicate()``) unless ``stderr`` is False."""
    return subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env=env or environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE if stderr else subprocess.DEVNULL,
        text=True,
    )


def crawl(
    api_url: str,
    database_url: str,
    *args: str,
    timeout: float = 300,
    env: dict[str, str] | None = None,
    **settings: Any,
) -> subprocess.CompletedProcess[str]:
    """Run a crawl to its end; its output is in ``.stdout`` / ``.stderr``."""
    return subprocess.run(
        crawl_command(api_url, database_url, *args, **settings),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or environment(),
        check=False,
    )


def scrapy_command(
    name: str, database_url: str, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``scrapy NAME -s DATABASE_URL=… ARGS`` (``ingest-status``, ``ingest-plan``) as users
    run it; its output is in ``.stdout`` / ``.stderr``."""
    return subprocess.run(
        [sys.executable, "-m", "scrapy", name, "-s", f"DATABASE_URL={database_url}", *args],
        cwd=REPO_ROOT,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _query(database_url: str, sql: str) -> list[tuple[Any, ...]]:
    if database_url.startswith("sqlite:///"):
        path = database_url[len("sqlite:///") :]
        with sqlite3.connect(path) as conn:
            return list(conn.execute(sql))
    with psycopg.connect(database_url) as conn:
        return [tuple(row) for row in conn.execute(sql)]  # type: ignore[arg-type]


def terminal_states(database_url: str) -> dict[str, str]:
    """id -> terminal state, from both tables; an id in both would raise."""
    states: dict[str, str] = {}
    rows = _query(
        database_url, "SELECT id, 'stored' FROM items UNION ALL SELECT id, state FROM failures"
    )
    for id_, state in rows:
        assert id_ not in states, f"id {id_} stands in both tables"
        states[id_] = state
    return states


def duplicate_rows(database_url: str) -> int:
    """Rows beyond one per id, over both tables (the primary keys should make it 0)."""
    (count,) = _query(
        database_url,
        "SELECT (SELECT COUNT(*) - COUNT(DISTINCT id) FROM items)"
        " + (SELECT COUNT(*) - COUNT(DISTINCT id) FROM failures)",
    )[0]
    return int(count)


def failures(database_url: str) -> dict[str, tuple[str, str | None, str | None]]:
    """id -> (state, reason, data) of the failures table."""
    rows = _query(database_url, "SELECT id, state, reason, data FROM failures")
    return {row[0]: (row[1], row[2], None if row[3] is None else str(row[3])) for row in rows}


def query(database_url: str, sql: str) -> list[tuple[Any, ...]]:
    return _query(database_url, sql)
