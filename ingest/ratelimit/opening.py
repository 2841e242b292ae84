"""The first request to an API goes alone: it also opens the connection."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ingest.stopping import Stopping

if TYPE_CHECKING:
    from collections.abc import Callable

    from scrapy import Request


class Opening:
    """Until the first request to an API is answered, the others wait for it.

    It also opens the connection (TCP, TLS), so it reaches the server later than a
    request on a warm connection: perhaps later than the next one's slot, which a
    bucket with no burst would see as two requests too close together.
    """

    def __init__(self, is_stopping: Callable[[], bool], step: float = 0.25) -> None:
        self.is_stopping, self.step = is_stopping, step
        self._openers: dict[str, tuple[Request, asyncio.Future[None]]] = {}

    async def wait(self, key: str, request: Request) -> None:
        """Return at once for the first request to ``key``; the others wait until it is
        answered (or goes back). Raises :class:`Stopping` if the crawl stops meanwhile."""
        if key not in self._openers:
            self._openers[key] = (request, asyncio.get_running_loop().create_future())
            return
        opener, opened = self._openers[key]
        while not opened.done() and request is not opener:
            if self.is_stopping():
                raise Stopping(0.0)
            await asyncio.wait([opened], timeout=self.step)

    def opened(self, key: str, by: Request | None = None) -> None:
        """An answer came (``by`` None), or the first request (``by``) failed or went
        back to the queue: the requests waiting for it go on."""
        opener, opened = self._openers.get(key, (None, None))
        if opened is None or opened.done() or (by is not None and by is not opener):
            return
        opened.set_result(None)
