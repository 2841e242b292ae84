"""The quota headers of real providers, followed: one crawl per dialect of the mock API.

    python -m tests.benchmarks.dialects [--ids 600] [--dialects github,shopify,…]

For each dialect, a fresh mock API (``python -m mockapi --dialect NAME``) enforces a limit
that only its headers and refusals describe, and ``scrapy crawl api`` fetches ``--ids`` ids
with RATELIMIT_RATE twice that limit (so that only what the server says keeps it under).
Printed per dialect, from the mock's record: the refusals for the rate (429s; Salesforce's
403s), the requests, the accepted answers a second from the first to the last against the
limit's rate ("efficiency": a fixed window lets a client above 1 when its first and last
windows are partly used; a sliding window or a bucket does not, beyond a burst), and the
ids lost (without a stored row). ``refusals allowed`` is 0 where the headers say how much
is left and when it frees, 1 where only a refusal says when.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from tests.support.crawl import crawl, terminal_states
from tests.support.mockapi import MockAPI, span, statuses

DEFAULT_IDS = 600
TIMEOUT = 600.0


@dataclass(frozen=True)
class Case:
    """One dialect: the mock's arguments, the limit they enforce (count per seconds) and
    whether only a refusal says when it frees."""

    mock: tuple[str, ...]
    count: int
    seconds: float
    refusals_allowed: int = 0
    status: int = 429  # the status of a refusal for the rate

    @property
    def per_second(self) -> float:
        return self.count / self.seconds

    @property
    def configured(self) -> str:
        """RATELIMIT_RATE at twice the limit."""
        seconds = int(self.seconds) if float(self.seconds).is_integer() else self.seconds
        return f"{2 * self.count}/{seconds}"


CASES: dict[str, Case] = {
    # x-ratelimit-* with an epoch reset: 60 a fixed window of 3 s.
    "github": Case(("--limit", "60/3"), 60, 3),
    # A leaky bucket of 400 draining 20 a second, as Shopify Plus.
    "shopify": Case(("--algorithm", "token", "--burst", "400", "--limit", "20/1"), 20, 1),
    # The route bucket's Reset-After, to the millisecond.
    "discord": Case(("--limit", "20/1"), 20, 1),
    # Requests and tokens, resets as Go durations, a sliding window.
    "openai": Case(("--limit", "20/1,100000/60", "--algorithm", "sliding"), 20, 1),
    # A count left, no limit nor reset: the 429's retry-after-ms says when.
    "azure": Case(("--limit", "20/1", "--algorithm", "sliding"), 20, 1, refusals_allowed=1),
    # A float remaining, the period's reset in seconds.
    "reddit": Case(("--limit", "60/3"), 60, 3),
    # The interval's limit and length, a day's count, rolling.
    "hubspot": Case(("--limit", "60/3,250000/86400", "--algorithm", "sliding"), 60, 3),
    # A day's allowance in the header; a per-second limit only its 403 says.
    "salesforce": Case(
        ("--limit", "20/1,15000/86400", "--algorithm", "sliding"), 20, 1, 1, status=403
    ),
    # Limit and remaining, no reset: the 429's Retry-After says when.
    "atlassian": Case(("--limit", "20/1", "--algorithm", "sliding"), 20, 1, refusals_allowed=1),
    # The account's limit and an endpoint quota, the endpoint's binding.
    "zendesk": Case(("--limit", "100/3,60/3"), 60, 3),
}


@dataclass(frozen=True)
class Measured:
    """One dialect's crawl as the mock saw it."""

    dialect: str
    case: Case
    requests: int
    refusals: int
    accepted: int
    efficiency: float
    lost: int
    exit: int
    wall: float

    def row(self) -> str:
        case = self.case
        return (
            f"| {self.dialect} | {' '.join(case.mock)} | {case.configured} | {self.requests} "
            f"| {self.refusals} (≤ {case.refusals_allowed}) | {self.efficiency:.3f} "
            f"| {self.lost} | {self.exit} | {self.wall:.1f} |"
        )


HEADER = (
    "| dialect | mock | RATELIMIT_RATE | requests | refusals (allowed) | efficiency "
    "| ids lost | exit | wall s |\n|---|---|---|---:|---:|---:|---:|---:|---:|"
)


def efficiency(record: list[dict[str, Any]], case: Case) -> float:
    """Accepted answers a second, first to last, over the limit's rate."""
    accepted = [entry for entry in record if entry["status"] == 200]
    seconds = span(accepted)
    if len(accepted) < 2 or seconds <= 0:
        return float("nan")
    return (len(accepted) - 1) / seconds / case.per_second


def measure(dialect: str, ids: int, case: Case | None = None) -> Measured:
    """``scrapy crawl api`` for ids 1-``ids`` against a fresh mock in ``dialect``."""
    case = case or CASES[dialect]
    with (
        tempfile.TemporaryDirectory(prefix=f"dialect-{dialect}-") as workdir,
        MockAPI("--dialect", dialect, *case.mock) as api,
    ):
        db = f"sqlite:///{workdir}/ingest.db"
        began = time.monotonic()
        done = crawl(
            api.url_template, db, "-a", f"ids=1-{ids}", timeout=TIMEOUT,
            RATELIMIT_RATE=case.configured, PROGRESS_INTERVAL=0,
        )  # fmt: skip
        wall = time.monotonic() - began
        record = api.requests()
        stored = sum(1 for state in terminal_states(db).values() if state == "stored")
    return Measured(
        dialect=dialect,
        case=case,
        requests=len(record),
        refusals=statuses(record)[case.status],
        accepted=statuses(record)[200],
        efficiency=efficiency(record, case),
        lost=ids - stored,
        exit=done.returncode,
        wall=wall,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, default=DEFAULT_IDS, help="ids per dialect")
    parser.add_argument("--dialects", default=",".join(CASES), help="comma-separated")
    args = parser.parse_args()
    names = [name.strip() for name in args.dialects.split(",") if name.strip()]
    unknown = [name for name in names if name not in CASES]
    if unknown or args.ids < 2:
        parser.error(f"unknown dialect {unknown} or --ids under 2 ({args.ids})")
    print(HEADER, flush=True)
    for name in names:
        print(measure(name, args.ids).row(), flush=True)


if __name__ == "__main__":
    main()
