"""A listing's ids fetched by ``API_URL`` (``-a details=1``): which listed ids need a request,
read from the table the pages commit them to, and fed to the crawl as pages commit."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

from ingest.fetching.ids import CHUNK
from ingest.fetching.worklist import as_taken
from ingest.items import FAILED
from ingest.stopping.waiting import Waiter, crawl_is_stopping

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.crawler import Crawler

    from ingest.listing.pages import PagesOut
    from ingest.storage.base import Listed
    from ingest.storage.ledger import Ledger

STEP = 0.1  # seconds between looks for a page's commit, while pages are out


def needs_fetch(state: str | None, fetched_at: float, stale_before: float) -> bool:
    """An id with no outcome, a failed one, or one whose outcome is older than its listing
    asks (a refresh, or a `since` pass, lists what must be fetched again)."""
    return state is None or state == FAILED or fetched_at < stale_before


def lost(state: str | None, fetched_at: float, stale_before: float) -> bool:
    """No outcome (or none as recent as asked): what a stop leaves. Failed ids are not lost."""
    return state is None or fetched_at < stale_before


def needing(
    chunk: list[tuple[Listed, Any]], wanted: Callable[[str | None, float, float], bool]
) -> list[tuple[str, str | None]]:
    """(id, state) of the listed ids of ``chunk`` (as :meth:`ListedIds.chunks` reads
    them) that ``wanted`` picks."""
    picked = []
    for row, found in chunk:
        state, fetched_at = found or (None, 0.0)
        if wanted(state, fetched_at, row.stale_before):
            picked.append((row.id, state))
    return picked


class ListedIds:
    """The ids a listing listed with details (table ``listed``, committed with each page
    and the listing's position after it), and which of them need a request.

    The worklist of the list spider's run: reconciliation at idle looks here for listed
    ids left without an outcome, and conditional requests read the stored validators
    through ``ledger``.
    """

    def __init__(
        self, key: str, ledger: Ledger, count: Callable[..., object], *, relisting: bool = False
    ) -> None:
        self.key, self.ledger, self.count = key, ledger, count
        self.relisting = relisting  # refresh or since: ids listed again are fetched again

    def needs_fetch(self, state: str | None, fetched_at: float = 0.0) -> bool:
        """Whether a listed id still needs the request another worker queued for it: one
        with no outcome, or a failed one; when the listing is walked again, any."""
        return self.relisting or state is None or state == FAILED

    async def states(self, ids: list[str]) -> dict[str, tuple[str, float]]:
        return await self.ledger.states(ids)

    async def chunks(self, after: int = 0) -> AsyncIterator[tuple[int, list[tuple[Listed, Any]]]]:
        """(place of the last, [(listed id, (state, fetched_at) or None)]), a chunk at a
        time, from the place ``after`` on; ends at the last id listed so far."""
        while rows := await self.ledger.listed(self.key, after, CHUNK):
            after = rows[-1].place
            states = await self.states([row.id for row in rows])
            yield after, [(row, states.get(row.id)) for row in rows]

    async def todo(
        self, *, lost_only: bool = False
    ) -> AsyncGenerator[tuple[str, str | None], None]:
        """(id, state) for every listed id that needs a request (``lost_only``: that has
        no outcome, as the look at idle asks)."""
        async for _, chunk in self.chunks():
            for pair in needing(chunk, lost if lost_only else needs_fetch):
                yield pair


class DetailsFeed:
    """Requests for the listed ids that need one, in the order they were listed: first
    those an earlier run listed and did not finish, then each page's as it is committed.

    It reads the table from its start (or a place in it) and then waits for the next page's
    commit, for as long as listing pages are out (``pages``); it ends when none is, or when
    ``sleep`` raises :class:`~ingest.stopping.waiting.Stopping` (the crawl stops). Each
    listed id is read once per run, so an id is requested once, however pages and commits
    interleave.
    """

    def __init__(
        self,
        listed: ListedIds,
        requests_for: Callable[[list[str]], Iterator[Request]],
        sleep: Callable[[float], Awaitable[None]],
        pages: PagesOut,
    ) -> None:
        self.listed, self.requests_for, self.sleep, self.pages = listed, requests_for, sleep, pages
        self.fed = 0
        self.reached = 0  # the place in the listing up to which every id was asked for

    @classmethod
    def of_crawl(
        cls,
        crawler: Crawler,
        listed: ListedIds,
        requests_for: Callable[[list[str]], Iterator[Request]],
        pages: PagesOut,
    ) -> DetailsFeed:
        """The feed of ``listed`` in a crawl, stopped with the crawl."""
        return cls(listed, requests_for, Waiter(lambda: crawl_is_stopping(crawler)).sleep, pages)

    async def requests(self, crawler: Crawler) -> AsyncIterator[Request]:
        """The requests, as the downloader takes them (the queue stays short)."""
        async for request in as_taken(crawler, self.listed_requests()):
            yield request

    async def listed_requests(self, after: int = 0) -> AsyncIterator[Request]:
        """The requests for the ids listed after the place ``after``, as pages commit them."""
        while True:
            seen = self.pages.settled
            async for place, chunk in self.listed.chunks(after):
                after = place
                todo = [id_ for id_, _ in needing(chunk, needs_fetch)]
                self.listed.count("ids/skipped", len(chunk) - len(todo))
                self.listed.count("ids/scheduled", len(todo))
                self.fed += len(todo)
                for request in self.requests_for(todo):
                    yield request
                self.reached = place
            if self.pages.out <= 0:
                return
            while self.pages.settled == seen:
                await self.sleep(STEP)
