"""Requests for ids: one by ``API_URL`` or a batch by ``API_BATCH_URL``; the ids each asks for."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from scrapy.http import JsonRequest

from ingest.batch.fingerprints import CHUNK
from ingest.batch.spec import IDS
from ingest.fetching.urls import url_for

if TYPE_CHECKING:
    from ingest.batch.sizer import Sizer
    from ingest.batch.spec import BatchSpec

# Request meta: the id a request asks for, and the run that made it.
ID, RUN = "id", "run"


def ids_of(request: Any) -> list[str]:
    """The ids a request asks for."""
    ids = request.meta.get(IDS)
    return [request.meta[ID]] if ids is None else ids


class IdRequests:
    """Makes the requests for ids, each carrying the run that made it, with the spider's
    callbacks (methods of the spider, so that JOBDIR can keep them): ``parse`` for one id,
    ``parse_batch`` for a batch, ``failed`` when no answer came."""

    def __init__(
        self,
        template: str,
        batching: BatchSpec | None,
        sizer: Sizer,
        run: str,
        *,
        parse: Callable[..., Any],
        parse_batch: Callable[..., Any],
        failed: Callable[..., Any],
    ) -> None:
        self.template, self.batching, self.sizer, self.run = template, batching, sizer, run
        self.parse, self.parse_batch, self.failed = parse, parse_batch, failed

    def request_for(self, id_: str, *, dont_filter: bool = False) -> JsonRequest:
        return JsonRequest(
            url_for(self.template, id_),
            callback=self.parse,
            errback=self.failed,
            meta={ID: id_, RUN: self.run},
            dont_filter=dont_filter,
        )

    def batch_request(
        self, ids: list[str], *, chunk: str | None = None, like: Any = None, filtered: bool = False
    ) -> JsonRequest:
        """A batch of ``ids`` (``chunk``: its place in the job, which names it for the
        duplicate filter; else, ``filtered``, the filter knows it by what it asks, as a
        request for one id; ``like``: the request it replaces, whose priority it keeps)."""
        spec = self.batching
        assert spec is not None
        meta: dict[str, Any] = {IDS: ids, RUN: self.run}
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
            dont_filter=chunk is None and not filtered,
        )

    def requests_for(self, ids: list[str]) -> Iterator[JsonRequest]:
        """Requests for these ids (found lost, or left of a request): in batches if batching."""
        if self.batching is None:
            for id_ in ids:
                yield self.request_for(id_, dont_filter=True)
            return
        for part in self.batching.parts(ids, self.sizer.size):
            yield self.batch_request(part)
