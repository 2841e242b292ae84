"""The ``api`` spider: ids in, one outcome per id out."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from itertools import islice
from typing import TYPE_CHECKING, Any

from scrapy import Spider, signals
from scrapy.exceptions import IgnoreRequest
from scrapy.http import JsonRequest, TextResponse
from scrapy.utils.response import response_status_message

from ingest.config import IdSource, check_api_url, id_source, parse_flag
from ingest.items import FAILED, NOT_FOUND, STORED, Outcome
from ingest.ledger import Ledger

if TYPE_CHECKING:
    from typing import Self

    from scrapy.crawler import Crawler
    from scrapy.http import Response
    from twisted.python.failure import Failure

logger = logging.getLogger(__name__)

CHUNK = 500
GONE = frozenset({404, 410})


def reject_constant(name: str) -> Any:
    """NaN and Infinity are not JSON (RFC 8259), whatever Python's json accepts."""
    raise ValueError(f"{name} is not a JSON value")


def chunks(ids: Iterable[str], size: int) -> Iterator[list[str]]:
    iterator = iter(ids)
    while chunk := list(islice(iterator, size)):
        yield chunk


class ApiSpider(Spider):
    """Fetches ``API_URL`` for every id of ``-a ids=…`` or ``-a ids_file=…``.

    Ids already ``stored`` or ``not_found`` in the database are skipped without a
    request (``-a refresh=1`` fetches them again); ``failed`` ids are tried again,
    ``invalid`` ones only with refresh.
    """

    name = "api"
    custom_settings = {"HTTPERROR_ALLOW_ALL": True}

    url_template: str
    database_url: str

    def __init__(
        self,
        ids: str | None = None,
        ids_file: str | None = None,
        refresh: str | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.ids: IdSource = id_source({"ids": ids, "ids_file": ids_file})
        self.refresh = parse_flag("refresh", refresh)
        self.clock: Callable[[], float] = time.time
        self.skipped = 0

    @classmethod
    def from_crawler(cls, crawler: Crawler, *args: Any, **kwargs: Any) -> Self:
        spider = super().from_crawler(crawler, *args, **kwargs)
        spider.url_template = check_api_url(crawler.settings.get("API_URL"))
        spider.database_url = crawler.settings.get("DATABASE_URL")
        return spider

    def needs_fetch(self, state: str | None) -> bool:
        if state is None or state == FAILED:
            return True
        return self.refresh

    async def start(self) -> AsyncIterator[Any]:
        ledger = Ledger.from_url(self.database_url)
        await ledger.open()
        try:
            for chunk in chunks(self.ids, CHUNK):
                states = await ledger.states(chunk)
                for id_ in chunk:
                    state = states.get(id_, (None, 0.0))[0]
                    if not self.needs_fetch(state):
                        self.skipped += 1
                        self.crawler.stats.inc_value("ids/skipped")
                        continue
                    await self._backlog_room()
                    self.crawler.stats.inc_value("ids/scheduled")
                    yield self.request_for(id_, seen_before=state is not None)
        finally:
            await ledger.close()

    async def _backlog_room(self) -> None:
        """Yield ids only as the downloader takes them: the queue stays short, and
        a million ids never become a million requests in memory."""
        engine = self.crawler.engine
        while engine is not None and engine.needs_backout() and engine.running:
            await self.crawler.signals.wait_for(signals.scheduler_empty)

    def request_for(self, id_: str, *, seen_before: bool = False) -> JsonRequest:
        return JsonRequest(
            self.url_template.format(id=id_),
            callback=self.parse,
            errback=self.failed,
            meta={"id": id_},
            dont_filter=seen_before,
        )

    def parse(self, response: Response) -> Iterator[Outcome]:
        id_ = response.meta["id"]
        outcome = Outcome(id_, FAILED, response.url, response.status, fetched_at=self.clock())
        if response.status in GONE:
            outcome.state, outcome.reason = NOT_FOUND, response_status_message(response.status)
        elif 200 <= response.status < 300:
            try:
                outcome.data = response.body.decode(
                    response.encoding if isinstance(response, TextResponse) else "utf-8"
                )
                outcome.payload = json.loads(outcome.data, parse_constant=reject_constant)
            except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError included
                kind = (response.headers.get("Content-Type") or b"?").decode("latin-1")
                outcome.data, outcome.reason = None, f"not JSON ({kind}): {exc}"
            else:
                outcome.state = STORED
        else:
            outcome.reason = response_status_message(response.status)
            retries = response.meta.get("retry_times")
            if retries:
                outcome.reason += f" (after {retries} retries)"
        yield outcome

    def failed(self, failure: Failure) -> Iterator[Outcome]:
        if failure.check(IgnoreRequest):
            return
        request = failure.request  # type: ignore[attr-defined]
        exc = failure.value
        reason = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
        retries = request.meta.get("retry_times")
        if retries:
            reason += f" (after {retries} retries)"
        yield Outcome(
            request.meta["id"], FAILED, request.url, None, reason=reason, fetched_at=self.clock()
        )
