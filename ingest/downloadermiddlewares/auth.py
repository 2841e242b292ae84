"""The API token: added to each request as it leaves, and a refusal of it ends the crawl."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from scrapy.utils.response import response_status_message

from ingest.api import check_api_url, origin, origin_of
from ingest.endings import UNAUTHORIZED, end_crawl
from ingest.masking import fingerprint
from ingest.ratelimit.quota import quota_of, rate_limited
from ingest.stopping import give_back

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
    """

    def __init__(
        self,
        crawler: Crawler,
        token: str | None,
        api_origin: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.crawler, self.clock = crawler, clock
        self.header = f"Bearer {token}".encode() if token else None
        self.token_name = f"API_TOKEN {fingerprint(token)}…" if token else "no API_TOKEN set"
        self.api_origin = api_origin
        self.accepted = False
        self.refused = False

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        token = crawler.settings.get("API_TOKEN")
        template = check_api_url(crawler.settings.get("API_URL"))
        return cls(crawler, str(token) if token else None, origin_of(template))

    def process_request(self, request: Request) -> None:
        if self.header is not None and origin(request) == self.api_origin:
            request.headers[b"Authorization"] = self.header

    def process_response(self, request: Request, response: Response) -> Response:
        request.headers.pop(b"Authorization", None)
        if origin(request) != self.api_origin:
            return response
        if self._refuses_token(response):
            if not self.refused:
                self.refused = True
                logger.error(
                    "%s answered %s (%s): stopping; no id was marked, and the same command "
                    "with a working token continues.",
                    self.api_origin, response_status_message(response.status), self.token_name,
                )  # fmt: skip
                end_crawl(self.crawler, UNAUTHORIZED)
            raise give_back(self.crawler, request)
        if response.status < 400 or response.status in (404, 410):
            self.accepted = True
        return response

    def process_exception(self, request: Request, exception: Exception) -> None:
        request.headers.pop(b"Authorization", None)

    def _refuses_token(self, response: Response) -> bool:
        if response.status == 401:
            return True
        if response.status != 403 or self.accepted or b"Retry-After" in response.headers:
            return False
        return not rate_limited(403, quota_of(response.headers, now=self.clock()))
