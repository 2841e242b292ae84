"""What the SQL stores share: lookups by id, counts, closing, and their drivers' errors sorted."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any

from ingest.items import STATES, ListingMark
from ingest.storage.base import (
    Kept,
    KeptQuota,
    Listed,
    Plan,
    Record,
    StorageError,
    StorageRefused,
    StorageUnavailable,
    plan_write,
)

# The table of long quotas, in types both SQLite (by affinity) and PostgreSQL take as theirs.
QUOTAS_TABLE = """
CREATE TABLE IF NOT EXISTS quotas (
    bucket text NOT NULL,
    name text NOT NULL,
    source text NOT NULL CHECK (source IN ('server', 'configured')),
    quota_limit bigint,
    period double precision,
    remaining bigint,
    reset_at double precision,
    seen_at double precision NOT NULL,
    PRIMARY KEY (bucket, name)
);
"""

COUNTS = """
SELECT 'stored', count(*) FROM items
UNION ALL
SELECT state, count(*) FROM failures GROUP BY state
"""


class SqlStore:
    """A store over one DB-API connection. A subclass names its driver module, the
    errors besides DB-API's that mean the outcomes themselves were refused, and its
    lookup queries (``STATES_OF`` and ``VALIDATORS_OF``, with an ``ids`` parameter;
    ``LISTING_OF``, with a ``listing`` one; ``LISTED_AFTER``, with ``listing``, ``after``
    and ``limit``; ``UPSERT_QUOTA`` and ``QUOTAS_OF``, for the table ``quotas``); it
    connects and writes."""

    url: str
    # The module naming the lookups in its dialect, as STATES_OF, VALIDATORS_OF, LISTING_OF,
    # LISTED_AFTER, KEPT_INVALID, CHECKED, UPSERT_QUOTA and QUOTAS_OF.
    STATEMENTS: ModuleType
    DRIVER: ModuleType
    MORE_REFUSALS: tuple[type[Exception], ...] = ()
    _conn: Any = None

    @property
    def refusals(self) -> tuple[type[Exception], ...]:
        """What the driver raises about the outcomes themselves (a value a column
        refuses, a broken constraint, a statement the values make invalid), as opposed
        to about the database being reachable: DB-API names these alike in every driver."""
        d = self.DRIVER
        return (
            d.DataError, d.IntegrityError, d.ProgrammingError, d.NotSupportedError,
            *self.MORE_REFUSALS,
        )  # fmt: skip

    def write(self, outcomes: Sequence[Record]) -> None:
        """Apply the outcomes in one transaction, as `plan_write` folds them."""
        plan = plan_write(outcomes)
        conn = self._connection()
        try:
            self._apply(conn, plan)
        except self.DRIVER.Error as exc:
            raise self._error("cannot write to", exc) from exc

    def _apply(self, conn: Any, plan: Plan) -> None:
        raise NotImplementedError

    def states(self, ids: Sequence[str]) -> dict[str, tuple[str, float]]:
        rows = self._read(self.STATEMENTS.STATES_OF, {"ids": self._ids_parameter(ids)})
        return {id_: (state, fetched_at) for id_, state, fetched_at in rows}

    def validators(self, ids: Sequence[str]) -> dict[str, tuple[str | None, str | None]]:
        rows = self._read(self.STATEMENTS.VALIDATORS_OF, {"ids": self._ids_parameter(ids)})
        return {id_: (etag, modified) for id_, etag, modified in rows}

    def listing(self, key: str) -> ListingMark | None:
        rows = self._read(self.STATEMENTS.LISTING_OF, {"listing": key})
        if not rows:
            return None
        position, finished, high_water, at = rows[0]
        return ListingMark(key, position, bool(finished), _json_text(high_water), float(at))

    def listed(self, key: str, after: int, limit: int) -> list[Listed]:
        rows = self._read(
            self.STATEMENTS.LISTED_AFTER, {"listing": key, "after": after, "limit": limit}
        )
        return [Listed(int(place), id_, float(stale)) for place, id_, stale in rows]

    def counts(self) -> dict[str, int]:
        return dict.fromkeys(STATES, 0) | dict(self._read(COUNTS, {}))

    def keep_quota(self, quota: KeptQuota) -> None:
        params = {name: getattr(quota, name) for name in KeptQuota.__slots__}
        try:
            self._connection().execute(self.STATEMENTS.UPSERT_QUOTA, params)
        except self.DRIVER.Error as exc:
            raise self._error("cannot write to", exc) from exc

    def kept_quotas(self, api: str) -> list[KeptQuota]:
        if not self._read(self.STATEMENTS.HAS_QUOTAS, {}):
            return []  # a database made by an earlier version, opened without creating
        prefix = api.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "#%"
        rows = self._read(self.STATEMENTS.QUOTAS_OF, {"api": api, "keyed": prefix})
        return [KeptQuota(*row) for row in rows]

    def kept_invalid(self, schema: str, after: str, limit: int) -> list[Kept]:
        rows = self._read(
            self.STATEMENTS.KEPT_INVALID, {"schema": schema, "after": after, "limit": limit}
        )
        return [
            Kept(id_, _json_text(data) or "null", url, status, float(fetched_at))
            for id_, data, url, status, fetched_at in rows
        ]

    def checked(self, schema: str, reasons: Sequence[tuple[str, str]]) -> None:
        params = [{"id": id_, "reason": reason, "schema": schema} for id_, reason in reasons]
        try:
            self._connection().cursor().executemany(self.STATEMENTS.CHECKED, params)
        except self.DRIVER.Error as exc:
            raise self._error("cannot write to", exc) from exc

    def stream(self, query: str, params: dict[str, Any]) -> Iterator[tuple[Any, ...]]:
        """The rows of a read, one at a time: a big answer is never held whole."""
        try:
            cursor = self._connection().cursor()
            # psycopg streams with stream(); sqlite3's cursor yields rows as it steps.
            rows = (
                cursor.stream(query, params)
                if hasattr(cursor, "stream")
                else cursor.execute(query, params)
            )
            yield from rows
        except self.DRIVER.Error as exc:
            raise self._error("cannot read", exc) from exc

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _ids_parameter(self, ids: Sequence[str]) -> object:
        return list(ids)

    def _connection(self) -> Any:
        if self._conn is None:
            raise StorageUnavailable(
                f"DATABASE_URL {self.url} is not connected: call connect() first"
            )
        return self._conn

    def _read(self, query: str, params: dict[str, Any]) -> list[Any]:
        try:
            return list(self._connection().execute(query, params).fetchall())
        except self.DRIVER.Error as exc:
            raise self._error("cannot read", exc) from exc

    def _error(self, doing: str, exc: Exception) -> StorageError:
        """The driver's error, sorted: refused for what the outcomes hold, else unavailable."""
        kind = StorageRefused if isinstance(exc, self.refusals) else StorageUnavailable
        return kind(f"{doing} DATABASE_URL {self.url}: {self._describe(exc)}")

    def _describe(self, exc: Exception) -> str:
        return str(exc)


def _json_text(value: object) -> str | None:
    """A JSON column as JSON text, whether the driver gave text or the decoded value."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)
