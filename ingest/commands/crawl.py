"""``scrapy crawl``, checking settings and arguments before anything is sent."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from scrapy.commands.crawl import Command as ScrapyCrawl

from ingest.config import ConfigError
from ingest.preflight import check_settings, check_spider_args

if TYPE_CHECKING:
    import argparse


class Command(ScrapyCrawl):
    """Scrapy's crawl command; a bad setting or argument of the ``api`` spider ends
    it at once with one line naming the culprit and exit code 2."""

    def process_options(self, args: list[str], opts: argparse.Namespace) -> None:
        super().process_options(args, opts)
        if args[:1] != ["api"]:
            return
        assert self.settings is not None
        try:
            check_spider_args(opts.spargs)
            check_settings(self.settings)
        except ConfigError as exc:
            print(f"scrapy crawl api: error: {exc}", file=sys.stderr)
            sys.exit(2)
