"""The soak judged from the mock's record and the database: every id once, 429s per key, what
each fault cost in requests re-sent, throughput, CPU and memory."""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from tests.benchmarks.soak_cluster import Incarnation

IN_FLIGHT = 16  # CONCURRENT_REQUESTS: the most requests one worker has out at once


@dataclass
class Fault:
    """A fault done to the job: what, when it began and ended (time.time()), to whom."""

    name: str
    began: float
    ended: float = 0.0
    detail: str = ""


@dataclass
class Report:
    ids: int
    terminal: int = 0
    states: dict[str, int] = field(default_factory=dict)
    missing: int = 0
    duplicates: int = 0
    requests: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    per_key: dict[str, dict[int, int]] = field(default_factory=dict)
    ids_asked: int = 0
    resent: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # ids, requests, bound
    wall: float = 0.0
    items_per_second: float = 0.0
    cpu_workers: float = 0.0
    cpu_other: dict[str, float] = field(default_factory=dict)
    rss: list[tuple[str, int, int, float]] = field(default_factory=list)  # who, at 10%, peak
    redis_memory: tuple[int, int, int] = (0, 0, 0)  # first, peak, last
    write_latency: float = 0.0  # mean seconds per transaction
    restarts: int = 0
    exits: Counter[int] = field(default_factory=Counter)

    @property
    def every_id_once(self) -> bool:
        return self.terminal == self.ids and self.missing == 0 and self.duplicates == 0

    def within_in_flight(self) -> bool:
        return all(requests <= bound for _, requests, bound in self.resent.values())


def asked_ids(entry: dict[str, Any]) -> list[str]:
    return entry["ids"] if entry.get("ids") else [entry["id"]] if entry.get("id") else []


def resent_per_fault(
    record: list[dict[str, Any]], faults: list[Fault], size: int, workers: int
) -> dict[str, tuple[int, int, int]]:
    """Ids asked for again, and the requests that asked, each put down to the last fault
    begun before it (``before any fault`` if none); with the most that fault had in flight:
    a killed worker's requests, a revoked key's, every worker's for the others."""
    starts = sorted((fault.began, n) for n, fault in enumerate(faults))
    seen: set[str] = set()
    ids: Counter[str] = Counter()
    requests: Counter[str] = Counter()
    for entry in sorted(record, key=lambda e: e["t"]):
        again = [id_ for id_ in asked_ids(entry) if id_ in seen]
        seen.update(asked_ids(entry))
        if not again or entry["status"] in (401, 429):
            continue  # a refused request is asked again by design: it is not re-sent work
        place = bisect.bisect_right(starts, (entry["t"], len(faults))) - 1
        name = "before any fault" if place < 0 else _label(faults, starts[place][1])
        ids[name] += len(again)
        requests[name] += 1
    result = {}
    for n, fault in enumerate(faults):
        name = _label(faults, n)
        bound = IN_FLIGHT if fault.name in ("kill", "revoke") else IN_FLIGHT * workers
        result[name] = (ids[name], requests[name], bound)
    if requests["before any fault"]:
        result["before any fault"] = (ids["before any fault"], requests["before any fault"], 0)
    return result


def _label(faults: list[Fault], n: int) -> str:
    fault = faults[n]
    same = sum(1 for f in faults[:n] if f.name == fault.name)
    return f"{fault.name} #{same + 1}" if fault.name == "kill" else fault.name


def judge(
    ids: int,
    record: list[dict[str, Any]],
    states: dict[str, str],
    duplicates: int,
    *,
    faults: list[Fault],
    incarnations: list[Incarnation],
    keys: dict[str, str],
    size: int,
    workers: int,
    began: float,
    ended: float,
) -> Report:
    report = Report(ids)
    report.terminal = len(states)
    report.states = dict(Counter(states.values()))
    report.missing = sum(1 for n in range(1, ids + 1) if str(n) not in states)
    report.duplicates = duplicates
    report.requests = len(record)
    report.statuses = dict(Counter(entry["status"] for entry in record))
    per_key: dict[str, Counter[int]] = defaultdict(Counter)
    for entry in record:
        per_key[keys.get(entry.get("token") or "", "no key")][entry["status"]] += 1
    report.per_key = {key: dict(counts) for key, counts in sorted(per_key.items())}
    report.ids_asked = len({id_ for entry in record for id_ in asked_ids(entry)})
    report.resent = resent_per_fault(record, faults, size, workers)
    report.wall = ended - began
    report.items_per_second = report.terminal / report.wall if report.wall else 0.0
    report.cpu_workers = sum(i.cpu for i in incarnations)
    for incarnation in incarnations:
        if len(incarnation.rss) < 10:
            continue  # too short a life to say how it grew
        end = incarnation.ended or incarnation.rss[-1][0]
        mark = incarnation.started + 0.1 * (end - incarnation.started)
        at_mark = min(incarnation.rss, key=lambda sample: abs(sample[0] - mark))[1]
        peak = max(rss for _, rss in incarnation.rss)
        who = (
            f"worker {incarnation.number} ({'killed' if incarnation.killed else incarnation.code})"
        )
        report.rss.append((who, at_mark, peak, peak / at_mark - 1 if at_mark else 0.0))
    total, count = (sum(i.writes[k] for i in incarnations) for k in (0, 1))
    report.write_latency = total / count if count else 0.0
    report.exits = Counter(i.code for i in incarnations if i.code is not None and not i.killed)
    return report


def render(report: Report, title: str) -> str:
    """The report as Markdown."""
    lines = [f"### {title}", "", "| figure | value |", "|---|---|"]

    def row(name: str, value: object) -> None:
        lines.append(f"| {name} | {value} |")

    row("ids terminal", f"{report.terminal:,} of {report.ids:,} {report.states}")
    row("ids without an outcome / duplicate rows", f"{report.missing} / {report.duplicates}")
    row("requests (statuses)", f"{report.requests:,} {report.statuses}")
    for key, counts in report.per_key.items():
        row(f"{key}: requests, 429s", f"{sum(counts.values()):,}, {counts.get(429, 0)} {counts}")
    for name, (ids, requests, bound) in report.resent.items():
        row(f"re-sent after {name}", f"{ids:,} ids in {requests} requests (in flight ≤ {bound})")
    row("wall, items/s", f"{report.wall:.0f} s, {report.items_per_second:,.0f}")
    per_k = 1000 * report.cpu_workers / report.terminal if report.terminal else 0.0
    row("CPU, workers", f"{report.cpu_workers:.0f} s: {per_k:.3f} s per 1,000 items")
    for who, seconds in report.cpu_other.items():
        row(f"CPU, {who}", f"{seconds:.0f} s")
    if report.rss:
        who, at_mark, peak, growth = max(report.rss, key=lambda r: r[3])
        mib = f"{peak / 2**20:.0f} / {at_mark / 2**20:.0f} MiB ({growth:+.1%}, {who})"
        row("peak RSS / at 10 % of its life, worst worker", mib)
        row("peak RSS, all workers", f"{max(r[2] for r in report.rss) / 2**20:.0f} MiB")
    first, peak, last = report.redis_memory
    row(
        "Redis memory: first, peak, last",
        f"{first / 2**20:.1f}, {peak / 2**20:.1f}, {last / 2**20:.1f} MiB",
    )
    row("database write, mean per transaction", f"{1000 * report.write_latency:.1f} ms")
    row("workers started again / exit codes", f"{report.restarts} / {dict(report.exits)}")
    return "\n".join(lines) + "\n"
