"""``scrapy ingest-status``: what became of the ids, from the database alone."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TextIO

from scrapy.commands import ScrapyCommand

from ingest.commands import Reading
from ingest.config.masking import mask_url
from ingest.config.values import ConfigError
from ingest.fetching.ids import IdSource, id_source
from ingest.items import STATES
from ingest.job import Storing
from ingest.progress.lines import SUMMARY_FILE
from ingest.storage import open_store
from ingest.storage.base import StorageError, Store
from ingest.storage.report import Report
from ingest.storage.sql import SqlStore

if TYPE_CHECKING:
    import argparse

SHOWN = 100  # pending ids listed at most, without --pending
BLOCK = 10_000  # ids of a range written at once


def compact(ids: list[str]) -> str:
    """``['1', '2', '3', '7']`` → ``1-3,7``: runs of consecutive integers as ranges."""
    parts: list[str] = []
    run: list[int] = []

    def close() -> None:
        if run:
            parts.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
            run.clear()

    for id_ in ids:
        if id_.isdigit() and run and int(id_) == run[-1] + 1:
            run.append(int(id_))
            continue
        close()
        if id_.isdigit():
            run.append(int(id_))
        else:
            parts.append(id_)
    close()
    return ",".join(parts)


def write_pending(pending: Iterator[tuple[int, int] | str], out: TextIO) -> int:
    """Every pending id, one a line; ranges written a block of lines at a time."""
    count = 0
    for item in pending:
        if isinstance(item, str):
            out.write(item + "\n")
            count += 1
            continue
        first, last = item
        for start in range(first, last + 1, BLOCK):
            end = min(last, start + BLOCK - 1)
            out.write("\n".join(map(str, range(start, end + 1))) + "\n")
        count += last - first + 1
    return count


def first_pending(pending: Iterator[tuple[int, int] | str]) -> tuple[int, list[str]]:
    """How many ids are pending, and the first SHOWN of them."""
    count, shown = 0, list[str]()
    for item in pending:
        if isinstance(item, str):
            count += 1
            if len(shown) < SHOWN:
                shown.append(item)
            continue
        first, last = item
        count += last - first + 1
        left = SHOWN - len(shown)
        shown.extend(str(n) for n in range(first, min(last + 1, first + left)))
    return count, shown


def last_summary(jobdir: str | None) -> dict[str, Any] | None:
    """The summary the job's last run kept in its JOBDIR, if there is one."""
    if not jobdir:
        return None
    try:
        with open(os.path.join(jobdir, SUMMARY_FILE), encoding="utf-8") as kept:
            summary: dict[str, Any] = json.load(kept)
    except (OSError, ValueError):
        return None
    return summary


class Command(Reading, ScrapyCommand):
    usage = "[-a ids=1-100 | -a ids_file=PATH] [--json | --failed | --pending [FILE]]"
    ids_help = "the ids to account for, as given to the spider: ids=… or ids_file=…"
    summary = "Count ids per terminal state in DATABASE_URL, and list those still pending"

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        show = parser.add_mutually_exclusive_group()
        show.add_argument(
            "--json", action="store_true",
            help="counts per state, pending, and the job's last summary (with JOBDIR), as JSON",
        )  # fmt: skip
        show.add_argument(
            "--failed", action="store_true",
            help="the failed and invalid ids with their reasons, one a line (tab-separated)",
        )  # fmt: skip
        show.add_argument(
            "--pending", nargs="?", const="-", metavar="FILE",
            help="every pending id of -a ids=…/ids_file=…, one a line, to FILE or stdout",
        )  # fmt: skip

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        assert self.settings is not None
        try:
            storing = Storing.from_settings(self.settings)
            url = storing.database_url
            ids = id_source(opts.spargs) if opts.spargs else None
            if opts.pending and ids is None:
                raise ConfigError("--pending needs the job's ids: -a ids=… or -a ids_file=PATH")
            store = open_store(url)
            store.connect(create=False)  # a status is a read: it creates nothing
        except (ConfigError, ValueError, StorageError) as exc:
            print(f"scrapy ingest-status: error: {exc}", file=sys.stderr)
            self.exitcode = 2
            return
        assert isinstance(store, SqlStore)
        report = Report(store)
        try:
            if opts.failed:
                for id_, state, reason in report.failures(ids):
                    sys.stdout.write(f"{id_}\t{state}\t{' '.join(str(reason or '').split())}\n")
            elif opts.pending:
                assert ids is not None
                if opts.pending == "-":
                    write_pending(report.pending(ids), sys.stdout)
                else:
                    with open(opts.pending, "w", encoding="utf-8") as out:
                        write_pending(report.pending(ids), out)
            elif opts.json:
                self._json(store, report, ids, storing.jobdir)
            else:
                self._text(store, report, ids, mask_url(url))
        except StorageError as exc:
            print(f"scrapy ingest-status: error: {exc}", file=sys.stderr)
            self.exitcode = 1
        finally:
            store.close()

    def _json(self, store: Store, report: Report, ids: IdSource | None, jobdir: str | None) -> None:
        status: dict[str, Any] = {"database": store.url, "counts": store.counts()}
        if ids is not None:
            counts = report.counts(ids)
            total = len(ids)
            status["job"] = {
                "ids": total,
                "counts": counts,
                "pending": total - sum(counts.values()),
            }
        status["last_summary"] = last_summary(jobdir)
        json.dump(status, sys.stdout, indent=2)
        sys.stdout.write("\n")

    def _text(self, store: Store, report: Report, ids: IdSource | None, url: str) -> None:
        print(f"database: {url}")
        counts = store.counts()
        for state in STATES:
            print(f"{state:>10}: {counts.get(state, 0)}")
        if ids is None:
            return
        pending, shown = first_pending(report.pending(ids))
        print(f"{'pending':>10}: {pending} of {len(ids)} requested ids")
        if shown:
            more = " …" if pending > len(shown) else ""
            print(f"{'':>10}  {compact(shown)}{more}")
