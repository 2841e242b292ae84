"""The job's ids fed as batches of the size the API takes: what a cut leaves waits for more ids,
so that every batch but the last of the job is full."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ingest.stopping.waiting import Stopping, Waiter, crawl_is_stopping

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.http import JsonRequest

    from ingest.fetching.requests import IdRequests
    from ingest.fetching.worklist import Worklist
    from ingest.run import Run

STEP = 0.05  # seconds between looks at what is out, when the job's ids are all fed


class Batches:
    """The ids waiting to go in a batch, in the job's order, each marked fresh (no row
    yet) or not.

    :meth:`add` cuts what waits into batches of the size the API takes now and, while the
    job's ids are fed (:func:`batch_requests`), keeps the part too small to fill one for
    the ids that come next; once that feed has ended (:meth:`end`), or where there is
    none (the list spider's details), nothing waits. A batch refused as too big, or cut
    before it went, comes back here (:meth:`give_back`) rather than as halves or
    remainders. A batch of fresh ids only is named by its place in the job, so that with
    JOBDIR a rerun does not queue again what the queue holds; one with ids tried before
    is not (the duplicate filter would drop it).
    """

    def __init__(self, requests: IdRequests) -> None:
        self.requests, self.sizer = requests, requests.sizer
        self.waiting: list[tuple[str, bool]] = []
        self.feeding = False

    def add(
        self,
        ids: Iterable[tuple[str, bool]],
        *,
        place: str | None = None,
        like: Any = None,
        by_content: bool = False,
    ) -> Iterator[JsonRequest]:
        """Full batches of what waits and ``ids`` ((id, fresh) pairs); ``place``: where in
        the job they begin, which names them; ``like``: the request they replace;
        ``by_content``: a batch of fresh ids is known to the duplicate filter by the ids it
        asks for (the shared queue's: two seeders that queue the same batch send it once)."""
        self.waiting.extend(ids)
        spec = self.requests.batching
        assert spec is not None
        size = self.sizer.size
        parts = spec.parts([id_ for id_, _ in self.waiting], size)
        if self.feeding and parts and len(parts[-1]) < size:
            parts.pop()  # waits for more
        fresh = dict(self.waiting)
        taken = sum(len(part) for part in parts)
        self.waiting = self.waiting[taken:]
        for number, part in enumerate(parts):
            only_fresh = all(fresh[id_] for id_ in part)
            named = place is not None and only_fresh
            chunk = f"{spec.size}/{size}:{place}.{number}" if named else None
            yield self.requests.batch_request(
                part, chunk=chunk, like=like, filtered=by_content and only_fresh
            )

    def give_back(self, ids: list[str], like: Any = None) -> list[JsonRequest]:
        """The ids of a batch that did not go as it was: in full batches again."""
        return list(self.add(((id_, False) for id_ in ids), like=like))

    def end(self) -> list[JsonRequest]:
        """The feed has ended: what waits goes, and from now on nothing waits."""
        self.feeding = False
        return list(self.add(()))


async def batch_requests(
    run: Run, worklist: Worklist, crawler: Crawler
) -> AsyncIterator[JsonRequest]:
    """The batches of ids that need a request, as the downloader takes them: from the
    shared queue of a distributed job (``run.shared``), or from ``worklist``'s groups of
    the job's ids (each named by its number: where its batches begin)."""
    batches = run.batches
    assert batches is not None
    batches.feeding = True
    if run.shared:
        group: list[tuple[str, bool]] = []
        async for id_, state in run.shared.feed():
            group.append((id_, state is None))
            if len(group) >= batches.sizer.size:
                for request in batches.add(group, by_content=True):
                    yield request
                group = []
        for request in batches.add(group, by_content=True):
            yield request
    else:
        async for number, todo in worklist.feed_groups(crawler, batches.requests.sizer.configured):
            pairs = [(id_, state is None) for id_, state in todo]
            for request in batches.add(pairs, place=str(number)):
                yield request
    # A batch still out may come back to be cut, its ids to wait with others: what waits
    # goes once none is out.
    sleep = Waiter(lambda: crawl_is_stopping(crawler)).sleep
    try:
        while busy(crawler):
            await sleep(STEP)
    except Stopping:
        return  # the ids that wait have no outcome: the next run asks for them
    for request in batches.end():
        yield request


def busy(crawler: Crawler) -> bool:
    """Whether a request is queued, downloading, or its answer being read."""
    engine = crawler.engine
    if engine is None or engine.scraper.slot is None:
        return False
    scheduler = engine.scheduler
    pending = scheduler is not None and scheduler.has_pending_requests()
    return bool(engine.downloader.active) or not engine.scraper.slot.is_idle() or pending
