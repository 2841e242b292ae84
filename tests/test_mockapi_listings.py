"""The mock API's catalogue: listings in every pagination style, changes, conditional GETs."""

from __future__ import annotations

import email.utils
import json
import re
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import pytest

from mockapi.calls import Call
from mockapi.catalog import Catalog, format_timestamp, parse_timestamp
from mockapi.limits import Limit
from mockapi.settings import IdSet, Settings
from mockapi.state import MockState
from tests.support.clock import FakeClock
from tests.support.mockapi import MockAPI
from tests.support.mockapi import fetch as get

StartMock = Callable[..., MockAPI]


def key(item: dict[str, Any]) -> tuple[str, int]:
    # The same format throughout: fixed-width, so text order is time order.
    return item["updated_at"].replace("Z", ".000Z")[:23], item["id"]


def walk(api: MockAPI, style: str, per_page: int, since: str | None = None) -> list[list[Any]]:
    """Every page of the listing, following the style's own way to the next page."""
    query: dict[str, Any] = {"per_page": per_page} if style != "offset" else {"limit": per_page}
    if since is not None:
        query["updated_since"] = since
    url = first = f"{api.base}/items?{urllib.parse.urlencode(query)}"
    pages = []
    offset = 0
    while url:
        status, headers, body = get(url)
        assert status == 200, body
        answer = json.loads(body)
        next_url = None
        if style == "page":
            pages.append(answer["items"])
            if answer["items"]:
                next_url = f"{first}&page={answer['page'] + 1}"
        elif style == "offset":
            pages.append(answer["items"])
            offset += len(answer["items"])
            if offset < answer["total"]:
                next_url = f"{first}&offset={offset}"
        elif style == "cursor":
            pages.append(answer["data"])
            if answer["next_cursor"] is not None:
                next_url = f"{first}&cursor={answer['next_cursor']}"
        elif style == "link":
            pages.append(answer)
            found = re.search(r'<([^>]+)>; rel="next"', headers["Link"] or "")
            next_url = found.group(1) if found else None
        else:
            pages.append(answer["results"])
            next_url = answer["next"]
        url = next_url or ""
    return pages


# The catalogue on a fake clock


def test_the_listing_is_in_updated_at_then_id_order() -> None:
    catalog = Catalog(50)
    ids = catalog.listing()
    assert sorted(ids, key=int) == [str(n) for n in range(1, 51)]
    assert [catalog.key(i) for i in ids] == sorted(catalog.key(i) for i in ids)
    since = catalog.key(ids[9])[0]
    assert catalog.listing(since) == ids[10:]  # strictly later
    assert catalog.listing(after=catalog.key(ids[9])) == ids[10:]


def test_a_change_moves_an_item_to_the_end_with_a_new_version() -> None:
    catalog = Catalog(10, start=1_800_000_000.0)
    before = catalog.payload("3", 300)
    catalog.change(["3", "abc"], 1_800_000_000.1234)
    assert catalog.listing()[-1] == "3"
    payload = json.loads(catalog.payload("3", 300))
    assert (payload["updated_at"], payload["version"]) == ("2027-01-15T08:00:00.123Z", 2)
    assert catalog.payload("3", 300) != before
    assert catalog.listing(parse_timestamp("2027-01-15T08:00:00.122Z")) == ["3"]
    assert catalog.listing(parse_timestamp("2027-01-15T08:00:00.123Z")) == []
    assert catalog.changed() == {
        "3": {"updated_at": "2027-01-15T08:00:00.123Z", "version": 2},
        "abc": {"updated_at": "2027-01-15T08:00:00.123Z", "version": 2},
    }
    catalog.reset(0.0)
    assert catalog.changed() == {}


def test_changes_at_a_rate_are_due_in_time_and_the_same_for_a_seed() -> None:
    def changes(seed: int) -> dict[str, dict[str, Any]]:
        catalog = Catalog(1000, rate=4, seed=seed, start=1_800_000_000.0)
        catalog.advance(1_800_000_000.2)
        assert catalog.changed() == {}
        catalog.advance(1_800_000_002.1)
        return catalog.changed()

    first = changes(7)
    assert len(first) == 8
    assert first == changes(7) != changes(8)
    times = sorted(change["updated_at"] for change in first.values())
    assert times[0] == "2027-01-15T08:00:00.250Z"
    assert times[-1] == "2027-01-15T08:00:02Z"


def test_timestamps_parse_with_or_without_an_offset() -> None:
    assert format_timestamp(parse_timestamp("2024-05-01T00:00:00Z")) == "2024-05-01T00:00:00Z"
    assert parse_timestamp("2024-05-01T02:00:00+02:00") == parse_timestamp("2024-05-01T00:00:00")
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_timestamp("yesterday")


# Listings over HTTP


@pytest.mark.parametrize("style", ["page", "offset", "cursor", "link", "next"])
def test_every_page_of_every_style(mockapi: StartMock, style: str) -> None:
    api = mockapi(
        "--limit", "none", "--catalog", "25", "--pagination", style, "--not-found", "7",
        "--invalid", "8", "--max-per-page", "10",
    )  # fmt: skip
    pages = walk(api, style, per_page=50)  # more than allowed: cut to 10
    items = [item for page in pages for item in page]
    assert [len(page) for page in pages][:3] == [10, 10, 4]
    assert sorted(item["id"] for item in items) == [n for n in range(1, 26) if n != 7]
    assert [key(item) for item in items] == sorted(key(item) for item in items)
    assert "name" not in next(item for item in items if item["id"] == 8)
    record = api.requests()
    assert len(record) == len(pages)
    assert all(e["ids"] == [] and e["id"] is None and e["path"] == "/items" for e in record)
    assert "per_page=50" in record[0]["query"] or "limit=50" in record[0]["query"]


def test_page_style_bodies_and_the_end(mockapi: StartMock) -> None:
    api = mockapi("--limit", "none", "--catalog", "5")
    answer = json.loads(get(api.base + "/items?page=2&per_page=2")[2])
    assert {k: v for k, v in answer.items() if k != "items"} == {
        "total": 5,
        "page": 2,
        "per_page": 2,
    }
    assert len(answer["items"]) == 2
    assert json.loads(get(api.base + "/items?page=4&per_page=2")[2])["items"] == []
    assert len(json.loads(get(api.base + "/items")[2])["items"]) == 5  # per_page 100
    for bad in ["page=0", "per_page=x", "updated_since=soon", "page=-1"]:
        status, _, body = get(f"{api.base}/items?{bad}")
        assert (status, "error" in json.loads(body)) == (400, True)


def test_link_and_next_urls_are_absolute_and_end_on_the_last_page(mockapi: StartMock) -> None:
    api = mockapi("--limit", "none", "--catalog", "5", "--pagination", "link")
    _, headers, _ = get(api.base + "/items?per_page=2&page=3")
    assert headers["Link"] == f'<{api.base}/items?per_page=2&page=3>; rel="last"'
    _, headers, _ = get(api.base + "/items?per_page=2")
    assert headers["Link"] == (
        f'<{api.base}/items?per_page=2&page=2>; rel="next", '
        f'<{api.base}/items?per_page=2&page=3>; rel="last"'
    )
    api = mockapi("--limit", "none", "--catalog", "4", "--pagination", "next")
    answer = json.loads(get(api.base + "/items?per_page=2")[2])
    assert answer["next"] == f"{api.base}/items?per_page=2&page=2"
    assert json.loads(get(answer["next"])[2])["next"] is None


def test_a_bad_cursor_is_a_400(mockapi: StartMock) -> None:
    api = mockapi("--limit", "none", "--catalog", "5", "--pagination", "cursor")
    status, _, body = get(api.base + "/items?cursor=nonsense")
    assert (status, json.loads(body)["error"]) == (400, "not a cursor this server gave: 'nonsense'")
    answer = json.loads(get(api.base + "/items?per_page=5")[2])
    assert (len(answer["data"]), answer["next_cursor"]) == (5, None)


def test_a_listing_page_counts_once_against_the_quota(mockapi: StartMock) -> None:
    api = mockapi("--limit", "2/60", "--catalog", "500")
    assert [get(api.base + f"/items?page={p}")[0] for p in (1, 2, 3)] == [200, 200, 429]


def test_updated_since_lists_the_items_changed_later(mockapi: StartMock) -> None:
    api = mockapi("--limit", "none", "--catalog", "30", "--pagination", "cursor")
    newest = max(key(item) for page in walk(api, "cursor", 100) for item in page)
    since = newest[0].replace(".000Z", "Z")
    assert walk(api, "cursor", 10, since=since) == [[]]
    changed = api.change([5, 17, 9])
    assert set(changed) == {"5", "17", "9"}
    assert all(change["version"] == 2 for change in changed.values())
    pages = walk(api, "cursor", 2, since=since)
    assert [[item["id"] for item in page] for page in pages] == [[5, 9], [17]]
    assert {item["version"] for page in pages for item in page} == {2}
    assert api.changed_items() == changed


def test_items_change_at_the_rate_while_running(mockapi: StartMock) -> None:
    api = mockapi("--limit", "none", "--catalog", "100", "--change-rate", "50")
    time.sleep(0.3)
    changed = api.changed_items()
    assert 5 <= sum(change["version"] - 1 for change in changed.values()) <= 40
    last = json.loads(get(api.base + "/items")[2])["items"][-1]
    assert str(last["id"]) in changed


# Conditional GETs


def test_etag_and_last_modified_make_304s(mockapi: StartMock) -> None:
    api = mockapi("--limit", "none", "--not-json", "9")
    status, headers, body = get(api.url(1))
    etag, modified = headers["ETag"], headers["Last-Modified"]
    assert re.fullmatch(r'"[0-9a-f]{16}"', etag)
    updated = email.utils.parsedate_to_datetime(modified).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert updated == json.loads(body)["updated_at"]
    for conditions in [
        {"If-None-Match": etag},
        {"If-None-Match": f'"other", W/{etag}'},
        {"If-Modified-Since": modified},
    ]:
        status, headers, body = get(api.url(1), conditions)
        assert (status, body, headers["ETag"]) == (304, b"", etag)
    # If-None-Match decides alone when present; a date before the change is no match.
    assert get(api.url(1), {"If-None-Match": '"other"', "If-Modified-Since": modified})[0] == 200
    assert get(api.url(1), {"If-Modified-Since": "Mon, 01 Jan 2024 00:00:00 GMT"})[0] == 200
    assert get(api.url(1), {"If-Modified-Since": "garbage"})[0] == 200
    assert get(api.url(9), {"If-None-Match": "*"})[0] == 200  # no JSON item, no validators
    api.change([1])
    status, headers, _ = get(api.url(1), {"If-None-Match": etag, "If-Modified-Since": modified})
    assert (status, headers["ETag"] != etag) == (200, True)
    assert [e["reason"] for e in api.requests()][:4] == ["ok", "not_modified", "not_modified",
                                                         "not_modified"]  # fmt: skip


def test_304s_count_against_the_quota_by_default(mockapi: StartMock) -> None:
    api = mockapi("--limit", "2/60")
    etag = get(api.url(1))[1]["ETag"]
    assert [get(api.url(1), {"If-None-Match": etag})[0] for _ in range(2)] == [304, 429]


def test_304s_not_counted_leave_the_quota_alone() -> None:
    clock = FakeClock()
    state = MockState(Settings(limits=[Limit(2, 60)], count_304=False, headers="both"), clock)
    first = state.handle(Call.item("1"))
    conditional = Call.item("1", if_none_match=first.headers["ETag"])
    answers = [state.handle(conditional) for _ in range(5)]
    assert [a.status for a in answers] == [304] * 5
    assert answers[-1].headers["X-RateLimit-Remaining"] == "1"
    assert [state.handle(Call.item("2")).status for _ in range(2)] == [200, 429]
    # Blocked by a Retry-After, or out of quota: a 304 is still a 304.
    assert state.handle(conditional).status == 304
    assert state.handle(Call.item("2")).reason == "early"


def test_304s_not_counted_over_http(mockapi: StartMock) -> None:
    api = mockapi("--limit", "1/60", "--no-count-304", "--invalid", "3")
    etag = get(api.url(3))[1]["ETag"]
    assert [get(api.url(3), {"If-None-Match": etag})[0] for _ in range(3)] == [304] * 3
    assert get(api.url(4))[0] == 429


def test_listing_hides_ids_that_are_not_json_items() -> None:
    settings = Settings(limits=[], catalog=6, not_found=IdSet("2"), gone=IdSet("3"))
    state = MockState(settings, FakeClock())
    answer = state.handle(Call("list"))
    assert sorted(item["id"] for item in json.loads(answer.body)["items"]) == [1, 4, 5, 6]


@pytest.mark.parametrize("style", ["page", "offset", "cursor", "link", "next"])
def test_a_page_that_is_not_json_until_fixed(style: str) -> None:
    state = MockState(Settings(limits=[], catalog=30, pagination=style, not_json_page=2))
    size = "limit" if style == "offset" else "per_page"
    first = state.handle(Call("list", params={size: "10"}))
    assert first.status == 200 and json.loads(first.body)
    params = {size: "10", "page": "2", "offset": "10"}
    if style == "cursor":
        params = {size: "10", "cursor": json.loads(first.body)["next_cursor"]}
    second = state.handle(Call("list", params=params))
    assert (second.status, second.content_type) == (200, "text/html")
    assert second.body.startswith(b"<!DOCTYPE html>")
    state.configure({"not_json_page": 0})
    fixed = state.handle(Call("list", params=params))
    assert fixed.content_type == "application/json" and json.loads(fixed.body)
    with pytest.raises(ValueError, match="whole number"):
        state.configure({"not_json_page": 1.5})
