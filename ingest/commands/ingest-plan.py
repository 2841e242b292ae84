"""``scrapy ingest-plan``: before any request, what a crawl of the ids will take."""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING

from scrapy.commands import ScrapyCommand

from ingest.commands import Reading
from ingest.config.values import ConfigError, parse_flag
from ingest.fetching.ids import id_source
from ingest.job import Job
from ingest.planning.kept import read_database
from ingest.planning.plan import Plan, as_json, plan, when
from ingest.progress.humanize import duration
from ingest.storage.base import StorageError, StorageUnavailable

if TYPE_CHECKING:
    import argparse

NAMES = {86_400.0: "day", 3_600.0: "hour", 604_800.0: "week"}


def describe(p: Plan) -> list[str]:
    """The plan in lines of text."""
    each = "one id each" if p.batch_size == 1 else f"up to {p.batch_size} ids each"
    done = "every one fetched again (refresh)" if p.refresh else f"{p.done:,} done already"
    lines = [f"{p.ids:,} ids for {p.api}, {done}: {p.requests:,} requests ({each})"]
    timed, keys = p.schedule, f"{p.keys} key{'s' * (p.keys > 1)}"
    rates = ",".join(str(r) for r in p.rates) or "auto"
    shared = f", {','.join(str(r) for r in p.shared)} over all keys" if p.shared else ""
    if timed is None:
        lines.append(f"at RATELIMIT_RATE={rates} ({keys}): how long is not known")
    else:
        took = duration(timed.ends - timed.starts) if timed.ends > timed.starts else "at once"
        over = f", over {p.days} days" if p.days and p.days > 1 else ""
        lines.append(
            f"at RATELIMIT_RATE={rates} ({keys}{shared}): {took} from the first request to the "
            f"last, {when(timed.starts)} to {when(timed.ends)}{over}"
        )
    if timed is not None and timed.allowance is not None:
        period = timed.allowance.period
        name = NAMES.get(period, f"period of {duration(period)}")
        lines.append(f"the allowance of {timed.allowance} ({p.allowance_source}), each {name}:")
        for number, a in enumerate(timed.allowances, 1):
            line = f"  {name} {number}: {a.requests:,} requests, {when(a.starts)} to {when(a.ends)}"
            if a.next_at is not None:
                line += f", the allowance spent until {when(a.next_at)}"
            lines.append(line)
    lines += [f"note: {note}" for note in p.notes]
    return lines


class Command(Reading, ScrapyCommand):
    """The plan of the ``api`` spider's job, as text or ``--json``: exit 2 for a bad argument
    or setting, 1 for a database that cannot be reached."""

    usage = "-a ids=1-100 | -a ids_file=PATH [-a refresh=1] [-s NAME=VALUE …] [--json]"
    summary = "Before any request: how many requests the api spider's job needs, and how long"
    ids_help = "the spider's arguments, as given to scrapy crawl api: ids=… or ids_file=…"

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.add_argument("--json", action="store_true", help="the plan as JSON")

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        assert self.settings is not None
        now = time.time()
        try:
            job = Job.from_settings(self.settings)
            ids = id_source(opts.spargs)
            refresh = parse_flag("refresh", opts.spargs.get("refresh"))
            counts, kept = read_database(job.storing.database_url, ids, job.origin)
        except (ConfigError, ValueError, StorageError) as exc:
            print(f"scrapy ingest-plan: error: {exc}", file=sys.stderr)
            self.exitcode = 1 if isinstance(exc, StorageUnavailable) else 2
            return
        planned = plan(job, len(ids), counts, kept, now=now, refresh=refresh)
        if opts.json:
            json.dump(as_json(planned), sys.stdout, indent=2)
            sys.stdout.write("\n")
        else:
            print("\n".join(describe(planned)))
