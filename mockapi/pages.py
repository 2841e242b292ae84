"""Listing pages of the catalogue in five styles: page, offset, cursor, Link header, next URL."""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Mapping
from urllib.parse import urlencode

from mockapi.calls import NOT_JSON_BODY, Answer, BadRequest, Call, json_object
from mockapi.catalog import Catalog, Key, parse_timestamp

DEFAULT_PER_PAGE = 100
# A list of item ids → the JSON array of their payloads.
Render = Callable[[list[str]], bytes]


def listing_page(
    call: Call,
    catalog: Catalog,
    style: str,
    max_per_page: int,
    render: Render,
    *,
    not_json_page: int = 0,
) -> Answer:
    """One page of the listing that `call` asks for, in `style`; BadRequest if malformed.
    The page numbered `not_json_page` (1: the first, whatever the style) is not JSON."""
    answer = _listing_page(call, catalog, style, max_per_page, render)
    if not_json_page and answer.status == 200:
        size = min(number(call.params, _size_name(style), DEFAULT_PER_PAGE, low=1), max_per_page)
        if _first_index(call, catalog, style, size) // size + 1 == not_json_page:
            return Answer(200, "not_json", NOT_JSON_BODY, content_type="text/html")
    return answer


def _size_name(style: str) -> str:
    return "limit" if style == "offset" else "per_page"


def _first_index(call: Call, catalog: Catalog, style: str, size: int) -> int:
    """Where in the listing the page that `call` asks for begins."""
    params = call.params
    if style == "offset":
        return number(params, "offset", 0, low=0)
    if style == "cursor":
        if "cursor" not in params:
            return 0
        since = _since(params)
        after = decode_cursor(params["cursor"])
        return len(catalog.listing(since)) - len(catalog.listing(since, after))
    return (number(params, "page", 1, low=1) - 1) * size


def _since(params: Mapping[str, str]) -> int | None:
    if "updated_since" not in params:
        return None
    try:
        return parse_timestamp(params["updated_since"])
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc


def _listing_page(
    call: Call, catalog: Catalog, style: str, max_per_page: int, render: Render
) -> Answer:
    params = call.params
    since = _since(params)
    size = min(number(params, _size_name(style), DEFAULT_PER_PAGE, low=1), max_per_page)
    if style == "cursor":
        after = decode_cursor(params["cursor"]) if "cursor" in params else None
        ids = catalog.listing(since, after)
        cursor = encode_cursor(catalog.key(ids[size - 1])) if len(ids) > size else None
        return Answer(200, "ok", json_object(data=render(ids[:size]), next_cursor=cursor))
    ids = catalog.listing(since)
    total = len(ids)
    if style == "offset":
        offset = number(params, "offset", 0, low=0)
        return Answer(
            200, "ok", json_object(items=render(ids[offset : offset + size]), total=total)
        )
    page = number(params, "page", 1, low=1)
    items = render(ids[(page - 1) * size : page * size])
    last = max(1, math.ceil(total / size))
    following = page_url(call, page + 1) if page < last else None
    if style == "next":
        return Answer(200, "ok", json_object(results=items, next=following))
    if style == "link":
        links = [f'<{following}>; rel="next"'] if following else []
        links.append(f'<{page_url(call, last)}>; rel="last"')
        return Answer(200, "ok", items, headers={"Link": ", ".join(links)})
    body = json_object(items=items, total=total, page=page, per_page=size)
    return Answer(200, "ok", body)


def number(params: Mapping[str, str], name: str, default: int, low: int) -> int:
    value = params.get(name)
    if value is None:
        return default
    if not (value.isascii() and value.isdecimal()) or int(value) < low:
        raise BadRequest(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def page_url(call: Call, page: int) -> str:
    """The absolute URL of another page: the same query but for `page`."""
    return f"{call.origin}{call.path}?{urlencode({**call.params, 'page': page})}"


def encode_cursor(key: Key) -> str:
    """Where the next page starts: after this (updated_at, id), whatever changes meanwhile."""
    return base64.urlsafe_b64encode(f"{key[0]}.{key[1]}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> Key:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        updated_at, _, item = text.partition(".")
        return int(updated_at), int(item)
    except ValueError as exc:
        raise BadRequest(f"not a cursor this server gave: {cursor!r}") from exc
