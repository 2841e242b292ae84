"""Conditional refresh: a stored item's ETag and Last-Modified sent back with its request."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ingest.fetching.requests import ID
from ingest.run import Run

if TYPE_CHECKING:
    from typing import Self

    from scrapy import Request
    from scrapy.crawler import Crawler


class ConditionalMiddleware:
    """With ``-a refresh=1``, a request for one stored id carries ``If-None-Match`` and
    ``If-Modified-Since`` with the validators of its last answer, so that the API may
    answer ``304 Not Modified``: the row stands and only its ``fetched_at`` moves.

    The validators are read as the request leaves (one indexed lookup, which waits out a
    database outage as every lookup does): never kept in the queue or JOBDIR.
    """

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    async def process_request(self, request: Request) -> None:
        run, id_ = Run.of(self.crawler), request.meta.get(ID)
        if id_ is None or run is None or run.worklist is None or not run.refresh:
            return
        if b"If-None-Match" in request.headers or b"If-Modified-Since" in request.headers:
            return
        etag, modified = (await run.worklist.ledger.validators([id_])).get(id_, (None, None))
        if etag:
            request.headers["If-None-Match"] = etag
        if modified:
            request.headers["If-Modified-Since"] = modified
