"""A job's plan: the requests it needs and when they go, from the database and the job's settings.

What is done is read as ``ingest-status`` reads it (one SQL query over id ranges); the
rates are RATELIMIT_RATE's, per key, with RATELIMIT_SHARED_RATE over all keys; a quota
of a long period the API announced, or an allowance a crawl spent, is read from the
table ``quotas`` (kept by :mod:`ingest.extensions.quotas`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ingest.items import INVALID, NOT_FOUND, STORED
from ingest.planning.kept import buckets, spent_until
from ingest.planning.schedule import Schedule, schedule, span
from ingest.ratelimit.pacing.rates import Rate
from ingest.storage.base import SERVER, KeptQuota

if TYPE_CHECKING:
    from ingest.job import Job

DAY = 86_400.0


@dataclass(frozen=True)
class Plan:
    """What a job needs, and when it goes: ``schedule`` is None when RATELIMIT_RATE=auto
    knows no rate to time it by."""

    api: str
    ids: int
    done: int
    batch_size: int
    keys: int
    rates: tuple[Rate, ...]
    shared: tuple[Rate, ...]
    schedule: Schedule | None
    allowance_source: str = ""  # RATELIMIT_RATE, or the server's quota (with its name)
    refresh: bool = False  # every id fetched again
    notes: list[str] = field(default_factory=list)

    @property
    def todo(self) -> int:
        return self.ids - self.done

    @property
    def requests(self) -> int:
        return math.ceil(self.todo / self.batch_size)

    @property
    def days(self) -> int | None:
        """The days the job spans, the last one begun counting whole."""
        if self.schedule is None:
            return None
        return max(1, math.ceil((self.schedule.ends - self.schedule.starts) / DAY))


def done_count(counts: dict[str, int], *, refresh: bool) -> int:
    """Ids that need no request: stored and not_found (and invalid), none with refresh."""
    return 0 if refresh else sum(counts.get(state, 0) for state in (STORED, NOT_FOUND, INVALID))


def server_quota(job: Job, kept: list[KeptQuota]) -> KeptQuota | None:
    """The strictest quota of a long period the API announced, as last seen, for the job's
    first bucket (each key's alike)."""
    seen = [
        q
        for q in kept
        if q.bucket == buckets(job)[0] and q.source == SERVER and q.limit and q.period
    ]
    return min(seen, key=lambda q: (q.limit or 0) / (q.period or 1), default=None)


def plan(
    job: Job, ids: int, counts: dict[str, int], kept: list[KeptQuota], *, now: float,
    refresh: bool = False,
) -> Plan:  # fmt: skip
    """The plan of ``ids`` ids, ``counts`` of them in each state already, from ``now``."""
    pacing, keys = job.pacing, max(1, len(job.keys))
    done = done_count(counts, refresh=refresh)
    base = Plan(
        job.origin, ids, done, job.batch_size, keys, pacing.rates, pacing.shared, None,
        refresh=refresh,
    )  # fmt: skip
    if not pacing.rates:
        base.notes.append("RATELIMIT_RATE=auto: the pace is found as the crawl goes")
        return base
    per_key = math.ceil(base.requests / keys)
    rates, start, first, renews = list(pacing.rates), now, None, None
    spent = spent_until(job, kept, now)
    if spent is not None:
        start = spent[1]
        base.notes.append(f"the allowance of {spent[0]} was spent by a crawl until {when(start)}")
    told, announced = server_quota(job, kept), None
    if told is not None and told.limit and told.period:
        announced = Rate(told.limit, told.period)
        rates.append(announced)
        freed_at = told.reset_at if told.reset_at is not None else told.seen_at + told.period
        if freed_at > start and told.remaining is not None:
            first, renews = told.remaining, freed_at
        base.notes.append(
            f"the API said {told.remaining} of its {told.name} quota of {announced} s "
            f"remained, {when(told.seen_at)}"
        )
    timed = schedule(per_key, rates, start=start, first=first, renews=renews)
    source = "RATELIMIT_RATE"
    if told is not None and timed.allowance == announced:
        source = f"the API's {told.name} quota"
    if pacing.shared:
        ends = start + span(base.requests, pacing.shared)
        if ends > timed.ends:
            timed = Schedule(timed.requests, timed.starts, ends, timed.allowance, timed.allowances)
    return Plan(
        base.api, ids, done, base.batch_size, keys, base.rates, base.shared, timed,
        source if timed.allowance else "", refresh, base.notes,
    )  # fmt: skip


def when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat(timespec="seconds")


def as_json(p: Plan) -> dict[str, Any]:
    """The plan for ``--json``: times in ISO 8601 (UTC)."""
    timed = p.schedule
    found: dict[str, Any] = {
        "api": p.api, "ids": p.ids, "done": p.done, "refresh": p.refresh, "todo": p.todo,
        "batch_size": p.batch_size,
        "requests": p.requests, "keys": p.keys, "rates": [str(r) for r in p.rates],
        "shared_rates": [str(r) for r in p.shared], "notes": p.notes,
        "starts_at": None, "ends_at": None, "seconds": None, "days": p.days, "allowance": None,
    }  # fmt: skip
    if timed is None:
        return found
    found.update(starts_at=iso(timed.starts), ends_at=iso(timed.ends))
    found["seconds"] = round(timed.ends - timed.starts, 3)
    if timed.allowance is not None:
        found["allowance"] = {
            "rate": str(timed.allowance),
            "source": p.allowance_source,
            "periods": [
                {
                    "requests": a.requests,
                    "starts_at": iso(a.starts),
                    "ends_at": iso(a.ends),
                    "next_at": None if a.next_at is None else iso(a.next_at),
                }
                for a in timed.allowances
            ],
        }
    return found
