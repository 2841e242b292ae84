"""The live progress bar on a terminal (tqdm), with the log's lines printed above it."""

from __future__ import annotations

import logging
import shutil
import sys
from typing import TYPE_CHECKING, Any, TextIO

from scrapy import signals
from scrapy.exceptions import NotConfigured
from scrapy.utils.asyncio import create_looping_call
from tqdm import tqdm

from ingest.job import Job
from ingest.progress.figures import Figures, Snapshot
from ingest.progress.humanize import duration

if TYPE_CHECKING:
    from typing import Self

    from scrapy.crawler import Crawler

    from ingest.job import Reporting

REFRESH = 0.5  # seconds between redraws
# Columns left free at the right: an echoed "^C" fits on the bar's line, which a log
# line then erases whole, instead of wrapping to the next one.
MARGIN = 3
ERASE_LINE = "\r\x1b[2K"
# The figures go in as the description: tqdm would put ", " before a postfix.
FORMAT = "{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} ids | {desc}"
FORMAT_NO_TOTAL = "{n_fmt} ids | {desc}"


def bar_shown(reporting: Reporting, stream: TextIO | None = None) -> bool:
    """``PROGRESS_BAR`` is on and stderr is a terminal: not scrapyd, CI or a file."""
    stream = sys.stderr if stream is None else stream
    return reporting.progress_bar and stream.isatty()


class _Tqdm(tqdm):
    # No monitor thread: the bar is redrawn from the reactor, and nothing is left
    # running that could hold up a stop.
    monitor_interval = 0


def bar_text(s: Snapshot, limit: float | None) -> str:
    """What follows the bar: ``99.8/100 req/min | 0 x 429 | ETA 1m48s`` (``99.8
    req/min, limit not known`` before ``auto`` has inferred one)."""
    rate = f"{s.per_minute:.1f} req/min, limit not known"
    if limit is not None:
        rate = f"{s.per_minute:.1f}/{limit:.0f} req/min"
    parts = [rate, f"{s.throttled} x 429"]
    if s.pause_left > 0:
        parts.append(f"paused, resuming in {duration(s.pause_left)}")
    if s.eta is not None:
        parts.append(f"ETA {duration(s.eta)}")
    return " | ".join(parts)


class AboveTheBar:
    """A stream for the log's handler: each line is written above the bar, which is
    cleared first and drawn again after, so neither garbles the other."""

    def __init__(self, bar: tqdm[Any], stream: TextIO) -> None:
        self.bar, self.stream = bar, stream

    def write(self, text: str) -> int:
        with self.bar.get_lock():
            # The whole line is erased, not just the bar: the terminal may have echoed
            # "^C" after it.
            self.stream.write(ERASE_LINE)
            written = self.stream.write(text)
            self.stream.flush()
            self.bar.refresh(nolock=True)
        return written

    def flush(self) -> None:
        self.stream.flush()


class ProgressBar:
    """On a terminal, a bar with ids done/total, requests per minute against the limit,
    429s, the countdown of a pause and the ETA, redrawn every half second. The log goes
    on above it, unchanged; the bar is gone from the screen once the crawl closes."""

    def __init__(self, figures: Figures, stream: TextIO, refresh: float = REFRESH) -> None:
        self.figures, self.stream, self.refresh = figures, stream, refresh
        self.bar: Any = None
        self._loop: Any = None
        self._handlers: list[tuple[logging.StreamHandler[Any], Any]] = []

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        reporting = Job.of(crawler).reporting
        if not reporting.progress_bar:
            raise NotConfigured("PROGRESS_BAR is off")
        if not bar_shown(reporting):
            raise NotConfigured("stderr is not a terminal")
        ext = cls(Figures.of(crawler), sys.stderr)
        crawler.signals.connect(ext.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(ext.spider_closed, signal=signals.spider_closed)
        return ext

    def spider_opened(self) -> None:
        total = self.figures.total
        self.bar = _Tqdm(
            total=total,
            file=self.stream,
            leave=False,
            ncols=self._width(),
            bar_format=FORMAT if total else FORMAT_NO_TOTAL,
            mininterval=0,
        )
        above = AboveTheBar(self.bar, self.stream)
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is self.stream:
                self._handlers.append((handler, handler.setStream(above)))
        self._loop = create_looping_call(self.draw)
        self._loop.start(self.refresh, now=True)

    def _width(self) -> int:
        return max(20, shutil.get_terminal_size().columns - MARGIN)

    def draw(self) -> None:
        s = self.figures.snapshot()
        self.bar.ncols = self._width()
        self.bar.n = s.done
        limit = self.figures.limit()
        per_minute = None if limit is None else 60 * limit.per_second
        self.bar.set_description_str(bar_text(s, per_minute), refresh=False)
        self.bar.refresh()

    def spider_closed(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        for handler, stream in self._handlers:
            handler.setStream(stream)
        self._handlers.clear()
        if self.bar is not None:
            self.bar.close()
            self.bar = None
