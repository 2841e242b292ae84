"""The SQLite store: one file in WAL mode, used from one thread."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from collections.abc import Sequence
from urllib.parse import quote

from ingest.storage.base import (
    Plan,
    StorageError,
    StorageUnavailable,
    failure_row,
    listed_row,
)
from ingest.storage.sql import QUOTAS_TABLE, SqlStore

# "JSON TEXT": declared JSON, with text affinity so that a payload such as '42' stays text.
SCHEMA = (
    """
BEGIN;
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY,
    data JSON TEXT NOT NULL CHECK (json_valid(data)),
    url TEXT,
    status INTEGER,
    fetched_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS failures (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('not_found', 'invalid', 'failed')),
    reason TEXT,
    data JSON TEXT CHECK (data IS NULL OR json_valid(data)),
    url TEXT,
    status INTEGER,
    fetched_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS failures_state ON failures (state);
CREATE TABLE IF NOT EXISTS listings (
    listing TEXT PRIMARY KEY,
    position TEXT,
    finished INTEGER NOT NULL DEFAULT 0,
    high_water TEXT,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS listed (
    listing TEXT NOT NULL,
    id TEXT NOT NULL,
    place INTEGER NOT NULL,
    listed_at REAL NOT NULL,
    stale_before REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (listing, id)
);
CREATE INDEX IF NOT EXISTS listed_place ON listed (listing, place);
"""
    + QUOTAS_TABLE
    + """
COMMIT;
"""
)
# Columns added since the first release: a database made before gets them when opened.
ADDED_COLUMNS = {
    "items": (("etag", "TEXT"), ("last_modified", "TEXT")),
    "failures": (("schema_digest", "TEXT"),),
}

UPSERT_ITEM = """
INSERT INTO items (id, data, url, status, fetched_at, etag, last_modified)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
    data = excluded.data, url = excluded.url, status = excluded.status,
    fetched_at = excluded.fetched_at, etag = excluded.etag,
    last_modified = excluded.last_modified
"""

UPSERT_LISTING = """
INSERT INTO listings (listing, position, finished, high_water, updated_at) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (listing) DO UPDATE SET
    position = excluded.position, finished = excluded.finished,
    high_water = excluded.high_water, updated_at = excluded.updated_at
"""

# An id listed again goes to the end of the order, and keeps the later of the two times
# its outcome must be from.
UPSERT_LISTED = """
INSERT INTO listed (listing, id, place, listed_at, stale_before)
VALUES (:listing, :id, (SELECT coalesce(max(place), 0) + 1 FROM listed WHERE listing = :listing),
    :listed_at, :stale_before)
ON CONFLICT (listing, id) DO UPDATE SET
    place = excluded.place, listed_at = excluded.listed_at,
    stale_before = max(listed.stale_before, excluded.stale_before)
"""

# Only where the id has no items row: a transient failure never replaces stored data.
UPSERT_FAILURE = """
INSERT INTO failures (id, state, reason, data, url, status, fetched_at, attempts, schema_digest)
SELECT :id, :state, :reason, :data, :url, :status, :fetched_at, :attempts, :schema_digest
WHERE NOT EXISTS (SELECT 1 FROM items WHERE id = :id)
ON CONFLICT (id) DO UPDATE SET
    state = excluded.state, reason = excluded.reason, data = excluded.data,
    url = excluded.url, status = excluded.status, fetched_at = excluded.fetched_at,
    attempts = failures.attempts + excluded.attempts, schema_digest = excluded.schema_digest
"""

STATES_OF = """
SELECT id, 'stored', fetched_at FROM items WHERE id IN (SELECT value FROM json_each(:ids))
UNION ALL
SELECT id, state, fetched_at FROM failures WHERE id IN (SELECT value FROM json_each(:ids))
"""

VALIDATORS_OF = """
SELECT id, etag, last_modified FROM items
WHERE id IN (SELECT value FROM json_each(:ids)) AND (etag IS NOT NULL OR last_modified IS NOT NULL)
"""

LISTING_OF = """
SELECT position, finished, high_water, updated_at FROM listings WHERE listing = :listing
"""

LISTED_AFTER = """
SELECT place, id, stale_before FROM listed
WHERE listing = :listing AND place > :after ORDER BY place LIMIT :limit
"""

# Invalid for a schema (not for U+0000, which no schema changes), another than this one.
KEPT_INVALID = """
SELECT id, data, url, status, fetched_at FROM failures
WHERE state = 'invalid' AND reason LIKE 'schema:%' AND id > :after
    AND (schema_digest IS NULL OR schema_digest <> :schema)
ORDER BY id LIMIT :limit
"""

CHECKED = """
UPDATE failures SET reason = :reason, schema_digest = :schema WHERE id = :id AND state = 'invalid'
"""

UPSERT_QUOTA = """
INSERT INTO quotas (bucket, name, source, quota_limit, period, remaining, reset_at, seen_at)
VALUES (:bucket, :name, :source, :limit, :period, :remaining, :reset_at, :seen_at)
ON CONFLICT (bucket, name) DO UPDATE SET
    source = excluded.source, quota_limit = excluded.quota_limit, period = excluded.period,
    remaining = excluded.remaining, reset_at = excluded.reset_at, seen_at = excluded.seen_at
"""

QUOTAS_OF = """
SELECT bucket, name, source, quota_limit, period, remaining, reset_at, seen_at FROM quotas
WHERE bucket = :api OR bucket LIKE :keyed ESCAPE '\\' ORDER BY bucket, name
"""

HAS_QUOTAS = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'quotas'"

TABLES = "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ('items', 'failures')"


class SQLiteStore(SqlStore):
    """Items and failures in one SQLite file; `path` is absolute, `url` already masked."""

    STATEMENTS = sys.modules[__name__]  # its lookups, above
    DRIVER = sqlite3
    # Binding a value of a type SQLite cannot store is an InterfaceError.
    MORE_REFUSALS = (sqlite3.InterfaceError,)

    def __init__(self, path: str, *, url: str, busy_timeout: float = 30.0) -> None:
        self.path = path
        self.url = url
        self.busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None

    def connect(self, *, create: bool = True) -> None:
        """Open the file, creating it and the tables unless ``create`` is False: then
        the file is opened read-only, and must exist and hold the tables."""
        if self._conn is not None:
            return
        directory = os.path.dirname(self.path)
        if not os.path.isdir(directory):
            # Unavailable, not wrong: the volume may be mounted again.
            problem = "is not a directory" if os.path.exists(directory) else "does not exist"
            raise StorageUnavailable(
                f"cannot open DATABASE_URL {self.url}: directory {directory} {problem}"
            )
        if not create and not os.path.isfile(self.path):
            raise StorageError(
                f"no database at DATABASE_URL {self.url}: {self.path} does not exist"
            )
        target = self.path if create else f"file:{quote(self.path)}?mode=ro"
        try:
            conn = sqlite3.connect(
                target,
                timeout=self.busy_timeout,
                isolation_level=None,
                check_same_thread=False,
                uri=not create,
            )
        except sqlite3.Error as exc:
            raise self._error("cannot open", exc) from exc
        try:
            if create:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
                conn.executescript(SCHEMA)
                _add_columns(conn)
            else:
                found = {row[0] for row in conn.execute(TABLES)}
                if found != {"items", "failures"}:
                    raise StorageError(f"DATABASE_URL {self.url} holds no ingest tables")
        except (sqlite3.Error, StorageError) as exc:
            conn.close()
            if isinstance(exc, StorageError):
                raise
            raise self._error("cannot open", exc) from exc
        self._conn = conn

    def _apply(self, conn: sqlite3.Connection, plan: Plan) -> None:
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "DELETE FROM failures WHERE id = ?", [(i,) for i in plan.clear_failures]
            )
            conn.executemany("DELETE FROM items WHERE id = ?", [(i,) for i in plan.clear_items])
            conn.executemany(
                UPSERT_ITEM,
                [
                    (o.id, o.data, o.url, o.status, o.fetched_at, o.etag, o.last_modified)
                    for o in plan.stored
                ],
            )
            conn.executemany(
                UPSERT_FAILURE,
                [failure_row(f) for f in plan.failures],
            )
            conn.executemany(
                "UPDATE items SET fetched_at = ? WHERE id = ?",
                [(o.fetched_at, o.id) for o in plan.unchanged],
            )
            conn.executemany(
                UPSERT_LISTING,
                [(m.listing, m.position, int(m.finished), m.high_water, m.at) for m in plan.marks],
            )
            conn.executemany(UPSERT_LISTED, [listed_row(*row) for row in plan.listed])
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                try:
                    conn.rollback()
                except sqlite3.Error as rollback_exc:
                    exc.add_note(f"rollback failed too: {rollback_exc}")
            raise

    def _ids_parameter(self, ids: Sequence[str]) -> object:
        return json.dumps(list(ids))  # one parameter, read by json_each()


def _add_columns(conn: sqlite3.Connection) -> None:
    """Add what a database made by an earlier release lacks (one process at a time)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for table, columns in ADDED_COLUMNS.items():
            present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
            for name, kind in columns:
                if name not in present:
                    conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
        conn.execute("COMMIT")
    except BaseException:
        conn.rollback()
        raise
