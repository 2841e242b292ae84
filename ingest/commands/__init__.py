"""Scrapy commands of the project (COMMANDS_MODULE), and how those that read a job take its ids."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from scrapy.exceptions import UsageError
from scrapy.utils.conf import arglist_to_dict

if TYPE_CHECKING:
    import argparse

    from scrapy.commands import ScrapyCommand

    _Command = ScrapyCommand
else:
    # Not a ScrapyCommand when it runs: Scrapy would list this module as a command.
    _Command = object


def add_spider_arguments(parser: argparse.ArgumentParser, help: str) -> None:
    """``-a NAME=VALUE``, as ``scrapy crawl`` takes the spider's arguments."""
    parser.add_argument(
        "-a", dest="spargs", action="append", default=[], metavar="NAME=VALUE", help=help
    )


def read_spider_arguments(opts: argparse.Namespace) -> None:
    """``opts.spargs`` as a dict, or a usage error."""
    try:
        opts.spargs = arglist_to_dict(opts.spargs)
    except ValueError:
        raise UsageError("Invalid -a value, use -a NAME=VALUE", print_help=False) from None


class Reading(_Command):
    """What a command that only reads (the database, the settings) declares, before
    ``ScrapyCommand`` among its bases: a project, no crawler, no log; its ``usage`` and
    ``summary``; the spider's ``-a`` arguments (``ids_help``) read into ``opts.spargs``."""

    requires_project = True
    requires_crawler_process = False
    default_settings: ClassVar[dict[str, Any]] = {"LOG_ENABLED": False}
    usage = summary = ids_help = ""

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        add_spider_arguments(parser, self.ids_help)

    def process_options(self, args: list[str], opts: argparse.Namespace) -> None:
        super().process_options(args, opts)
        read_spider_arguments(opts)

    def syntax(self) -> str:
        return self.usage

    def short_desc(self) -> str:
        return self.summary
