"""Pagination styles of a listing, RFC 8288 Link headers, where an answer puts the next page."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urljoin, urlsplit

from w3lib.url import add_or_replace_parameter

from ingest.config.values import ConfigError, check_path

STYLES = "auto, link, next:PATH, cursor:PARAM=PATH, page:PARAM or offset:PARAM"
# Where `auto` looks for the next page's URL in the body, after the Link header.
NEXT_FIELDS = (("next",), ("links", "next"), ("paging", "next"))
# Where an answer may say how many items the listing holds.
TOTAL_FIELDS = (("total",), ("total_count",), ("meta", "total"), ("paging", "total"))

_PARAM_NAME = re.compile(r"^[A-Za-z0-9_.\-\[\]]+$")


@dataclass(frozen=True, slots=True)
class Pagination:
    """How a listing goes from one page to the next.

    ``auto``/``link``/``next`` follow a URL the answer gives; ``cursor`` sends the value
    at ``path`` as ``param``; ``page``/``offset`` count ``param`` up.
    """

    style: str
    path: tuple[str, ...] | None = None
    param: str | None = None

    @property
    def numbered(self) -> bool:
        return self.style in ("page", "offset")

    def __str__(self) -> str:
        path = ".".join(self.path or ())
        if self.style == "next":
            return f"next:{path}"
        if self.style == "cursor":
            return f"cursor:{self.param}={path}"
        if self.numbered:
            return f"{self.style}:{self.param}"
        return self.style


def parse_pagination(value: Any) -> Pagination:
    """``-a pagination=…`` checked; ConfigError names it and the styles there are."""
    text = "auto" if value is None else str(value).strip()
    style, colon, rest = text.partition(":")
    bad = ConfigError(f"pagination must be {STYLES}, got {value!r}")
    if style in ("auto", "link") and not colon:
        return Pagination(style)
    if style == "next" and rest:
        return Pagination("next", path=check_path("pagination next:PATH", rest))
    if style == "cursor":
        param, equals, path = rest.partition("=")
        if not (equals and path and _PARAM_NAME.match(param)):
            raise bad
        return Pagination(
            "cursor", path=check_path("pagination cursor:PARAM=PATH", path), param=param
        )
    if style in ("page", "offset"):
        param = rest if colon else style
        if not _PARAM_NAME.match(param):
            raise bad
        return Pagination(style, param=param)
    raise bad


def check_listing_url(value: Any) -> str:
    """``-a url=…``: an http(s) URL."""
    text = "" if value is None else str(value).strip()
    if not text.lower().startswith(("http://", "https://")) or text[-3:] == "://":
        raise ConfigError(f"url must be the listing's http(s) URL, got {value!r}")
    return text


def parse_since(value: Any) -> tuple[tuple[str, ...], str] | None:
    """``-a since=FIELD:PARAM``: the field of each item, and the query parameter; None if unset."""
    if value is None or str(value).strip() == "":
        return None
    field, colon, param = str(value).strip().partition(":")
    path = check_path("since", field) if field else None
    if not (colon and path and _PARAM_NAME.match(param)):
        raise ConfigError(f"since must be FIELD:PARAM like updated_at:updated_since, got {value!r}")
    return path, param


# ---------------------------------------------------------------- RFC 8288 Link

# One link-value: <URI-Reference> then its ;-separated parameters (quoted strings may
# hold commas and semicolons).
_LINK = re.compile(r'<([^>]*)>((?:\s*;\s*[^;,="\s]+\s*(?:=\s*(?:"(?:[^"\\]|\\.)*"|[^;,\s]*))?)*)')
_LINK_PARAM = re.compile(r';\s*([^;,="\s]+)\s*(?:=\s*(?:"((?:[^"\\]|\\.)*)"|([^;,\s]*)))?')


def parse_link_header(value: str | bytes | None, base: str = "") -> dict[str, str]:
    """rel → absolute URL, from a ``Link`` header (RFC 8288); the first link of a rel wins.

    ``rel`` may name several relations (``rel="next last"``); relations compare in lower case.
    """
    if value is None:
        return {}
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    links: dict[str, str] = {}
    for link in _LINK.finditer(text):
        target = urljoin(base, link.group(1).strip())
        for param in _LINK_PARAM.finditer(link.group(2)):
            if param.group(1).lower() != "rel":
                continue
            rels = param.group(2) if param.group(2) is not None else param.group(3) or ""
            for rel in rels.replace("\\", "").lower().split():
                links.setdefault(rel, target)
            break  # RFC 8288: a second rel parameter is ignored
    return links


# ---------------------------------------------------------------- the body


def value_at(document: Any, path: tuple[str, ...]) -> Any:
    """The value at a dotted path in a parsed JSON document; None where it is absent."""
    for key in path:
        if not isinstance(document, dict):
            return None
        document = document.get(key)
    return document


def present(document: Any, path: tuple[str, ...]) -> bool:
    """Whether the key path exists in the document (its value may be null)."""
    for key in path:
        if not isinstance(document, dict) or key not in document:
            return False
        document = document[key]
    return True


def order_key(value: Any) -> tuple[int, Any]:
    """How `since` values compare: numbers as numbers, anything else as its text."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, value)
    return (1, value if isinstance(value, str) else json.dumps(value, sort_keys=True))


def url_value(value: Any, base: str) -> str | None:
    """A next-page URL as an answer may give it: a string, or an object with ``href``."""
    if isinstance(value, dict):
        value = value.get("href")
    if not isinstance(value, str) or not value.strip():
        return None
    return urljoin(base, value.strip())


def cursor_value(value: Any) -> str | None:
    """A cursor as text; None when the answer says there is no next page."""
    if value is None or value is False or isinstance(value, dict | list) or value == "":
        return None
    return str(value).lower() if isinstance(value, bool) else str(value)


def next_url(pagination: Pagination, document: Any, links: dict[str, str], base: str) -> str | None:
    """The URL of the next page that an answer names (``auto``, ``link``, ``next``)."""
    if pagination.style in ("auto", "link") and "next" in links:
        return links["next"]
    if pagination.style == "next":
        assert pagination.path is not None
        return url_value(value_at(document, pagination.path), base)
    if pagination.style == "auto":
        for path in NEXT_FIELDS:
            if found := url_value(value_at(document, path), base):
                return found
    return None


def total_of(document: Any) -> int | None:
    """How many items the listing holds, when the answer says."""
    for path in TOTAL_FIELDS:
        value = value_at(document, path)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def param_of(url: str, param: str) -> str | None:
    """The value of a query parameter in a URL (the first, if repeated)."""
    for name, value in parse_qsl(urlsplit(url).query, keep_blank_values=True):
        if name == param:
            return value
    return None


def with_param(url: str, param: str, value: object) -> str:
    return str(add_or_replace_parameter(url, param, str(value)))


def last_number(
    pagination: Pagination, *, first: int, size: int, total: int | None, last_url: str | None
) -> int | None:
    """The number (page or offset) of the last page, from a total or a ``rel="last"`` link;
    None when neither says. ``size``: items in a full page."""
    if total is not None and size > 0:
        pages = max(1, math.ceil(total / size))
        return first + (pages - 1) * (1 if pagination.style == "page" else size)
    if last_url is not None and pagination.param is not None:
        value = param_of(last_url, pagination.param)
        if value is not None and value.isdecimal():
            return int(value)
    return None
