"""The soak judged from the mock's record and the database: every id once, 429s per key, what
each fault cost in requests re-sent, throughput, CPU and memory."""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.benchmarks.soak_cluster import Incarnation

IN_FLIGHT = 16  # CONCURRENT_REQUESTS: the most requests one worker has out at once
LONG_LIFE = 600.0  # seconds: a worker's 10 % mark a minute or more past its start-up
LONG_TITLE = f"worst worker of those that lived {LONG_LIFE / 60:.0f} min or more"


@dataclass
class Fault:
    """A fault done to the job: what, when it began and ended (time.time()), to whom."""

    name: str
    began: float
    ended: float = 0.0
    detail: str = ""
    agent: str = ""  # a killed worker's User-Agent


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
    # ids, requests carrying them, the most ids in flight
    resent: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    wall: float = 0.0
    items_per_second: float = 0.0
    cpu_workers: float = 0.0
    cpu_other: dict[str, float] = field(default_factory=dict)
    # who, RSS at 10 % of its life, peak, growth, seconds it lived
    rss: list[tuple[str, int, int, float, float]] = field(default_factory=list)
    redis_memory: tuple[int, int, int] = (0, 0, 0)  # first, peak, last
    write_latency: float = 0.0  # mean seconds per transaction
    restarts: int = 0
    exits: Counter[int] = field(default_factory=Counter)

    @property
    def every_id_once(self) -> bool:
        return self.terminal == self.ids and self.missing == 0 and self.duplicates == 0

    def long_lives(self) -> list[tuple[str, int, int, float, float]]:
        """The workers that lived :data:`LONG_LIFE` or more: their 10 % mark is past start-up."""
        return [r for r in self.rss if r[4] >= LONG_LIFE]

    def within_in_flight(self) -> bool:
        return all(ids <= bound for ids, _, bound in self.resent.values())


def asked_ids(entry: dict[str, Any]) -> list[str]:
    return entry["ids"] if entry.get("ids") else [entry["id"]] if entry.get("id") else []


GRACE = 15.0  # a lease's length: how long after a fault is over its effects may still be felt


def resent_per_fault(
    record: list[dict[str, Any]], faults: list[Fault], workers: int, size: int
) -> dict[str, tuple[int, int, int]]:
    """Each id asked for again put down to the fault that lost the answer to its previous
    asking (whenever the job noticed and asked again): the kill of the worker that asked,
    if it was killed after asking; else the first other fault begun before the asking again
    and not over (by :data:`GRACE`) when it was asked before; else ``with no fault``
    (bound 0). Per fault: the ids, the requests that carried them, and the most ids that
    fault had in flight: a killed worker's requests, a revoked key's, every worker's for
    the others, ``size`` ids each. A refused request (401, 429) is asked again by design:
    it is not work done, and asking its ids again is not re-sending."""
    killed = {fault.agent: n for n, fault in enumerate(faults) if fault.name == "kill"}
    others = [(n, fault) for n, fault in enumerate(faults) if fault.name != "kill"]

    def cause(before: float, agent: str, again: float) -> str:
        if agent in killed and faults[killed[agent]].began >= before:
            return _label(faults, killed[agent])
        for n, fault in others:
            if fault.began <= again and max(fault.ended, fault.began) + GRACE >= before:
                return _label(faults, n)
        return "with no fault"

    last: dict[str, tuple[float, str]] = {}
    ids: Counter[str] = Counter()
    requests: Counter[str] = Counter()
    for entry in sorted(record, key=lambda e: e["t"]):
        if entry["status"] in (401, 429):
            continue
        causes: Counter[str] = Counter()
        for id_ in asked_ids(entry):
            if id_ in last:
                causes[cause(*last[id_], entry["t"])] += 1
            last[id_] = (entry["t"], entry.get("agent") or "")
        ids.update(causes)
        requests.update(causes.keys())
    result = {}
    for n, fault in enumerate(faults):
        name = _label(faults, n)
        bound = IN_FLIGHT if fault.name in ("kill", "revoke") else IN_FLIGHT * workers
        result[name] = (ids[name], requests[name], bound * size)
    if requests["with no fault"]:
        result["with no fault"] = (ids["with no fault"], requests["with no fault"], 0)
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
    workers: int,
    size: int,
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
    report.resent = resent_per_fault(record, faults, workers, size)
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
        growth = peak / at_mark - 1 if at_mark else 0.0
        report.rss.append((who, at_mark, peak, growth, end - incarnation.started))
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
        row(f"re-sent after {name}", f"{ids:,} ids in {requests} requests (in flight ≤ {bound:,})")
    row("wall, items/s", f"{report.wall:.0f} s, {report.items_per_second:,.0f}")
    per_k = 1000 * report.cpu_workers / report.terminal if report.terminal else 0.0
    row("CPU, workers", f"{report.cpu_workers:.0f} s: {per_k:.3f} s per 1,000 items")
    for who, seconds in report.cpu_other.items():
        row(f"CPU, {who}", f"{seconds:.0f} s")
    if report.rss:
        for lives, whose in ((report.rss, "worst worker"), (report.long_lives(), LONG_TITLE)):
            if lives:
                who, at_mark, peak, growth, life = max(lives, key=lambda r: r[3])
                mib = f"{peak / 2**20:.0f} / {at_mark / 2**20:.0f} MiB ({growth:+.1%}"
                row(f"peak RSS / at 10 % of its life, {whose}", f"{mib}, {who}, {life:.0f} s)")
        row("peak RSS, all workers", f"{max(r[2] for r in report.rss) / 2**20:.0f} MiB")
    first, peak, last = report.redis_memory
    row(
        "Redis memory: first, peak, last",
        f"{first / 2**20:.1f}, {peak / 2**20:.1f}, {last / 2**20:.1f} MiB",
    )
    row("database write, mean per transaction", f"{1000 * report.write_latency:.1f} ms")
    row("workers started again / exit codes", f"{report.restarts} / {dict(report.exits)}")
    return "\n".join(lines) + "\n"


def main() -> None:
    """``python -m tests.benchmarks.soak_judge LOGS/record.json --workers N --size N``: what
    each fault cost in ids asked again, from the record a soak kept."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("record", type=Path)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--size", type=int, required=True)
    args = parser.parse_args()
    kept = json.loads(args.record.read_text())
    faults = [Fault(**fault) for fault in kept["faults"]]
    resent = resent_per_fault(kept["record"], faults, args.workers, args.size)
    for name, (ids, requests, bound) in resent.items():
        print(f"re-sent after {name}: {ids:,} ids in {requests} requests (in flight ≤ {bound:,})")


if __name__ == "__main__":
    main()
