"""Fetching ids by ``API_URL``, one a request or many (``API_BATCH_SIZE``): the requests,
and each answer read into one outcome per id. Shared by the ``api`` and ``list`` spiders."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from scrapy import Spider
from scrapy.exceptions import IgnoreRequest
from scrapy.http import JsonRequest
from scrapy.utils.response import response_status_message

from ingest import answers
from ingest.api import check_api_url, url_for
from ingest.batches import CHUNK, IDS, TOO_BIG, BatchSpec, Sizer
from ingest.endings import BAD_SETTING, end_crawl
from ingest.items import FAILED, NOT_FOUND, STORED, UNCHANGED, Outcome

if TYPE_CHECKING:
    from typing import Self

    from scrapy.crawler import Crawler
    from scrapy.http import Response
    from twisted.python.failure import Failure

logger = logging.getLogger(__name__)

GONE = frozenset({404, 410})


class IdFetching(Spider):
    """A spider that fetches ids: requests by ``API_URL`` (or, with ``API_BATCH_SIZE``
    above 1, in batches by ``API_BATCH_URL``: :mod:`ingest.batches`), and their answers
    read into one :class:`Outcome` per id. Middlewares (skip-done, batch size) and
    reconciliation call :meth:`ids_of`, :meth:`requests_for` and :meth:`batch_request`.
    """

    url_template: str
    batching: BatchSpec | None = None
    sizer: Sizer
    run: str
    clock: Callable[[], float]
    batch_answered = False

    @classmethod
    def update_settings(cls, settings: Any) -> None:
        super().update_settings(settings)
        try:
            size = int(settings.get("API_BATCH_SIZE") or 1)
        except ValueError:
            return  # refused, by name, before the crawl starts
        # The items of one answer are processed concurrently, up to CONCURRENT_ITEMS:
        # the outcomes of a batch then join the same transaction.
        settings.set("CONCURRENT_ITEMS", size, priority="spider")

    @classmethod
    def from_crawler(cls, crawler: Crawler, *args: Any, **kwargs: Any) -> Self:
        spider = super().from_crawler(crawler, *args, **kwargs)
        s = crawler.settings
        spider.url_template = check_api_url(s.get("API_URL"))
        spider.batching = BatchSpec.from_settings(s)
        size = spider.batching.size if spider.batching else 1
        spider.sizer = Sizer(size, on_settled=spider.settled)
        return spider

    def ids_of(self, request: Any) -> list[str]:
        """The ids a request asks for."""
        ids = request.meta.get(IDS)
        return [request.meta["id"]] if ids is None else ids

    def requests_for(self, ids: list[str]) -> Iterator[JsonRequest]:
        """Requests for these ids (found lost, or left of a request): in batches if batching."""
        if self.batching is None:
            for id_ in ids:
                yield self.request_for(id_, dont_filter=True)
            return
        for part in self.batching.parts(ids, self.sizer.size):
            yield self.batch_request(part)

    def batch_request(
        self, ids: list[str], *, chunk: str | None = None, like: Any = None
    ) -> JsonRequest:
        spec = self.batching
        assert spec is not None
        meta: dict[str, Any] = {IDS: ids, "run": self.run}
        if chunk is not None:
            meta[CHUNK] = chunk
        return JsonRequest(
            spec.url_for(ids),
            method=spec.method,
            body=spec.body_for(ids),
            callback=self.parse_batch,
            errback=self.failed,
            meta=meta,
            priority=like.priority if like is not None else 0,
            dont_filter=chunk is None,
        )

    def settled(self, size: int) -> None:
        self.crawler.stats.set_value("batch/size", size)
        state = getattr(self, "state", None)
        if state is not None:
            state["batch_size"] = size
        if self.batching is not None and size < self.batching.size:
            logger.info("Batches of %d ids from now on: the API refused larger ones", size)

    def request_for(self, id_: str, *, dont_filter: bool = False) -> JsonRequest:
        return JsonRequest(
            url_for(self.url_template, id_),
            callback=self.parse,
            errback=self.failed,
            meta={"id": id_, "run": self.run},
            dont_filter=dont_filter,
        )

    def parse(self, response: Response) -> Iterator[Outcome]:
        outcome = Outcome(
            response.meta["id"], FAILED, response.url, response.status, fetched_at=self.clock()
        )
        if response.status in GONE:
            outcome.state, outcome.reason = NOT_FOUND, response_status_message(response.status)
        elif response.status == 304:  # asked with the stored validators: the row stands
            outcome.state = UNCHANGED
        elif 200 <= response.status < 300:
            try:
                outcome.data = answers.text_of(response)
                outcome.payload = answers.parse_json(outcome.data)
            except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError included
                outcome.data, outcome.reason = None, answers.not_json(response, exc)
            else:
                outcome.state = STORED
                outcome.etag, outcome.last_modified = answers.validators_of(response)
        else:
            outcome.reason = answers.refusal(response)
        yield outcome

    def parse_batch(self, response: Response) -> Iterator[Outcome | JsonRequest]:
        """One outcome per id asked for: stored (to be validated) if the answer has its
        item, not_found if not; a batch refused as too big is asked for in halves."""
        ids, now = response.meta[IDS], self.clock()
        status, url = response.status, response.url
        if status in TOO_BIG and len(ids) > 1:
            self.crawler.stats.inc_value("batch/split")
            half = len(ids) // 2
            yield self.batch_request(ids[:half], like=response.request)
            yield self.batch_request(ids[half:], like=response.request)
            return
        answer = self.batch_answer(response, ids)
        if answer is None:
            return  # a wrong setting: the crawl stops, nothing marked
        if isinstance(answer, str):
            for id_ in ids:
                yield Outcome(id_, FAILED, url, status, reason=answer, fetched_at=now)
            return
        self.batch_answered = True
        self.count_batch(answer.unexpected, answer.repeated, len(ids))
        for id_, value, raw in answer.found:
            yield Outcome(id_, STORED, url, status, data=raw, payload=value, fetched_at=now)
        reason = f"not in the answer to a batch of {len(ids)} ids"
        for id_ in answer.missing:
            yield Outcome(id_, NOT_FOUND, url, status, reason=reason, fetched_at=now)

    def batch_answer(self, response: Response, ids: list[str]) -> answers.BatchAnswer | str | None:
        """The answer to a batch read; or why every id of it failed; or None when the
        first answer shows API_BATCH_ITEMS wrong (the crawl then stops)."""
        spec = self.batching
        assert spec is not None
        if not 200 <= response.status < 300:
            return answers.refusal(response, with_text=True)
        try:
            return answers.read_batch(answers.text_of(response), ids, spec.items, spec.id_field)
        except answers.NoItems as exc:
            if not self.batch_answered:
                # The setting is wrong, not this answer: stop before every id fails.
                setting = ".".join(spec.items) if spec.items else None
                logger.error("API_BATCH_ITEMS=%r: the first batch's answer has %s", setting, exc)
                end_crawl(self.crawler, BAD_SETTING)
                return None
            return f"no items in the answer at {answers.describe(spec.items)}"
        except ValueError as exc:  # NotJson, UnicodeDecodeError
            return answers.not_json(response, exc)

    def count_batch(self, unexpected: list[str], repeated: int, asked: int) -> None:
        stats = self.crawler.stats
        stats.inc_value("batch/requests_answered")
        stats.inc_value("batch/ids_answered", asked)
        if unexpected:
            if not stats.get_value("batch/unexpected"):
                logger.warning(
                    "A batch's answer holds items of ids not asked for (%s): counted in "
                    "batch/unexpected, not stored", ", ".join(unexpected[:5]),
                )  # fmt: skip
            stats.inc_value("batch/unexpected", len(unexpected))
        if repeated:
            stats.inc_value("batch/repeated", repeated)

    def failed(self, failure: Failure) -> Iterator[Outcome]:
        if failure.check(IgnoreRequest):
            return
        request = failure.request  # type: ignore[attr-defined]
        reason = answers.failure_reason(failure)
        for id_ in self.ids_of(request):
            yield Outcome(id_, FAILED, request.url, None, reason=reason, fetched_at=self.clock())
