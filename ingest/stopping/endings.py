"""Why a crawl ends before its work is done, and the exit code of each way a crawl ends."""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)

# The API asked for a longer pause than RATELIMIT_MAX_PAUSE: the same command, run
# later, continues (sysexits' EX_TEMPFAIL).
PAUSED = "ratelimit_paused"
# The API refused the token (401, or 403 with no sign of rate limiting): nothing more
# can succeed until the token is fixed (EX_NOPERM).
UNAUTHORIZED = "api_unauthorized"

# A setting that only the API's first answer could show to be wrong (as the path of
# the items in a batch's answer): exit as for any bad setting.
BAD_SETTING = "bad_setting"
# A listing page that cannot be read (not JSON, no items where the first had them, a
# refusal): the listing stands at the last page committed (EX_DATAERR).
BAD_PAGE = "listing_bad_page"
# A listing page that failed after every retry: the same command, run later, resumes
# the listing where it stands (EX_TEMPFAIL).
PAGE_FAILED = "listing_page_failed"

# The exit codes, one per way a crawl ends (README, "Exit codes"):
EXIT_DONE = 0  # finished, every id terminal
EXIT_USAGE = 2  # a bad argument or setting (as Scrapy's own usage errors)
EXIT_FAILED_IDS = 3  # finished, some ids failed after their retries: a rerun tries them again
EXIT_BAD_PAGE = 65  # a listing page that cannot be read (EX_DATAERR)
EXIT_UNREACHABLE = 69  # the API cannot be reached before the first request (EX_UNAVAILABLE)
EXIT_STOPPED = 75  # stopped before done, resumable: the same command continues (EX_TEMPFAIL)
EXIT_UNAUTHORIZED = 77  # the API refused the token (EX_NOPERM)
EXIT_CODES = {
    PAUSED: EXIT_STOPPED, UNAUTHORIZED: EXIT_UNAUTHORIZED, BAD_SETTING: EXIT_USAGE,
    BAD_PAGE: EXIT_BAD_PAGE, PAGE_FAILED: EXIT_STOPPED,
}  # fmt: skip
FINISHED = "finished"


def exit_code(reason: str | None, failed: int) -> int:
    """The exit code of a crawl that closed for ``reason`` (None: it never closed, as after
    a second Ctrl-C), leaving ``failed`` ids failed. A reason neither ``finished`` nor
    one of ours (Ctrl-C's ``shutdown``, a CLOSESPIDER_* limit) stopped it before its end."""
    if reason == FINISHED:
        return EXIT_FAILED_IDS if failed else EXIT_DONE
    return EXIT_CODES.get(reason or "", EXIT_STOPPED)


# The crawls ending for a reason of this module, so that waits can stop at once.
ENDING: weakref.WeakSet[Crawler] = weakref.WeakSet()
_closing: set[asyncio.Future[None]] = set()  # held until done: the loop keeps no reference


def end_crawl(crawler: Crawler, reason: str) -> None:
    """Begin a graceful stop for ``reason``: requests in flight finish, waiting ones go
    back to the queue (and to JOBDIR), and ``scrapy crawl`` exits with its code."""
    engine = crawler.engine
    if engine is None or not engine.running:
        return
    ENDING.add(crawler)
    closing = asyncio.ensure_future(engine.close_spider_async(reason=reason))
    _closing.add(closing)
    closing.add_done_callback(_closing.discard)


def every_key_rejected(crawler: Crawler, api_origin: str, count: int) -> None:
    """The API refused every key: the crawl stops (exit 77), once, with one line."""
    if crawler in ENDING:
        return
    logger.error(
        "%s rejected all %d API keys: stopping; no id was marked, and the same command "
        "with working keys continues.",
        api_origin, count,
    )  # fmt: skip
    end_crawl(crawler, UNAUTHORIZED)
