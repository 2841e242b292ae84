"""Many ids in one request: the batch endpoint's settings checked, and ids cut into requests."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from ingest.config.values import ConfigError, parse_int
from ingest.fetching.urls import origin_of

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

PLACEHOLDER = "{ids}"
METHODS = ("GET", "POST")
# Request meta: the ids a batch asks for.
IDS = "ids"


def batch_size(settings: BaseSettings) -> int:
    """``API_BATCH_SIZE``: the most ids a request carries (1: one id a request)."""
    return parse_int("API_BATCH_SIZE", settings.get("API_BATCH_SIZE"), least=1)


@dataclass(frozen=True)
class BatchSpec:
    """How to ask for many ids at once: ``API_BATCH_*``, checked; where its answer's items
    are (``API_BATCH_ITEMS``) and which field names each one's id (``API_ITEM_ID``)."""

    size: int
    url: str
    method: str = "GET"
    body: str | None = None
    separator: str = ","
    items: tuple[str, ...] | None = None
    id_field: str = "id"
    max_url: int = 8000

    @classmethod
    def from_settings(
        cls,
        settings: BaseSettings,
        *,
        api_url: str,
        items: tuple[str, ...] | None,
        id_field: str,
    ) -> BatchSpec | None:
        """The batch endpoint, or None when ``API_BATCH_SIZE`` is 1 (one id a request)."""
        size = batch_size(settings)
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
        if origin_of(url) != origin_of(api_url):
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
