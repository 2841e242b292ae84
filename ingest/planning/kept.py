"""What the database says before a crawl or a plan: the job's ids per state, the quotas kept,
and whether an allowance an earlier crawl spent still holds the job."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ingest.storage import open_store
from ingest.storage.base import CONFIGURED, KeptQuota, StorageError, StorageUnavailable
from ingest.storage.report import Report
from ingest.storage.sql import SqlStore

if TYPE_CHECKING:
    from ingest.fetching.ids import IdSource
    from ingest.job import Job


def read_database(
    url: str, ids: IdSource | None, origin: str
) -> tuple[dict[str, int], list[KeptQuota]]:
    """The job's ids per state (none asked: none), and the quotas kept for its API; none of
    either when there is no database yet, or none of ours. Creates nothing; a database that
    cannot be reached raises :class:`StorageUnavailable`."""
    store = open_store(url)
    try:
        store.connect(create=False)
    except StorageUnavailable:
        raise
    except StorageError:
        return {}, []  # nothing is done yet
    try:
        assert isinstance(store, SqlStore)
        counts = Report(store).counts(ids) if ids is not None else {}
        return counts, store.kept_quotas(origin)
    finally:
        store.close()


def buckets(job: Job) -> list[str]:
    """The rate limiter's buckets of the job: its API's, or one per key."""
    if len(job.keys) > 1:
        return [f"{job.origin}#{key.fingerprint}" for key in job.keys]
    return [job.origin]


def spent_until(job: Job, kept: list[KeptQuota], now: float) -> tuple[str, float] | None:
    """The allowance of RATELIMIT_RATE a crawl spent, and when the next request may go,
    when every bucket of the job is still held by one; else None."""
    configured = {str(rate) for rate in job.pacing.rates}
    held: list[tuple[str, float]] = []
    for bucket in buckets(job):
        spent = [
            (q.name, q.reset_at)
            for q in kept
            if q.bucket == bucket and q.source == CONFIGURED and q.name in configured
            and q.reset_at is not None and q.reset_at > now
        ]  # fmt: skip
        if not spent:
            return None
        held.append(max(spent, key=lambda item: item[1]))
    return min(held, key=lambda item: item[1])
