"""``scrapy crawl``, checking settings and arguments before anything is sent."""

from __future__ import annotations

import logging
import math
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scrapy.commands.crawl import Command as ScrapyCrawl

from ingest.config.preflight import (
    ApiUnreachable,
    check_list_args,
    check_reachable,
    check_settings,
    check_spider_args,
)
from ingest.config.values import ConfigError, parse_flag
from ingest.job import log_level, log_target
from ingest.planning.kept import read_database, spent_until
from ingest.stopping.endings import EXIT_STOPPED, EXIT_UNREACHABLE, EXIT_USAGE, exit_code

if TYPE_CHECKING:
    import argparse

    from scrapy.crawler import Crawler


class Command(ScrapyCrawl):
    """Scrapy's crawl command; a bad setting or argument of the ``api`` or ``list`` spider
    ends it at once with one line naming the culprit and exit code 2 (69 for an API that
    cannot be reached). A crawl exits with the code of the way it ended
    (:func:`ingest.stopping.endings.exit_code`: 0 done, 3 ids failed, 75 stopped before
    done, 77 the token refused, …)."""

    def _create_crawler(self, spidercls: Any) -> Crawler:
        self.crawler = super()._create_crawler(spidercls)
        return self.crawler

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        # Scrapy's loggers are at DEBUG and its handler drops what is under LOG_LEVEL:
        # every response would build two records ("Crawled", "Scraped from") for nothing.
        assert self.settings is not None
        logging.getLogger("scrapy").setLevel(log_level(self.settings))
        try:
            super().run(args, opts)
        except KeyboardInterrupt:
            # A Ctrl-C after the reactor gave SIGINT back to Python: a forced stop.
            self.exitcode = EXIT_STOPPED
            return
        finally:
            # The crawl is over: a Ctrl-C now would only cut its exit short.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        crawler = getattr(self, "crawler", None)
        if self.exitcode != 0 or crawler is None:
            return
        try:
            stats = crawler.stats
        except RuntimeError:
            return  # the crawl never began
        failed = int(stats.get_value("storage/failed", 0))
        self.exitcode = exit_code(stats.get_value("finish_reason"), failed)

    def process_options(self, args: list[str], opts: argparse.Namespace) -> None:
        super().process_options(args, opts)
        if args[:1] not in (["api"], ["list"]):
            return
        assert self.settings is not None
        try:
            if args[0] == "list":
                url = check_list_args(opts.spargs)
                job = check_settings(self.settings, api_url=url)
                if parse_flag("details", opts.spargs.get("details")):
                    check_reachable(job.api_url)  # the details' host
                return
            check_spider_args(opts.spargs)
            job = check_settings(self.settings)
            kept = read_database(job.storing.database_url, None, job.origin)[1]
        except ConfigError as exc:
            self._say(f"scrapy crawl {args[0]}: error: {exc}")
            sys.exit(EXIT_UNREACHABLE if isinstance(exc, ApiUnreachable) else EXIT_USAGE)
        spent = spent_until(job, kept, time.time()) if job.pacing.enabled else None
        if spent is not None:
            resume_at = datetime.fromtimestamp(math.ceil(spent[1]), tz=UTC)
            self._say(
                f"scrapy crawl {args[0]}: the allowance of RATELIMIT_RATE's {spent[0]} was spent "
                f"by an earlier run; nothing is sent. Run the same command again after "
                f"{resume_at:%Y-%m-%d %H:%M:%S} UTC to continue."
            )
            sys.exit(EXIT_STOPPED)

    def _say(self, line: str) -> None:
        """One line on stderr, and in the job's log (under scrapyd, LOG_FILE) too: logging
        starts only with the crawl."""
        assert self.settings is not None
        print(line, file=sys.stderr)
        log_file, encoding = log_target(self.settings)
        if log_file:
            with Path(log_file).open("a", encoding=encoding) as log:
                print(line, file=log)
