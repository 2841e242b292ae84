"""Many ids in one request: the batch endpoint's settings, and the batch size that works."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from scrapy.utils.request import RequestFingerprinter

from ingest.answers import check_path
from ingest.api import origin_of
from ingest.config import ConfigError, parse_int

if TYPE_CHECKING:
    from typing import Self

    from scrapy import Request
    from scrapy.crawler import Crawler
    from scrapy.settings import BaseSettings

logger = logging.getLogger(__name__)

PLACEHOLDER = "{ids}"
METHODS = ("GET", "POST")
# What a server answers to a request that carries too many ids, or too long a URL.
TOO_BIG = frozenset({400, 413, 414})
# Request meta: the ids a batch asks for, and the place of a batch in the job's ids.
IDS, CHUNK = "ids", "batch_chunk"


@dataclass(frozen=True)
class BatchSpec:
    """How to ask for many ids at once: ``API_BATCH_*`` and ``API_ITEM_ID``, checked."""

    size: int
    url: str
    method: str = "GET"
    body: str | None = None
    separator: str = ","
    items: tuple[str, ...] | None = None
    id_field: str = "id"
    max_url: int = 8000

    @classmethod
    def from_settings(cls, settings: BaseSettings) -> BatchSpec | None:
        """The batch endpoint, or None when ``API_BATCH_SIZE`` is 1 (one id a request)."""
        size = parse_int("API_BATCH_SIZE", settings.get("API_BATCH_SIZE"), least=1)
        items = check_path("API_BATCH_ITEMS", settings.get("API_BATCH_ITEMS"))
        id_field = str(settings.get("API_ITEM_ID") or "")
        if not id_field.strip():
            raise ConfigError(
                f"API_ITEM_ID must name the field holding each item's id, got {id_field!r}"
            )
        if size == 1:
            return None
        method = str(settings.get("API_BATCH_METHOD") or "GET").upper()
        if method not in METHODS:
            raise ConfigError(
                f"API_BATCH_METHOD must be GET or POST, got {settings.get('API_BATCH_METHOD')!r}"
            )
        url = str(settings.get("API_BATCH_URL") or "")
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ConfigError(
                f"API_BATCH_SIZE={size} needs API_BATCH_URL, an http(s) URL"
                f"{' with {ids}' if method == 'GET' else ''}, got {url!r}"
            )
        separator = str(settings.get("API_BATCH_SEPARATOR") or "")
        if not separator:
            raise ConfigError(f"API_BATCH_SEPARATOR must not be empty, got {separator!r}")
        body = None
        if method == "GET":
            if url.count(PLACEHOLDER) != 1:
                raise ConfigError(
                    f"API_BATCH_URL must contain {PLACEHOLDER} exactly once, where the ids go, "
                    f"got {url!r}"
                )
        else:
            if PLACEHOLDER in url:
                raise ConfigError(
                    f"API_BATCH_URL of a POST batch takes no {PLACEHOLDER} (the ids go in "
                    f"API_BATCH_BODY), got {url!r}"
                )
            body = check_body(settings.get("API_BATCH_BODY"))
        if origin_of(url) != origin_of(str(settings.get("API_URL") or "")):
            raise ConfigError(
                f"API_BATCH_URL must be on API_URL's host, whose rate limit it shares, got {url!r}"
            )
        max_url = parse_int("API_BATCH_MAX_URL", settings.get("API_BATCH_MAX_URL"), least=64)
        return cls(size, url, method, body, separator, items, id_field, max_url)

    def url_for(self, ids: Iterable[str]) -> str:
        if self.method != "GET":
            return self.url
        joined = self.separator.join(quote(id_, safe="") for id_ in ids)
        return self.url.replace(PLACEHOLDER, joined)

    def body_for(self, ids: list[str]) -> bytes | None:
        if self.body is None:
            return None
        array = json.dumps(ids, ensure_ascii=False)
        return self.body.replace(json.dumps(PLACEHOLDER), array).encode()

    def parts(self, ids: list[str], size: int) -> list[list[str]]:
        """``ids`` cut into requests of at most ``size`` ids, each URL within ``max_url``
        bytes (an id too long for it alone still goes, alone)."""
        if self.method != "GET":
            return [ids[i : i + size] for i in range(0, len(ids), size)]
        room = self.max_url - len(self.url) + len(PLACEHOLDER)
        parts: list[list[str]] = []
        part: list[str] = []
        length = 0
        for id_ in ids:
            more = len(quote(id_, safe="")) + (len(self.separator) if part else 0)
            if part and (len(part) >= size or length + more > room):
                parts.append(part)
                part, length, more = [], 0, more - len(self.separator)
            part.append(id_)
            length += more
        if part:
            parts.append(part)
        return parts


def check_body(value: Any) -> str:
    """``API_BATCH_BODY``: JSON where the string ``"{ids}"`` stands, once, for the ids."""
    text = str(value or "")
    try:
        template = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"API_BATCH_BODY must be JSON, got {text!r} ({exc})") from None
    canonical = json.dumps(template, ensure_ascii=False)
    if canonical.count(json.dumps(PLACEHOLDER)) != 1:
        raise ConfigError(
            f'API_BATCH_BODY must hold the string "{PLACEHOLDER}" once, where the ids go, '
            f"got {text!r}"
        )
    return canonical


class Sizer:
    """The most ids a request may carry: ``API_BATCH_SIZE``, until the server says less.

    A batch larger than any answered so far is a probe: while one is out, other batches
    that large wait for its answer (:mod:`ingest.downloadermiddlewares.batchsize`). A
    batch refused as too big (400, 413, 414) halves the size, down to what was answered
    before; the size is settled once a batch of it is answered.
    """

    def __init__(self, size: int, *, on_settled: Callable[[int], None] = lambda size: None) -> None:
        self.size, self.configured, self.on_settled = size, size, on_settled
        self.worked = 0  # the most ids a request answered so far carried
        self.probe: tuple[str, ...] | None = None

    @property
    def settled(self) -> bool:
        return self.worked >= self.size

    def settle(self, size: int) -> None:
        """Take a size that worked before (an earlier run's, from JOBDIR)."""
        self.size = self.worked = min(size, self.configured)

    def may_send(self, ids: tuple[str, ...]) -> bool:
        """Whether a batch of these ids may go now (else it waits for the probe's answer)."""
        if len(ids) <= self.worked:
            return True
        if self.probe is None or self.probe == ids:
            self.probe = ids
            return True
        return False

    def answered(self, ids: tuple[str, ...], status: int) -> None:
        """Learn from an answer to a batch of these ids."""
        if self.probe == ids:
            self.probe = None
        n, settled = len(ids), self.settled
        if 200 <= status < 300 and n > self.worked:
            self.worked = n
        elif status in TOO_BIG and n > max(1, self.worked) and n // 2 < self.size:
            self.size = max(self.worked, n // 2)
            logger.info("The API refused %d ids in a request (%d): trying %d", n, status, self.size)
        if self.settled and not settled:
            self.on_settled(self.size)

    def released(self, ids: tuple[str, ...]) -> None:
        """The probe got no answer (an error): another batch may probe."""
        if self.probe == ids:
            self.probe = None


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
