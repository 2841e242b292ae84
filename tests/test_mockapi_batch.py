"""The mock API's ids as path segments, its batch endpoints and its URL cap."""

from __future__ import annotations

import json
from collections.abc import Callable
from email.message import Message

import pytest

from mockapi.calls import Call, query_ids
from mockapi.settings import IdSet, Settings, parse_id_list
from mockapi.state import Injection, MockState
from tests.support.clock import FakeClock
from tests.support.mockapi import MockAPI
from tests.support.mockapi import fetch as get

StartMock = Callable[..., MockAPI]


def post(api: MockAPI, body: object) -> tuple[int, Message, bytes]:
    data = json.dumps(body).encode()
    return get(api.base + "/items/batch", {"Content-Type": "application/json"}, data)


def ids_of(body: bytes, *path: str) -> list[object]:
    answer = json.loads(body)
    for key in path:
        answer = answer[key]
    return [item["id"] for item in answer]


def batch(state: MockState, *ids: str) -> list[object]:
    answer = state.handle(Call("batch", ids))
    assert answer.status == 200, answer.body
    return ids_of(answer.body, "items")


# Ids as one path segment


@pytest.mark.parametrize(
    ("raw", "item_id"),
    [
        ("x%23y", "x#y"),
        ("x%3Fy", "x?y"),
        ("100%25", "100%"),
        ("a%20b", "a b"),
        ("%2F", "/"),
        ("a%2Fb", "a/b"),
        ("caf%C3%A9", "café"),
        ("%252F", "%2F"),  # decoded once, not twice
    ],
)
def test_an_id_is_the_raw_segment_decoded_once(mockapi: StartMock, raw: str, item_id: str) -> None:
    api = mockapi("--limit", "none")
    status, _, body = get(f"{api.base}/items/{raw}")
    assert (status, json.loads(body)["id"]) == (200, item_id)
    [entry] = api.requests()
    assert (entry["id"], entry["ids"], entry["raw_path"]) == (item_id, [item_id], f"/items/{raw}")


def test_a_path_of_two_segments_is_not_an_item(mockapi: StartMock) -> None:
    api = mockapi("--limit", "none")
    assert get(api.base + "/items/a/b")[0] == 404
    assert get(api.base + "/items/a%2Fb")[0] == 200
    first, second = api.requests()
    assert (first["status"], first["id"], first["ids"], first["raw_path"]) == (
        404,
        None,
        [],
        "/items/a/b",
    )
    assert (second["id"], second["path"]) == ("a/b", "/items/a/b")  # path: decoded


def test_numeric_ids_are_numbers_in_the_payload(mockapi: StartMock) -> None:
    api = mockapi("--limit", "none")
    assert json.loads(get(api.url(42))[2])["id"] == 42
    assert json.loads(get(api.url("042x"))[2])["id"] == "042x"


# Batches


def test_query_ids_are_split_on_commas_then_decoded() -> None:
    assert query_ids("ids=1,a%2Cb,c%25d,%C3%A9") == ("1", "a,b", "c%d", "é")
    assert query_ids("page=2") is None
    assert query_ids("ids=") == ()
    assert query_ids("ids=1&x=2&ids=3") == ("1", "3")


def test_a_batch_holds_the_items_found(mockapi: StartMock) -> None:
    api = mockapi(
        "--limit", "none", "--not-found", "2", "--gone", "3", "--not-json", "4", "--invalid", "5",
    )  # fmt: skip
    status, headers, body = get(api.batch_url([1, 2, 3, 4, 5, "a,b", "x y"]))
    assert (status, headers.get_content_type()) == (200, "application/json")
    items = json.loads(body)["items"]
    assert [item["id"] for item in items] == [1, 5, "a,b", "x y"]
    assert "name" not in items[1]  # the invalid one breaks the schema
    assert api.batch_url([1, "a,b"]).endswith("/items?ids=1,a%2Cb")
    [entry] = api.requests()
    assert (entry["id"], entry["ids"], entry["path"], entry["reason"]) == (
        None,
        ["1", "2", "3", "4", "5", "a,b", "x y"],
        "/items",
        "ok",
    )


def test_a_posted_batch_takes_strings_and_numbers(mockapi: StartMock) -> None:
    api = mockapi("--limit", "none")
    status, _, body = post(api, {"ids": [7, "8", "x/y"]})
    assert (status, ids_of(body, "items")) == (200, [7, 8, "x/y"])
    for bad in [{"ids": [1, True]}, {"ids": "1,2"}, [1, 2], {"ids": [1.5]}]:
        status, _, body = post(api, bad)
        assert status == 400, bad
        assert "error" in json.loads(body)
    status, _, _ = get(api.base + "/items/batch", data=b"{not json")
    assert status == 400
    record = api.requests()
    assert [(e["path"], e["ids"], e["status"]) for e in record[:2]] == [
        ("/items/batch", ["7", "8", "x/y"], 200), ("/items/batch", [], 400),
    ]  # fmt: skip
    assert [e["reason"] for e in record[1:]] == ["bad_request"] * 5


@pytest.mark.parametrize(
    ("shape", "path"),
    [
        ("items", ["items"]),
        ("data", ["data"]),
        ("result.items", ["result", "items"]),
        (".", []),
        ("", []),
    ],
)
def test_batch_shapes(mockapi: StartMock, shape: str, path: list[str]) -> None:
    api = mockapi("--limit", "none", "--batch-items", shape)
    status, _, body = get(api.batch_url([1, 2]))
    assert (status, ids_of(body, *path)) == (200, [1, 2])
    status, _, body = post(api, {"ids": []})
    assert (status, ids_of(body, *path)) == (200, [])


def test_too_many_ids_are_a_400_and_a_long_url_a_414(mockapi: StartMock) -> None:
    api = mockapi("--limit", "none", "--max-batch", "3", "--max-url", "40")
    assert get(api.batch_url([1, 2, 3]))[0] == 200  # /items?ids=1,2,3: 16 bytes
    status, _, body = get(api.batch_url([1, 2, 3, 4]))
    assert (status, json.loads(body)) == (400, {"error": "at most 3 ids per request, got 4"})
    assert post(api, {"ids": list(range(9))})[0] == 400
    assert get(api.base + "/items/" + "x" * 33)[0] == 200  # 40 bytes with "/items/"
    status, _, body = get(api.base + "/items/" + "x" * 34)
    assert (status, json.loads(body)) == (414, {"error": "the URL is 41 bytes, at most 40"})
    assert get(api.base + "/items?page=1&per_page=10&updated_since=2024")[0] == 414  # 43
    reasons = [e["reason"] for e in api.requests()]
    assert reasons == [
        "ok", "bad_request", "bad_request", "ok", "uri_too_long", "uri_too_long",
    ]  # fmt: skip


def test_long_urls_pass_when_no_cap_is_set(mockapi: StartMock) -> None:
    api = mockapi("--limit", "none")
    ids = [str(n) for n in range(1, 3001)]  # a URL of about 14 kB
    status, _, body = get(api.batch_url(ids))
    assert (status, len(json.loads(body)["items"])) == (200, 3000)


def test_a_batch_counts_once_against_the_quota(mockapi: StartMock) -> None:
    api = mockapi("--limit", "2/60", "--headers", "x-ratelimit")
    first = get(api.batch_url(range(1, 51)))
    second = post(api, {"ids": list(range(51, 101))})
    third = get(api.batch_url([101]))
    assert [a[0] for a in (first, second, third)] == [200, 200, 429]
    assert [a[1]["X-RateLimit-Remaining"] for a in (first, second)] == ["1", "0"]
    assert third[1]["Retry-After"] is not None
    assert [e["reason"] for e in api.requests()] == ["ok", "ok", "limit"]


def test_a_batch_goes_through_injections_and_the_error_rate() -> None:
    clock = FakeClock()
    state = MockState(Settings(limits=[], error_rate=1.0, error_statuses=(500,)), clock)
    assert state.handle(Call("batch", ("1", "2"))).status == 500
    state = MockState(Settings(limits=[]), clock)
    state.injections.append(Injection(503, retry_after=2))
    answer = state.handle(Call("batch", ("1",)))
    assert (answer.status, answer.headers["Retry-After"]) == (503, "2")
    clock.now += 1
    assert state.handle(Call("batch", ("1",))).reason == "early"
    clock.now += 1.5
    assert batch(state, "1") == [1]


def test_the_same_id_twice_is_answered_once_unless_asked() -> None:
    clock = FakeClock()
    once = MockState(Settings(limits=[]), clock)
    assert batch(once, "1", "2", "1", "2", "1") == [1, 2]
    twice = MockState(Settings(limits=[], duplicate_ids=True), clock)
    assert batch(twice, "1", "2", "1") == [1, 2, 1]


def test_extra_ids_are_added_to_every_batch() -> None:
    settings = Settings(limits=[], extra_ids=parse_id_list("900-901,x"), not_found=IdSet("x"))
    state = MockState(settings, FakeClock())
    assert batch(state, "1") == [1, 900, 901]
    assert batch(state, "900", "2") == [900, 2, 901]  # asked for: not added again
    assert batch(state) == [900, 901]
