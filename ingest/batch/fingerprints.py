"""Batches named by their place in the job, so that JOBDIR does not queue one twice."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from scrapy.utils.request import RequestFingerprinter

if TYPE_CHECKING:
    from typing import Self

    from scrapy import Request
    from scrapy.crawler import Crawler

# Request meta: the place of a batch in the job's ids.
CHUNK = "batch_chunk"


class BatchFingerprinter:
    """Scrapy's request fingerprints, except for the batches the job's ids were cut
    into: those are named by their place in the job, so that with JOBDIR a rerun does
    not queue again a batch an earlier run queued, even when it holds fewer ids now."""

    def __init__(self, crawler: Crawler | None = None) -> None:
        self.default = RequestFingerprinter(crawler)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    def fingerprint(self, request: Request) -> bytes:
        chunk = request.meta.get(CHUNK)
        if chunk is None:
            return self.default.fingerprint(request)
        return hashlib.sha1(f"batch {chunk}".encode(), usedforsecurity=False).digest()
