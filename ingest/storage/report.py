"""What ingest-status reads: a job's counts, pending ids and failures, by SQL over id ranges."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from ingest.fetching.ids import IdRanges, IdSource, chunks
from ingest.items import STATES
from ingest.storage.sql import SqlStore

# The ids a job names as ranges are read as integers, in SQL: an id counts only when its
# text is the integer's own ("7", not "007" or " 7"), as the spider would have sent it.
SQLITE = {
    "ranges": "SELECT json_extract(value, '$[0]') AS a, json_extract(value, '$[1]') AS b"
    " FROM json_each(:ranges)",
    "number": "CASE WHEN CAST(CAST(id AS INTEGER) AS TEXT) = id THEN CAST(id AS INTEGER) END",
    "param": ":{}",
}
POSTGRES = {
    "ranges": "SELECT (r->>0)::bigint AS a, (r->>1)::bigint AS b"
    " FROM jsonb_array_elements(%(ranges)s::jsonb) AS r",
    "number": "CASE WHEN id ~ '^(0|[1-9][0-9]{0,17})$' THEN id::bigint END",
    "param": "%({})s",
}

DONE = """
WITH ranges AS ({ranges}),
done AS (
    SELECT {number} AS n, 'stored' AS state, NULL AS reason FROM items
    UNION ALL
    SELECT {number}, state, reason FROM failures{where}
)
"""
# Constant text, composed here: no value is ever formatted into SQL (they are parameters).
COUNTS = DONE + "SELECT state, count(*) FROM done JOIN ranges ON n BETWEEN a AND b GROUP BY state"  # noqa: S608
# A sort by SQL, so that the gaps (the pending ids) come out of one pass in Python.
DONE_IN_ORDER = DONE + "SELECT n FROM done JOIN ranges ON n BETWEEN a AND b ORDER BY n"  # noqa: S608
FAILURES_IN_RANGES = (
    DONE  # noqa: S608
    + "SELECT n, state, reason FROM done JOIN ranges ON n BETWEEN a AND b"
    " WHERE state IN ('failed', 'invalid') ORDER BY n"
)
FAILURES = "SELECT id, state, reason FROM failures WHERE state IN ('failed', 'invalid') ORDER BY id"
FILE_CHUNK = 5000  # ids of a file looked up at once


class Report:
    """Reads for ``ingest-status`` over a connected SQL store; creates and changes nothing."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self.dialect = POSTGRES if store.DRIVER.__name__ == "psycopg" else SQLITE

    def _sql(self, template: str, *, failures_only: bool = False) -> str:
        where = " WHERE state IN ('failed', 'invalid')" if failures_only else ""
        return template.format(
            ranges=self.dialect["ranges"], number=self.dialect["number"], where=where
        )

    def _ranges(self, ids: IdRanges) -> dict[str, Any]:
        return {"ranges": json.dumps([list(r) for r in ids.ranges])}

    def counts(self, ids: IdSource) -> dict[str, int]:
        """How many of the job's ids stand in each state."""
        counts = dict.fromkeys(STATES, 0)
        if isinstance(ids, IdRanges):
            for state, count in self.store.stream(self._sql(COUNTS), self._ranges(ids)):
                counts[state] += count
            return counts
        for chunk in chunks(ids, FILE_CHUNK):
            for state, _ in self.store.states(chunk).values():
                counts[state] += 1
        return counts

    def pending(self, ids: IdSource) -> Iterator[tuple[int, int] | str]:
        """The job's ids without an outcome, in order: inclusive ranges ``(first, last)``
        for a job given as ranges (never a million strings), else each id."""
        if isinstance(ids, IdRanges):
            yield from gaps(ids, self.store.stream(self._sql(DONE_IN_ORDER), self._ranges(ids)))
            return
        for chunk in chunks(ids, FILE_CHUNK):
            states = self.store.states(chunk)
            yield from (id_ for id_ in chunk if id_ not in states)

    def failures(self, ids: IdSource | None) -> Iterator[tuple[str, str, str | None]]:
        """(id, state, reason) of the failed and invalid ids: of the job, or all."""
        if ids is None:
            yield from self.store.stream(FAILURES, {})
        elif isinstance(ids, IdRanges):
            sql = self._sql(FAILURES_IN_RANGES, failures_only=True)
            for n, state, reason in self.store.stream(sql, self._ranges(ids)):
                yield str(n), state, reason
        else:
            # Failures are few next to the ids of a file: read once, then in the file's order.
            failed = {
                id_: (state, reason) for id_, state, reason in self.store.stream(FAILURES, {})
            }
            for id_ in ids:
                if id_ in failed:
                    yield id_, *failed[id_]


def gaps(ids: IdRanges, done: Iterator[tuple[Any, ...]]) -> Iterator[tuple[int, int]]:
    """The ranges of ``ids`` that ``done`` (integers in order, each in ``ids``) leaves out."""
    rows = (row[0] for row in done)
    next_done = next(rows, None)
    for first, last in ids.ranges:
        start = first
        while next_done is not None and next_done <= last:
            if next_done > start:
                yield start, next_done - 1
            start = max(start, next_done + 1)
            next_done = next(rows, None)
        if start <= last:
            yield start, last
