"""Requests restored from an earlier run's queue: sent only if their id is still not done."""

from __future__ import annotations

from typing import TYPE_CHECKING

from scrapy.exceptions import IgnoreRequest

from ingest.batch.spec import IDS
from ingest.fetching.requests import ID, RUN, ids_of
from ingest.fetching.worklist import Worklist
from ingest.listing.details import ListedIds
from ingest.listing.walk import PAGE
from ingest.run import Run

if TYPE_CHECKING:
    from typing import Self

    from scrapy import Request
    from scrapy.crawler import Crawler
    from scrapy.statscollectors import StatsCollector


class AlreadyDone(IgnoreRequest):
    """The id has an outcome already; fetching it again would waste quota."""


class SkipDoneMiddleware:
    """Checks the database before sending a request that this run did not create.

    After a forced stop, JOBDIR's queue may still hold requests whose ids were stored
    before the process died; in a distributed job, another worker's request may repeat
    one whose id was stored meanwhile. Requests made by this run were checked when they were
    made; the others are checked here, one indexed lookup each (which waits out a
    database outage, as every lookup does). A batch of which some ids are done is
    replaced by one for the others.
    """

    def __init__(self, crawler: Crawler, stats: StatsCollector) -> None:
        self.crawler, self.stats = crawler, stats

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        assert crawler.stats is not None
        return cls(crawler, crawler.stats)

    async def process_request(self, request: Request) -> Request | None:
        run = Run.of(self.crawler)
        if run is None or request.meta.get(RUN) == run.id:
            return None
        if PAGE in request.meta or not run.earlier_requests:
            # The listing's stored position and listed ids, not an earlier run's queue, say
            # which page is next and which ids need a request.
            raise AlreadyDone("a listing's request queued by an earlier run")
        worklist = run.worklist
        if not isinstance(worklist, Worklist | ListedIds) or (
            ID not in request.meta and IDS not in request.meta
        ):
            return None
        ids = ids_of(request)
        states = await worklist.states(ids)
        needed = [id_ for id_ in ids if worklist.needs_fetch(*states.get(id_, (None, 0.0)))]
        if len(needed) < len(ids):
            self.stats.inc_value("ids/skipped_queued", len(ids) - len(needed))
        if not needed:
            raise AlreadyDone(f"{', '.join(ids[:3])}{'…' if len(ids) > 3 else ''}: done already")
        if len(needed) < len(ids):
            # A batch of which only some ids are still to do: asked for again, smaller.
            return run.requests.batch_request(needed, like=request)
        request.meta[RUN] = run.id
        return None
