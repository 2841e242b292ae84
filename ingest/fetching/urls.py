"""The API's addresses: the URL template checked, each id's URL, the origin naming the API."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from scrapy.utils.httpobj import urlparse_cached

from ingest.config.values import ConfigError

if TYPE_CHECKING:
    from scrapy import Request


def check_api_url(value: Any) -> str:
    """The URL template: http(s), with ``{id}`` where the id goes."""
    template = str(value or "")
    parts = urlsplit(template)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ConfigError(f"API_URL must be an http(s) URL with {{id}}, got {template!r}")
    if template.count("{id}") != 1:
        raise ConfigError(
            f"API_URL must contain {{id}} exactly once, where the id goes, got {template!r}"
        )
    try:
        template.format(id="1")
    except (KeyError, IndexError, ValueError):
        raise ConfigError(f"API_URL may hold no placeholder but {{id}}, got {template!r}") from None
    return template


def url_for(template: str, id_: str) -> str:
    """The URL of one id: the id percent-encoded whole, so that ``#``, ``?``, ``/`` or
    ``%`` in it stay part of it instead of changing which item the URL names."""
    return template.format(id=quote(id_, safe=""))


def origin_of(template: str) -> str:
    """The API a URL template names: its scheme and host (what a rate limit is keyed by)."""
    parts = urlsplit(template)
    return f"{parts.scheme}://{parts.netloc}"


def origin(request: Request) -> str:
    """The API a request goes to: its scheme and host."""
    parts = urlparse_cached(request)
    return f"{parts.scheme}://{parts.netloc}"
