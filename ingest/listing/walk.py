"""A listing walked page by page: where it stands, which pages to ask for next, and when it ends.

Pure: a :class:`Walk` is told of each page's answer and says what to request; its
:meth:`Walk.position` is what the state table keeps, committed with the page's items.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ingest.fetching.answers import id_of
from ingest.listing.pagination import (
    Pagination,
    cursor_value,
    last_number,
    next_url,
    param_of,
    parse_link_header,
    present,
    total_of,
    value_at,
    with_param,
)

PAGE = "listing_page"  # request meta: the page's number (numbered styles), or None
# Pages requested ahead of the first one not answered, when the last page is known: the
# rate limiter paces them, so a slow answer does not hold the next request back.
AHEAD = 8


@dataclass(slots=True)
class PageAnswer:
    """What a walk needs of one page's answer."""

    count: int  # items on the page
    next_url: str | None = None  # auto, link, next
    cursor: str | None = None  # cursor
    total: int | None = None  # items in the listing, if the answer says
    last_url: str | None = None  # Link rel="last"

    @classmethod
    def read(
        cls, pagination: Pagination, document: Any, count: int, link: Any, url: str
    ) -> PageAnswer:
        """What a page's parsed answer (and its ``Link`` header) says of the listing."""
        links = parse_link_header(link, url)
        page = cls(count, total=total_of(document), last_url=links.get("last"))
        if pagination.style == "cursor":
            assert pagination.path is not None
            page.cursor = cursor_value(value_at(document, pagination.path))
        elif not pagination.numbered:
            page.next_url = next_url(pagination, document, links, url)
        return page


def first_page_problem(
    pagination: Pagination,
    document: Any,
    found: list[tuple[Any, str]],
    id_field: str,
    since: tuple[tuple[str, ...], str] | None,
) -> tuple[str, str] | None:
    """What the first answer shows wrong in the arguments (a path they name that is not in
    it), and the argument: (problem, argument); None when they fit."""
    p = pagination
    if p.path is not None and not present(document, p.path):
        return f"has nothing at {'.'.join(p.path)}", f"pagination={p}"
    if found and all(id_of(value, id_field) is None for value, _ in found):
        return f"has no item with {id_field!r}", f"API_ITEM_ID={id_field!r}"
    if since is not None and found and all(value_at(v, since[0]) is None for v, _ in found):
        field_ = ".".join(since[0])
        return f"has no item with {field_!r}", f"since={field_}:{since[1]}"
    return None


@dataclass(slots=True)
class Frontier:
    """Numbered pages answered so far: the first not answered, and those answered beyond it."""

    next: int
    step: int = 1
    ahead: set[int] = field(default_factory=set)

    def done(self, number: int) -> None:
        if number == self.next:
            self.next += self.step
            while self.next in self.ahead:
                self.ahead.discard(self.next)
                self.next += self.step
        elif number > self.next:
            self.ahead.add(number)


class Walk:
    """The pages of one listing pass, from its first URL (or a stored position) to its end.

    Following styles (``auto``, ``link``, ``next``, ``cursor``) have one page in flight:
    the next URL is known only from the answer. Numbered styles (``page``, ``offset``)
    count up until an empty page, or, once the total or a ``rel="last"`` link says where
    the listing ends, keep up to ``ahead`` pages requested at once.
    """

    def __init__(self, pagination: Pagination, url: str, *, ahead: int = AHEAD) -> None:
        self.pagination, self.url, self.ahead = pagination, url, ahead
        self.finished = False
        self.following: str | None = url  # following styles: the next URL to ask for
        self.size = 0  # numbered: items in a full page (the first answer's count)
        self.last: int | None = None  # numbered: the last page's number, once known
        self.empty_at: int | None = None  # numbered: the first empty page seen
        self.requested = -1
        first = 0 if pagination.style == "offset" else 1
        if pagination.numbered:
            assert pagination.param is not None
            value = param_of(url, pagination.param)
            first = int(value) if value is not None and value.isdecimal() else first
        self.first = first
        self.frontier = Frontier(first)

    # ------------------------------------------------------------ position

    def position(self) -> str | None:
        """Where the pass stands, as JSON text; None once it is finished."""
        if self.finished:
            return None
        if not self.pagination.numbered:
            return json.dumps({"url": self.following})
        f = self.frontier
        return json.dumps(
            {
                "url": self.url, "next": f.next, "step": f.step, "ahead": sorted(f.ahead),
                "size": self.size, "last": self.last, "empty_at": self.empty_at,
            },
            separators=(",", ":"),
        )  # fmt: skip

    @classmethod
    def resume(cls, pagination: Pagination, position: str, *, ahead: int = AHEAD) -> Walk:
        """The pass a stored position describes."""
        saved: dict[str, Any] = json.loads(position)
        walk = cls(pagination, saved["url"], ahead=ahead)
        if pagination.numbered:
            walk.frontier = Frontier(int(saved["next"]), int(saved["step"]), set(saved["ahead"]))
            walk.size, walk.last, walk.empty_at = saved["size"], saved["last"], saved["empty_at"]
        return walk

    # ------------------------------------------------------------ requests

    def number_url(self, number: int) -> str:
        assert self.pagination.param is not None
        return with_param(self.url, self.pagination.param, number)

    def start(self) -> list[tuple[str, int | None]]:
        """The first requests of the pass (or of its rest): (URL, page number or None)."""
        if not self.pagination.numbered:
            return [(self.following, None)] if self.following else []
        return self._numbered_requests(first=True)

    def answered(self, number: int | None, page: PageAnswer) -> list[tuple[str, int | None]]:
        """Take in a page's answer; the requests it makes due."""
        if self.pagination.numbered:
            assert number is not None
            return self._numbered(number, page)
        following = page.next_url
        if self.pagination.style == "cursor":
            assert self.pagination.param is not None
            following = None
            if page.cursor is not None and page.count:
                following = with_param(self.url, self.pagination.param, page.cursor)
        if following == self.following:
            following = None  # a page naming itself as the next would never end
        self.following = following
        self.finished = following is None
        return [(following, None)] if following else []

    def _numbered(self, number: int, page: PageAnswer) -> list[tuple[str, int | None]]:
        f = self.frontier
        if not self.size and page.count:
            self.size = page.count
            if self.pagination.style == "offset" and f.step == 1 and not f.ahead:
                f.step = page.count
        if self.last is None and self.size:
            self.last = last_number(
                self.pagination, first=self.first, size=self.size,
                total=page.total, last_url=page.last_url,
            )  # fmt: skip
        if page.count == 0:
            self.empty_at = number if self.empty_at is None else min(self.empty_at, number)
        f.done(number)
        end = None if self.last is None else self.last + f.step
        if self.empty_at is not None:
            end = self.empty_at if end is None else min(end, self.empty_at)
        self.finished = end is not None and f.next >= end
        return [] if self.finished else self._numbered_requests()

    def _numbered_requests(self, *, first: bool = False) -> list[tuple[str, int | None]]:
        """The pages due: the next one, or up to ``ahead`` at once when the end is known."""
        f = self.frontier
        if first:
            self.requested = f.next - f.step
        upto = f.next if self.last is None else min(self.last, f.next + (self.ahead - 1) * f.step)
        if self.empty_at is not None:
            upto = min(upto, self.empty_at - f.step)
        wanted: list[tuple[str, int | None]] = []
        number = max(self.requested + f.step, f.next)
        while number <= upto:
            if number not in f.ahead:
                wanted.append((self.number_url(number), number))
            number += f.step
        self.requested = max(self.requested, upto)
        return wanted
