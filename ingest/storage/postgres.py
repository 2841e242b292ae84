"""The PostgreSQL store: one synchronous psycopg connection, upserts sent in a pipeline."""

from __future__ import annotations

import sys
from typing import Any
from urllib.parse import unquote

import psycopg
from psycopg.conninfo import conninfo_to_dict

from ingest.config.masking import mask_url
from ingest.storage.base import (
    Plan,
    StorageError,
    StorageUnavailable,
    failure_row,
    listed_row,
)
from ingest.storage.sql import QUOTAS_TABLE, SqlStore

CONNECT_TIMEOUT = 5

# Any constant works; it only has to be the same for every process creating the schema.
SCHEMA_LOCK = 7_468_626_570

# lz4 compresses payloads several times faster than the default pglz: twice the write rate.
LZ4_SUPPORTED = """
SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'
"""

SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS items (
    id text PRIMARY KEY,
    data jsonb{compression} NOT NULL,
    url text,
    status integer,
    fetched_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS failures (
    id text PRIMARY KEY,
    state text NOT NULL CHECK (state IN ('not_found', 'invalid', 'failed')),
    reason text,
    data jsonb{compression},
    url text,
    status integer,
    fetched_at timestamptz NOT NULL,
    attempts integer NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS failures_state ON failures (state);
ALTER TABLE items ADD COLUMN IF NOT EXISTS etag text;
ALTER TABLE items ADD COLUMN IF NOT EXISTS last_modified text;
ALTER TABLE failures ADD COLUMN IF NOT EXISTS schema_digest text;
CREATE TABLE IF NOT EXISTS listings (
    listing text PRIMARY KEY,
    position text,
    finished boolean NOT NULL DEFAULT false,
    high_water text,
    updated_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS listed (
    listing text NOT NULL,
    id text NOT NULL,
    place bigint NOT NULL,
    listed_at timestamptz NOT NULL,
    stale_before double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (listing, id)
);
CREATE INDEX IF NOT EXISTS listed_place ON listed (listing, place);
"""
    + QUOTAS_TABLE
)

# Sent with executemany() inside one pipeline per batch (one round trip): measured faster than
# COPY into a temporary table then INSERT ... SELECT ... ON CONFLICT, and than multi-row VALUES
# or unnest() of arrays (1-5 KB payloads: about 20,000 vs 12,000, 17,000 and 8,500 items/s).
UPSERT_ITEM = """
INSERT INTO items (id, data, url, status, fetched_at, etag, last_modified)
VALUES (%s, %s::jsonb, %s, %s, to_timestamp(%s), %s, %s)
ON CONFLICT (id) DO UPDATE SET
    data = excluded.data, url = excluded.url, status = excluded.status,
    fetched_at = excluded.fetched_at, etag = excluded.etag,
    last_modified = excluded.last_modified
"""

UPSERT_LISTING = """
INSERT INTO listings (listing, position, finished, high_water, updated_at)
VALUES (%s, %s, %s, %s, to_timestamp(%s))
ON CONFLICT (listing) DO UPDATE SET
    position = excluded.position, finished = excluded.finished,
    high_water = excluded.high_water, updated_at = excluded.updated_at
"""

# An id listed again goes to the end of the order, and keeps the later of the two times
# its outcome must be from. (One writer at a time: the ledger's thread.)
UPSERT_LISTED = """
INSERT INTO listed (listing, id, place, listed_at, stale_before)
VALUES (%(listing)s, %(id)s,
    (SELECT coalesce(max(place), 0) + 1 FROM listed WHERE listing = %(listing)s),
    to_timestamp(%(listed_at)s), %(stale_before)s)
ON CONFLICT (listing, id) DO UPDATE SET
    place = excluded.place, listed_at = excluded.listed_at,
    stale_before = greatest(listed.stale_before, excluded.stale_before)
"""

# Only where the id has no items row: a transient failure never replaces stored data.
UPSERT_FAILURE = """
INSERT INTO failures (id, state, reason, data, url, status, fetched_at, attempts, schema_digest)
SELECT %(id)s, %(state)s, %(reason)s, %(data)s::jsonb, %(url)s, %(status)s::integer,
    to_timestamp(%(fetched_at)s), %(attempts)s, %(schema_digest)s
WHERE NOT EXISTS (SELECT 1 FROM items WHERE id = %(id)s)
ON CONFLICT (id) DO UPDATE SET
    state = excluded.state, reason = excluded.reason, data = excluded.data,
    url = excluded.url, status = excluded.status, fetched_at = excluded.fetched_at,
    attempts = failures.attempts + excluded.attempts, schema_digest = excluded.schema_digest
"""

STATES_OF = """
SELECT id, 'stored', extract(epoch FROM fetched_at)::float8 FROM items WHERE id = ANY(%(ids)s)
UNION ALL
SELECT id, state, extract(epoch FROM fetched_at)::float8 FROM failures WHERE id = ANY(%(ids)s)
"""

VALIDATORS_OF = """
SELECT id, etag, last_modified FROM items
WHERE id = ANY(%(ids)s) AND (etag IS NOT NULL OR last_modified IS NOT NULL)
"""

LISTING_OF = """
SELECT position, finished, high_water, extract(epoch FROM updated_at)::float8
FROM listings WHERE listing = %(listing)s
"""

LISTED_AFTER = """
SELECT place, id, stale_before FROM listed
WHERE listing = %(listing)s AND place > %(after)s ORDER BY place LIMIT %(limit)s
"""

# Invalid for a schema (not for U+0000, which no schema changes), another than this one.
# The payload as text: jsonb's own (normalised) spelling of what was received.
KEPT_INVALID = """
SELECT id, data::text, url, status, extract(epoch FROM fetched_at)::float8 FROM failures
WHERE state = 'invalid' AND reason LIKE 'schema:%%' AND id > %(after)s
    AND (schema_digest IS NULL OR schema_digest <> %(schema)s)
ORDER BY id LIMIT %(limit)s
"""

CHECKED = """
UPDATE failures SET reason = %(reason)s, schema_digest = %(schema)s
WHERE id = %(id)s AND state = 'invalid'
"""

UPSERT_QUOTA = """
INSERT INTO quotas (bucket, name, source, quota_limit, period, remaining, reset_at, seen_at)
VALUES (%(bucket)s, %(name)s, %(source)s, %(limit)s, %(period)s, %(remaining)s, %(reset_at)s,
    %(seen_at)s)
ON CONFLICT (bucket, name) DO UPDATE SET
    source = excluded.source, quota_limit = excluded.quota_limit, period = excluded.period,
    remaining = excluded.remaining, reset_at = excluded.reset_at, seen_at = excluded.seen_at
"""

QUOTAS_OF = """
SELECT bucket, name, source, quota_limit, period, remaining, reset_at, seen_at FROM quotas
WHERE bucket = %(api)s OR bucket LIKE %(keyed)s ORDER BY bucket, name
"""

HAS_QUOTAS = "SELECT 1 WHERE to_regclass('quotas') IS NOT NULL"

TABLES = "SELECT to_regclass('items') IS NOT NULL AND to_regclass('failures') IS NOT NULL"


class PostgresStore(SqlStore):
    """Items and failures in a PostgreSQL database given by a postgresql:// URL."""

    STATEMENTS = sys.modules[__name__]  # its lookups, above
    DRIVER = psycopg
    # An id too long for the primary key's index: an OperationalError, like those of a
    # lost connection, but about the value.
    MORE_REFUSALS = (psycopg.errors.ProgramLimitExceeded,)

    def __init__(self, url: str) -> None:
        self.url = mask_url(url)
        self._secrets = _secrets_of(url)
        try:
            params = conninfo_to_dict(url)
        except psycopg.Error as exc:
            raise ValueError(
                f"DATABASE_URL is not a valid PostgreSQL URL: {self.url!r} ({self._describe(exc)})"
            ) from None
        if params.get("password"):
            self._secrets.append(str(params["password"]))
        self._conninfo = url
        # No statement prepared on the server: a prepared statement's generic plan, made
        # while the table was nearly empty (the seeding looks ids up from a job's start),
        # read the whole table for every lookup of ids once it held millions of rows.
        # Planned each time, a lookup reads only its rows. (PgBouncer in transaction mode
        # wants no prepared statements either.)
        self._options: dict[str, Any] = {"autocommit": True, "prepare_threshold": None}
        if "connect_timeout" not in params:
            self._options["connect_timeout"] = CONNECT_TIMEOUT
        self._conn: psycopg.Connection[Any] | None = None

    def connect(self, *, create: bool = True) -> None:
        """Connect, creating the tables unless ``create`` is False: then they must exist."""
        if self._conn is not None and not self._conn.closed:
            return
        self.close()
        try:
            conn = psycopg.connect(self._conninfo, **self._options)
        except psycopg.Error as exc:
            raise self._error("cannot connect to", exc) from exc
        if not create:
            try:
                (found,) = conn.execute(TABLES).fetchone() or (False,)
            except psycopg.Error as exc:
                conn.close()
                raise self._error("cannot read", exc) from exc
            if not found:
                conn.close()
                raise StorageError(f"DATABASE_URL {self.url} holds no ingest tables")
            self._conn = conn
            return
        try:
            with conn.transaction():
                # Workers starting together would race on CREATE TABLE IF NOT EXISTS.
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                lz4 = conn.execute(LZ4_SUPPORTED).fetchone()
                compression = " COMPRESSION lz4" if lz4 is not None and lz4[0] else ""
                conn.execute(SCHEMA.format(compression=compression))
        except psycopg.Error as exc:
            conn.close()
            raise self._error("cannot create the tables in", exc) from exc
        self._conn = conn

    def _apply(self, conn: psycopg.Connection[Any], plan: Plan) -> None:
        with conn.pipeline(), conn.transaction(), conn.cursor() as cur:
            if plan.clear_failures:
                cur.execute("DELETE FROM failures WHERE id = ANY(%s)", (plan.clear_failures,))
            if plan.clear_items:
                cur.execute("DELETE FROM items WHERE id = ANY(%s)", (plan.clear_items,))
            if plan.stored:
                cur.executemany(
                    UPSERT_ITEM,
                    [
                        (o.id, o.data, o.url, o.status, o.fetched_at, o.etag, o.last_modified)
                        for o in plan.stored
                    ],
                )
            if plan.failures:
                cur.executemany(
                    UPSERT_FAILURE,
                    [failure_row(f) for f in plan.failures],
                )
            if plan.unchanged:
                cur.executemany(
                    "UPDATE items SET fetched_at = to_timestamp(%s) WHERE id = %s",
                    [(o.fetched_at, o.id) for o in plan.unchanged],
                )
            if plan.marks:
                cur.executemany(
                    UPSERT_LISTING,
                    [(m.listing, m.position, m.finished, m.high_water, m.at) for m in plan.marks],
                )
            if plan.listed:
                cur.executemany(UPSERT_LISTED, [listed_row(*row) for row in plan.listed])

    def _connection(self) -> psycopg.Connection[Any]:
        conn: psycopg.Connection[Any] = super()._connection()
        if conn.closed:
            raise StorageUnavailable(
                f"DATABASE_URL {self.url} lost its connection: call connect() again"
            )
        return conn

    def _describe(self, exc: Exception) -> str:
        """The error on one line, without the password should the server have echoed it."""
        text = " ".join(str(exc).split())
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def _secrets_of(url: str) -> list[str]:
    """The password in the URL, raw and percent-decoded, to scrub from error messages."""
    userinfo, at, _ = url.partition("://")[2].rpartition("@")
    password = userinfo.split(":", 1)[1] if at and ":" in userinfo else ""
    return [s for s in dict.fromkeys((password, unquote(password))) if s]
