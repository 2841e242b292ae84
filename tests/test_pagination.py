"""Pagination arguments, Link headers, next positions, and walks through a listing (pure)."""

from __future__ import annotations

import json

import pytest

from ingest.config.values import ConfigError
from ingest.items import STORED, ListingMark, Outcome
from ingest.listing.pagination import (
    Pagination,
    cursor_value,
    last_number,
    next_url,
    parse_link_header,
    parse_pagination,
    parse_since,
    total_of,
)
from ingest.listing.walk import Frontier, PageAnswer, Walk
from ingest.storage.base import plan_write


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, Pagination("auto")),
        ("link", Pagination("link")),
        ("next:links.next", Pagination("next", path=("links", "next"))),
        ("cursor:after=meta.next_cursor", Pagination("cursor", ("meta", "next_cursor"), "after")),
        ("page:p", Pagination("page", param="p")),
        ("page", Pagination("page", param="page")),
        ("offset:start", Pagination("offset", param="start")),
    ],
)
def test_pagination_styles(value: str | None, expected: Pagination) -> None:
    assert parse_pagination(value) == expected
    assert parse_pagination(str(expected)) == expected


@pytest.mark.parametrize(
    "value", ["pages", "link:x", "next:", "next:a..b", "cursor:after", "cursor:=next", "page:a b"]
)
def test_a_bad_pagination_is_named(value: str) -> None:
    with pytest.raises(ConfigError, match=r"^pagination") as raised:
        parse_pagination(value)
    assert repr(value.partition(":")[2] if "." in value else value) in str(raised.value)


def test_since() -> None:
    assert parse_since("updated_at:updated_since") == (("updated_at",), "updated_since")
    assert parse_since("meta.changed:since") == (("meta", "changed"), "since")
    assert parse_since(None) is None
    for bad in ("updated_at", ":since", "updated_at:", "a..b:since"):
        with pytest.raises(ConfigError, match="since"):
            parse_since(bad)


def test_link_header() -> None:
    header = (
        '<https://api.example.com/items?page=3>; rel="next", '
        '</items?page=9>; title="a, b; c"; rel=last, '
        '<https://api.example.com/items?page=1>; rel="first prev"; rel="ignored"'
    )
    links = parse_link_header(header, "https://api.example.com/items?page=2")
    assert links == {
        "next": "https://api.example.com/items?page=3",
        "last": "https://api.example.com/items?page=9",
        "first": "https://api.example.com/items?page=1",
        "prev": "https://api.example.com/items?page=1",
    }
    assert parse_link_header(None) == {}
    assert parse_link_header(b'<a>; rel="NEXT"', "http://h/x") == {"next": "http://h/a"}


def test_next_positions_from_the_body() -> None:
    base = "https://h/items?page=1"
    auto = Pagination("auto")
    assert next_url(auto, {"next": "/items?page=2"}, {}, base) == "https://h/items?page=2"
    assert next_url(auto, {"links": {"next": {"href": "?page=2"}}}, {}, base) == (
        "https://h/items?page=2"
    )
    assert next_url(auto, {"paging": {"next": None}}, {}, base) is None
    assert next_url(auto, {"next": "x"}, {"next": "https://h/l"}, base) == "https://h/l"
    assert next_url(Pagination("next", path=("n",)), {"n": ""}, {}, base) is None
    assert [cursor_value(v) for v in (None, "", "abc", 17, False, {})] == [
        None, None, "abc", "17", None, None,
    ]  # fmt: skip
    assert total_of({"meta": {"total": 42}}) == 42
    assert total_of({"total": "42"}) is None


def test_last_page_from_a_total_or_a_link() -> None:
    page, offset = Pagination("page", param="page"), Pagination("offset", param="offset")
    assert last_number(page, first=1, size=100, total=10_000, last_url=None) == 100
    assert last_number(page, first=1, size=100, total=10_001, last_url=None) == 101
    assert last_number(offset, first=0, size=100, total=250, last_url=None) == 200
    assert last_number(page, first=1, size=100, total=None, last_url="http://h/?page=7") == 7
    assert last_number(page, first=1, size=100, total=None, last_url=None) is None


def test_frontier_follows_pages_answered_out_of_order() -> None:
    f = Frontier(1)
    for number in (2, 4, 1):
        f.done(number)
    assert (f.next, f.ahead) == (3, {4})
    f.done(3)
    assert (f.next, f.ahead) == (5, set())


def test_a_numbered_walk_goes_ahead_once_the_total_is_known() -> None:
    walk = Walk(Pagination("page", param="page"), "http://h/items?per_page=10", ahead=3)
    assert walk.start() == [("http://h/items?per_page=10&page=1", 1)]
    due = walk.answered(1, PageAnswer(10, total=45))
    assert [n for _, n in due] == [2, 3, 4]
    assert [n for _, n in walk.answered(3, PageAnswer(10))] == []
    assert [n for _, n in walk.answered(2, PageAnswer(10))] == [5]
    position = walk.position()
    resumed = Walk.resume(walk.pagination, position or "")
    assert [n for _, n in resumed.start()] == [4, 5]  # 3 is done: not asked again
    assert walk.answered(5, PageAnswer(5)) == []
    assert not walk.finished
    walk.answered(4, PageAnswer(10))
    assert walk.finished and walk.position() is None


def test_an_offset_walk_counts_up_until_an_empty_page() -> None:
    walk = Walk(Pagination("offset", param="offset"), "http://h/items?limit=50")
    assert walk.start() == [("http://h/items?limit=50&offset=0", 0)]
    assert walk.answered(0, PageAnswer(50)) == [("http://h/items?limit=50&offset=50", 50)]
    assert walk.answered(50, PageAnswer(20)) == [("http://h/items?limit=50&offset=100", 100)]
    assert json.loads(walk.position() or "")["next"] == 100
    assert walk.answered(100, PageAnswer(0)) == []
    assert walk.finished


def test_a_following_walk_ends_without_a_next_page() -> None:
    cursor = Walk(Pagination("cursor", ("next_cursor",), "cursor"), "http://h/items")
    assert cursor.answered(None, PageAnswer(3, cursor="c2")) == [("http://h/items?cursor=c2", None)]
    assert json.loads(cursor.position() or "") == {"url": "http://h/items?cursor=c2"}
    assert cursor.answered(None, PageAnswer(0, cursor="c3")) == []  # an empty page ends it
    link = Walk(Pagination("link"), "http://h/items")
    assert link.answered(None, PageAnswer(3, next_url="http://h/items")) == []  # itself: the end
    assert link.finished


def test_a_mark_is_written_after_the_outcomes_before_it() -> None:
    outcome = Outcome("1", STORED, "u", 200, data="{}")
    first, last = (
        ListingMark("k", '{"url": "a"}', False, None, 1.0),
        ListingMark("k", None, True, '"x"', 2.0),
    )
    plan = plan_write([first, outcome, last])
    assert plan.marks == [last] and plan.stored == [outcome]


def test_the_ids_of_every_mark_of_a_write_are_listed() -> None:
    plan = plan_write(
        [
            ListingMark("k", '{"url": "a"}', False, None, 1.0, listed=["1", "2"]),
            ListingMark("k", None, True, None, 2.0, listed=["3"], stale_before=2.0),
        ]
    )
    assert [m.at for m in plan.marks] == [2.0]
    assert plan.listed == [("k", "1", 1.0, 0.0), ("k", "2", 1.0, 0.0), ("k", "3", 2.0, 2.0)]
