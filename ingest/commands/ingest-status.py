"""``scrapy ingest-status``: what became of the ids, from the database alone."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, ClassVar

from scrapy.commands import ScrapyCommand
from scrapy.exceptions import UsageError
from scrapy.utils.conf import arglist_to_dict

from ingest.config import ConfigError
from ingest.ids import chunks, id_source
from ingest.items import STATES
from ingest.masking import mask_url
from ingest.storage import open_store
from ingest.storage.base import StorageError

if TYPE_CHECKING:
    import argparse

SHOWN = 100  # pending ids listed at most


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


class Command(ScrapyCommand):
    requires_project = True
    requires_crawler_process = False
    default_settings: ClassVar[dict[str, Any]] = {"LOG_ENABLED": False}

    def syntax(self) -> str:
        return "[-a ids=1-100 | -a ids_file=PATH]"

    def short_desc(self) -> str:
        return "Count ids per terminal state in DATABASE_URL, and list those still pending"

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.add_argument(
            "-a", dest="spargs", action="append", default=[], metavar="NAME=VALUE",
            help="the ids to account for, as given to the spider: ids=… or ids_file=…",
        )  # fmt: skip

    def process_options(self, args: list[str], opts: argparse.Namespace) -> None:
        super().process_options(args, opts)
        try:
            opts.spargs = arglist_to_dict(opts.spargs)
        except ValueError:
            raise UsageError("Invalid -a value, use -a NAME=VALUE", print_help=False) from None

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        assert self.settings is not None
        url = self.settings.get("DATABASE_URL")
        try:
            ids = id_source(opts.spargs) if opts.spargs else None
            store = open_store(url)
            store.connect(create=False)  # a status is a read: it creates nothing
        except (ConfigError, ValueError, StorageError) as exc:
            print(f"scrapy ingest-status: error: {exc}", file=sys.stderr)
            self.exitcode = 2
            return
        try:
            print(f"database: {mask_url(url)}")
            counts = store.counts()
            for state in STATES:
                print(f"{state:>10}: {counts.get(state, 0)}")
            if ids is None:
                return
            shown: list[str] = []
            total = pending = 0
            for chunk in chunks(ids):
                total += len(chunk)
                states = store.states(chunk)
                missing = [id_ for id_ in chunk if id_ not in states]
                pending += len(missing)
                shown.extend(missing[: SHOWN - len(shown)])
            print(f"{'pending':>10}: {pending} of {total} requested ids")
            if shown:
                more = " …" if pending > len(shown) else ""
                print(f"{'':>10}  {compact(shown)}{more}")
        finally:
            store.close()
