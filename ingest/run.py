"""What one run of a spider hands the components: its id, ids and worklist, how to ask for ids."""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

    from ingest.batch.feed import Batches
    from ingest.distributed.coordinator import Coordinator
    from ingest.distributed.seeding import SharedSeeding
    from ingest.fetching.ids import IdSource
    from ingest.fetching.requests import IdRequests
    from ingest.fetching.worklist import Worklist
    from ingest.listing.details import ListedIds

_OF_CRAWLER: weakref.WeakKeyDictionary[Crawler, Run] = weakref.WeakKeyDictionary()


@dataclass(eq=False)
class Run:
    """Built by the spider when the crawler makes it. It declares what components need of
    the crawl (skip-done, conditional requests, batch size, the look for lost ids,
    figures, the workers of a distributed job): they find it with :meth:`of`, never by
    reaching into the spider."""

    id: str  # requests made by this run carry it
    requests: IdRequests
    batches: Batches | None = None  # API_BATCH_SIZE > 1: the ids waiting to go in a batch
    ids: IdSource | None = None  # the job's ids, when the spider was given them
    worklist: Worklist | ListedIds | None = None  # which ids need a request; None: none do
    refresh: bool = False  # ids fetched again, with their stored validators
    shared: SharedSeeding | None = None  # DISTRIBUTED: the job's shared queue, seeded
    coordinator: Coordinator | None = None  # DISTRIBUTED: this worker's side of the job
    # Whether requests not made by this run may go (each checked first): an earlier run's
    # in JOBDIR, other workers' in a distributed job's queue. A listing's stored position
    # and listed ids say what is next instead, on one machine.
    earlier_requests: bool = True

    def attach(self, crawler: Crawler) -> None:
        _OF_CRAWLER[crawler] = self

    @classmethod
    def of(cls, crawler: Crawler) -> Run | None:
        """The crawl's run; None before the spider is made, or for a spider of no ids."""
        return _OF_CRAWLER.get(crawler)
