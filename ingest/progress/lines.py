"""Progress lines during the crawl and a summary at its end (kept in JOBDIR for ingest-status)."""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from scrapy import signals
from scrapy.exceptions import NotConfigured
from scrapy.utils.asyncio import create_looping_call

from ingest.config.keys import Key
from ingest.items import STATES
from ingest.job import Job
from ingest.progress.bar import bar_shown
from ingest.progress.figures import Figures, Snapshot
from ingest.progress.humanize import duration
from ingest.ratelimit.routing import key_stats

if TYPE_CHECKING:
    from typing import Self

    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)

SUMMARY_FILE = "ingest-summary.json"  # in JOBDIR: the job's last summary


def progress_line(s: Snapshot) -> str:
    """``120/300 ids (40.0%) | 100.0 req/min over the last minute | 0 x 429 | …``"""
    ids = f"{s.done}/{s.total} ids ({100 * s.done / s.total:.1f}%)" if s.total else f"{s.done} ids"
    parts = [ids, f"{s.per_minute:.1f} req/min over the last minute", f"{s.throttled} x 429"]
    if s.ids_per_request > 1:
        parts.insert(2, f"{s.ids_per_request:.1f} ids/request")
    paused = f"paused {duration(s.paused_seconds)}"
    if s.pause_left > 0:
        paused += f", resuming in {duration(s.pause_left)}"
    parts.append(paused)
    if s.pace_source:
        parts.append(f"pace {s.pace:.1f}/min, {s.pace_source}")
    if s.eta is not None:
        parts.append(f"ETA {duration(s.eta)}")
    return " | ".join(parts)


def summary_record(s: Snapshot, figures: Figures, reason: str, keys: int = 1) -> dict[str, Any]:
    """The summary's figures, as kept in JOBDIR and shown by ``ingest-status --json``.
    With several keys, the limit is each key's, times as many keys."""
    rate, limit = figures.overall_per_minute(), figures.limit()
    share = figures.share_of_limit(keys)
    return {
        "reason": reason,
        "finished_at": datetime.fromtimestamp(s.now, tz=UTC).isoformat(timespec="seconds"),
        "elapsed_seconds": round(s.elapsed, 3),
        "ids": {**s.by_state, "skipped": s.skipped, "total": s.total},
        "requests": s.requests,
        "ids_per_request": round(s.ids_per_request, 2),
        "retries": s.retries,
        "responses_429": s.throttled,
        "requests_per_minute": None if rate is None else round(rate, 2),
        "limit": None if limit is None else str(limit),
        "keys": keys,
        "share_of_limit": None if share is None else round(share, 4),
        "limit_since_inferred": figures.stretch is not None,
        "free_304": figures.free(),
        "revalidated": int(figures.stats.get_value("validation/revalidated_stored", 0)),
        "pace_per_minute": round(s.pace, 1),
    }


def summary_text(record: dict[str, Any]) -> str:
    ids = record["ids"]
    counts = ", ".join(f"{ids[state]} {state}" for state in STATES)
    if ids.get("unchanged"):
        counts += f", {ids['unchanged']} unchanged"
    text = (
        f"{record['reason']}: {counts}; {ids['skipped']} skipped as already done; "
        f"elapsed {duration(record['elapsed_seconds'])}; {record['requests']} requests "
        f"({record['retries']} retries, {record['responses_429']} x 429)"
    )
    if record["requests_per_minute"] is not None:
        text += f" at {record['requests_per_minute']:.1f}/min"
    if record["share_of_limit"] is not None:
        of = f"{record['keys']} keys x " if record.get("keys", 1) > 1 else ""
        text += f" = {100 * record['share_of_limit']:.1f}% of {of}the {record['limit']} limit"
        if record.get("limit_since_inferred"):
            text += " (since it was inferred)"
    elif record["limit"] is None:
        text += (
            "; the limit is not known: no 429 taught one, and the pace had reached "
            f"{record['pace_per_minute']:.1f}/min"
        )
    if record.get("ids_per_request", 1) > 1:
        text += f"; {record['ids_per_request']:.1f} ids/request"
    if record.get("free_304"):
        text += f"; {record['free_304']} x 304 the server does not count, left out of the rate"
    if record.get("revalidated"):
        text += (
            f"; {record['revalidated']} ids kept as invalid pass the changed schema: "
            "stored without a request"
        )
    return text


class Progress:
    """Every ``PROGRESS_INTERVAL`` seconds: done/total, requests per minute over the
    last minute (as the server counts them), 429s so far, time paused and ETA; not
    while the progress bar shows them on the terminal instead. At the end, a summary:
    what became of the ids, the requests sent for them (retries and requeued 429s
    included), and their rate against the limit; with JOBDIR, kept there too."""

    def __init__(
        self,
        figures: Figures,
        interval: float,
        *,
        lines: bool,
        jobdir: str | None = None,
        keys: tuple[Key, ...] = (),
    ) -> None:
        self.figures, self.interval, self.lines, self.jobdir = figures, interval, lines, jobdir
        self.keys = keys if len(keys) > 1 else ()
        self.stats = figures.stats
        self._loop: Any = None

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        job = Job.of(crawler)
        reporting = job.reporting
        interval = reporting.progress_interval
        if interval <= 0:
            raise NotConfigured("PROGRESS_INTERVAL is 0")
        # With the log in a file, the terminal's bar does not replace its lines.
        lines = not bar_shown(reporting) or bool(reporting.log_file)
        ext = cls(
            Figures.of(crawler), interval, lines=lines, jobdir=job.storing.jobdir, keys=job.keys
        )
        crawler.signals.connect(ext.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(ext.spider_closed, signal=signals.spider_closed)
        return ext

    def spider_opened(self) -> None:
        if self.lines:
            self._loop = create_looping_call(self.log_progress)
            self._loop.start(self.interval, now=False)

    def key_notes(self) -> list[str]:
        """The keys paused at some point, and those the API refused."""
        notes = []
        for key in self.keys:
            stat = key_stats(key.fingerprint)
            if self.stats.get_value(f"{stat}/rejected"):
                notes.append(f"key {key.number} rejected")
            elif paused := self.stats.get_value(f"{stat}/paused_seconds", 0.0):
                notes.append(f"key {key.number} paused {duration(paused)}")
        return notes

    def per_key(self) -> str:
        """Each key's requests and 429s, for the summary."""
        return ", ".join(
            f"key {key.number} ({key.fingerprint}…) "
            f"{self.stats.get_value(f'{key_stats(key.fingerprint)}/requests', 0)} requests "
            f"{self.stats.get_value(f'{key_stats(key.fingerprint)}/429', 0)} x 429"
            for key in self.keys
        )

    def line(self) -> str:
        """The progress line; with several keys, their pace together and each one's trouble."""
        snapshot = self.figures.snapshot()
        line = progress_line(snapshot)
        if self.keys:
            keys = f"{len(self.keys)} keys: {snapshot.per_minute:.1f}/min"
            line += " | " + "; ".join([keys, *self.key_notes()])
        return line

    def log_progress(self) -> None:
        logger.info("Progress: %s", self.line())

    def spider_closed(self, reason: str) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        record = summary_record(
            self.figures.snapshot(), self.figures, reason, keys=max(1, len(self.keys))
        )
        text = summary_text(record)
        if self.keys:
            text += f"; {self.per_key()}"
        logger.info("Summary (%s)", text)
        if self.jobdir:
            path = os.path.join(self.jobdir, SUMMARY_FILE)
            try:
                with open(path, "w", encoding="utf-8") as out:
                    json.dump(record, out, indent=2)
            except OSError as exc:
                logger.warning("Could not keep the summary in %s: %s", path, exc)
