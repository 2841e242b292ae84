"""The API keys: the token added to each request as it leaves; a refused key retired."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from scrapy.utils.response import response_status_message

from ingest.config.keys import KEY_META, Key
from ingest.fetching.urls import origin
from ingest.job import Job
from ingest.ratelimit.dialects import hear
from ingest.signals import key_rejected
from ingest.stopping.endings import UNAUTHORIZED, end_crawl, every_key_rejected
from ingest.stopping.waiting import give_back

if TYPE_CHECKING:
    from typing import Self

    from scrapy import Request
    from scrapy.crawler import Crawler
    from scrapy.http import Response

logger = logging.getLogger(__name__)


class ApiTokenMiddleware:
    """Adds ``Authorization: Bearer …`` to API requests as they leave, and only then;
    stops the crawl when the API refuses the token.

    The header is removed again when the answer comes back, so the retried,
    redirected or returned copies of a request never carry the token to the
    scheduler, JOBDIR or Redis. A 401, or a 403 with no sign of rate limiting before
    any answer got through, means no request can succeed: every id would end
    ``failed`` and the quota be spent for nothing. The crawl stops instead, the
    refused requests go back to the queue, and no id is marked.

    With several keys, the rate limiter picks each request's key (``meta`` names it by
    its fingerprint); without the rate limiter, they take turns. A refused key is
    retired with one warning and its request goes back to be sent on another; the
    crawl stops only when every key has been refused.
    """

    def __init__(
        self,
        crawler: Crawler,
        keys: tuple[Key, ...],
        api_origin: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.crawler, self.clock = crawler, clock
        self.keys = {key.fingerprint: key for key in keys}
        self.headers = {key.fingerprint: f"Bearer {key.token}".encode() for key in keys}
        self.several = len(keys) > 1
        self.token_name = f"API_TOKEN {keys[0].fingerprint}…" if keys else "no API_TOKEN set"
        self.api_origin = api_origin
        self.accepted: set[str | None] = set()
        self.rejected: set[str] = set()
        self.refused = False
        self._turn = 0

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        job = Job.of(crawler)
        return cls(crawler, job.keys, job.origin)

    def process_request(self, request: Request) -> None:
        if not self.headers or origin(request) != self.api_origin:
            return
        fingerprint = request.meta.get(KEY_META)
        if fingerprint not in self.headers or fingerprint in self.rejected:
            fingerprint = self._take_turn(request)
        request.headers[b"Authorization"] = self.headers[fingerprint]

    def _take_turn(self, request: Request) -> str:
        """The next key not refused, for a request no rate limiter routed."""
        live = [fp for fp in self.headers if fp not in self.rejected]
        if not live:
            raise give_back(self.crawler, request)
        self._turn = (self._turn + 1) % len(live)
        request.meta[KEY_META] = live[self._turn]
        return live[self._turn]

    def process_response(self, request: Request, response: Response) -> Response:
        request.headers.pop(b"Authorization", None)
        if origin(request) != self.api_origin:
            return response
        fingerprint = request.meta.get(KEY_META) if self.several else None
        if self._refuses_token(response, fingerprint):
            if fingerprint is not None:
                self._reject(fingerprint, response)
            elif not self.refused:
                self.refused = True
                logger.error(
                    "%s answered %s (%s): stopping; no id was marked, and the same command "
                    "with a working token continues.",
                    self.api_origin, response_status_message(response.status), self.token_name,
                )  # fmt: skip
                end_crawl(self.crawler, UNAUTHORIZED)
            raise give_back(self.crawler, request)
        if response.status < 400 or response.status in (404, 410):
            self.accepted.add(fingerprint)
        return response

    def _reject(self, fingerprint: str, response: Response) -> None:
        """Retire a key the API refused; stop when it was the last."""
        key = self.keys.get(fingerprint)
        if key is None or fingerprint in self.rejected:
            return
        self.rejected.add(fingerprint)
        logger.warning("%s rejected: %s", key, response_status_message(response.status))
        self.crawler.signals.send_catch_log(
            signal=key_rejected, api=self.api_origin, fingerprint=fingerprint
        )
        if len(self.rejected) == len(self.keys):
            every_key_rejected(self.crawler, self.api_origin, len(self.keys))

    def process_exception(self, request: Request, exception: Exception) -> None:
        request.headers.pop(b"Authorization", None)

    def _refuses_token(self, response: Response, fingerprint: str | None) -> bool:
        """A 401; or a 403, before any answer got through on that key, that is no refusal
        for the rate (GitHub's, with nothing remaining or a "rate limit" message; one that
        names a wait; Salesforce's ``REQUEST_LIMIT_EXCEEDED``: see
        :func:`ingest.ratelimit.dialects.hear`)."""
        if response.status == 401:
            return True
        if response.status != 403 or fingerprint in self.accepted:
            return False
        return not hear(403, response.headers, response.body, now=self.clock()).refused
