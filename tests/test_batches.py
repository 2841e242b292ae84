"""Batches as pure logic: settings checked, URLs cut to length, answers read, size learned."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

import pytest
from scrapy import Request
from scrapy.settings import Settings

from ingest.batch.answers import misread, read_batch
from ingest.batch.fingerprints import BatchFingerprinter
from ingest.batch.sizer import Sizer
from ingest.batch.spec import BatchSpec
from ingest.config.values import ConfigError
from ingest.fetching.answers import NoItems, NotJson, id_of, items_at
from ingest.job import Job

API = "http://api.test/items/{id}"


def spec(**settings: Any) -> BatchSpec | None:
    merged = {
        "API_URL": API,
        "API_BATCH_SIZE": 50,
        "API_BATCH_URL": "http://api.test/items?ids={ids}",
    }
    project = Settings()
    project.setmodule("ingest.settings")
    project.update({**merged, **settings})
    return Job.from_settings(project).batching


def test_size_one_is_one_id_a_request() -> None:
    assert spec(API_BATCH_SIZE=1, API_BATCH_URL=None) is None


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"API_BATCH_SIZE": "0"}, "API_BATCH_SIZE must be an integer >= 1, got '0'"),
        ({"API_BATCH_SIZE": "many"}, "API_BATCH_SIZE must be an integer, got 'many'"),
        ({"API_BATCH_URL": None}, "API_BATCH_SIZE=50 needs API_BATCH_URL"),
        ({"API_BATCH_URL": "http://api.test/items"}, "{ids} exactly once"),
        ({"API_BATCH_URL": "http://api.test/{ids}?and={ids}"}, "{ids} exactly once"),
        ({"API_BATCH_URL": "http://other.test/items?ids={ids}"}, "API_URL's host"),
        ({"API_BATCH_METHOD": "PUT"}, "API_BATCH_METHOD must be GET or POST, got 'PUT'"),
        (
            {
                "API_BATCH_METHOD": "POST",
                "API_BATCH_URL": "http://api.test/batch",
                "API_BATCH_BODY": "{ids",
            },
            "API_BATCH_BODY must be JSON, got '{ids'",
        ),
        (
            {
                "API_BATCH_METHOD": "POST",
                "API_BATCH_URL": "http://api.test/batch",
                "API_BATCH_BODY": '{"ids": []}',
            },
            'API_BATCH_BODY must hold the string "{ids}" once',
        ),
        (
            {"API_BATCH_METHOD": "POST", "API_BATCH_URL": "http://api.test/b?ids={ids}"},
            "takes no {ids}",
        ),
        ({"API_BATCH_ITEMS": "data..items"}, "API_BATCH_ITEMS must be a dotted path"),
        ({"API_ITEM_ID": " "}, "API_ITEM_ID must name the field"),
        ({"API_BATCH_SEPARATOR": ""}, "API_BATCH_SEPARATOR must not be empty"),
        ({"API_BATCH_MAX_URL": "10"}, "API_BATCH_MAX_URL must be an integer >= 64, got '10'"),
    ],
)
def test_bad_settings_are_named(settings: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=None) as raised:
        spec(**settings)
    assert named in str(raised.value)


def test_get_urls_encode_each_id_whole_and_keep_the_separator() -> None:
    batch = spec()
    assert batch is not None
    url = batch.url_for(["1", "a,b", "x/y", "é"])
    assert url == "http://api.test/items?ids=1,a%2Cb,x%2Fy,%C3%A9"
    assert [unquote(part) for part in url.split("=", 1)[1].split(",")] == ["1", "a,b", "x/y", "é"]


def test_post_bodies_put_the_ids_where_the_template_says() -> None:
    batch = spec(
        API_BATCH_METHOD="post",
        API_BATCH_URL="http://api.test/items/batch",
        API_BATCH_BODY='{"query": {"ids": "{ids}", "fields": ["name"]}}',
    )
    assert batch is not None and batch.url_for(["1"]) == "http://api.test/items/batch"
    assert json.loads(batch.body_for(["1", "{ids}", '"q"']) or b"") == {
        "query": {"ids": ["1", "{ids}", '"q"'], "fields": ["name"]}
    }


def test_parts_respect_the_size_and_the_url_length() -> None:
    batch = spec(API_BATCH_MAX_URL=64)
    assert batch is not None
    ids = [str(i) for i in range(1000, 1030)]
    parts = batch.parts(ids, size=50)
    assert [id_ for part in parts for id_ in part] == ids  # nothing lost, order kept
    assert all(len(batch.url_for(part)) <= 64 for part in parts)
    assert len(parts[0]) == (64 - len("http://api.test/items?ids=") + 1) // 5  # as many as fit
    small = batch.parts(ids, size=5)
    assert [len(part) for part in small] == [5] * 6
    assert [id_ for part in small for id_ in part] == ids
    (alone,) = batch.parts(["x" * 100], size=50)  # too long even alone: it goes alone
    assert alone == ["x" * 100]


@pytest.mark.parametrize(
    ("text", "path", "expected"),
    [
        ('[{"id": 1}, {"id": "2"}]', None, ['{"id": 1}', '{"id": "2"}']),
        ('{"meta": {"items": 3}, "data": [ {"id":1} ]}', None, ['{"id":1}']),
        ('{"results": [], "items": [1]}', None, ["1"]),
        ('{"a": {"b": [ "x" ,"y" ]}, "z": 1}', ("a", "b"), ['"x"', '"y"']),
        ('{"items": [{"id": "é\\u00e9"}]}', ("items",), ['{"id": "é\\u00e9"}']),
    ],
)
def test_items_keep_their_text_exactly(text: str, path: Any, expected: list[str]) -> None:
    found = items_at(text, path)
    assert [raw for _, raw in found] == expected
    assert [value for value, _ in found] == [json.loads(raw) for raw in expected]


@pytest.mark.parametrize(
    ("text", "path", "error"),
    [
        ('{"items": {}}', None, NoItems),
        ('{"data": [1]}', ("items",), NoItems),
        ("[1, 2", None, NotJson),
        ("[1] [2]", None, NotJson),
        ('{"items": [NaN]}', None, NotJson),
        ("<html>", None, NotJson),
        ("", None, NotJson),
    ],
)
def test_answers_without_items_are_told_apart_from_answers_not_json(
    text: str, path: Any, error: type[Exception]
) -> None:
    with pytest.raises(error):
        items_at(text, path)


def test_a_batch_answer_matches_items_to_the_ids_asked_for() -> None:
    text = json.dumps(
        {"items": [{"id": 1, "v": "a"}, {"id": "3"}, {"id": 1, "v": "b"}, {"id": 9}, {"no": "id"}]}
    )
    answer = read_batch(text, ["1", "2", "3"], None, "id")
    assert [(id_, value) for id_, value, _ in answer.found] == [
        ("1", {"id": 1, "v": "a"}),  # the first of a repeated id is kept
        ("3", {"id": "3"}),
    ]
    assert answer.missing == ["2"]
    assert answer.unexpected == ["9"] and answer.nameless == 1 and answer.repeated == 1


def spec_of(**settings: Any) -> BatchSpec:
    found = spec(**settings)
    assert found is not None
    return found


@pytest.mark.parametrize(
    ("items", "said"),
    [
        (
            [{"uuid": "a", "name": "x"}, {"uuid": "b"}],
            "API_ITEM_ID='id': none of the 2 items of a batch's answer has that field; "
            "they hold name, uuid",
        ),
        (
            [{"id": 7}, {"id": 8}],
            "API_ITEM_ID='id': the 2 items of a batch's answer name ids it did not ask for "
            "(7, 8), none of its 3 (1, 2, 3)",
        ),
        (
            [1, 2, "3"],
            "API_BATCH_ITEMS=None: the 3 items of a batch's answer are no objects (int, str), "
            "so none has a field 'id'",
        ),
    ],
)
def test_an_answer_none_of_whose_items_matches_names_the_setting(
    items: list[Any], said: str
) -> None:
    answer = read_batch(json.dumps({"items": items}), ["1", "2", "3"], None, "id")
    assert misread(answer, ["1", "2", "3"], spec_of()) == said


def test_an_answer_matched_in_part_or_empty_is_no_misreading() -> None:
    partly = read_batch(json.dumps([{"id": 1}, {"id": 9}]), ["1", "2"], None, "id")
    empty = read_batch("[]", ["1", "2"], None, "id")
    assert misread(partly, ["1", "2"], spec_of()) is None
    assert misread(empty, ["1", "2"], spec_of()) is None


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ({"id": 7}, "7"),
        ({"id": "7"}, "7"),
        ({"id": 7.0}, "7"),
        ({"id": True}, None),
        ({}, None),
        (7, None),
    ],
)
def test_ids_compare_as_text(item: Any, expected: str | None) -> None:
    assert id_of(item, "id") == expected


@pytest.mark.parametrize(
    ("server_max", "most_refused"), [(20, 4), (37, 8), (1, 7), (64, 8), (100, 0)]
)
def test_the_size_is_found_between_the_largest_answered_and_the_smallest_refused(
    server_max: int, most_refused: int
) -> None:
    settled: list[int] = []
    sizer = Sizer(100, on_settled=settled.append)
    sent = refused = 0
    size = sizer.size
    while not sizer.settled:
        batch = tuple(str(i) for i in range(size))
        assert sizer.may_send(batch)
        assert not sizer.may_send(tuple(str(i) for i in range(1, size + 1)))  # waits for the probe
        status = 400 if size > server_max else 200
        sent, refused = sent + 1, refused + (status == 400)
        sizer.answered(batch, status)
        size = sizer.size
    assert sizer.size == server_max and refused <= most_refused and sent <= 12
    assert settled == [server_max]
    assert sizer.may_send(tuple("abc"))  # smaller than what worked: goes at once


def test_a_refused_batch_no_larger_than_one_that_worked_keeps_the_size() -> None:
    sizer = Sizer(50)
    sizer.answered(tuple(map(str, range(50))), 200)
    sizer.answered(tuple(map(str, range(50))), 400)  # a bad id, not a size
    assert sizer.size == 50 and sizer.settled


def test_a_probe_that_got_no_answer_lets_another_probe() -> None:
    sizer = Sizer(10)
    first, second = tuple("abcdefghij"), tuple("klmnopqrst")
    assert sizer.may_send(first) and not sizer.may_send(second)
    sizer.released(first)
    assert sizer.may_send(second)


def test_batches_of_the_job_are_named_by_their_place() -> None:
    fingerprint = BatchFingerprinter().fingerprint
    one = Request("http://api.test/items?ids=1,2,3", meta={"batch_chunk": "50:0.0"})
    fewer = Request("http://api.test/items?ids=2,3", meta={"batch_chunk": "50:0.0"})
    other = Request("http://api.test/items?ids=2,3", meta={"batch_chunk": "50:1.0"})
    assert fingerprint(one) == fingerprint(fewer) != fingerprint(other)
    plain = Request("http://api.test/items/1")
    assert fingerprint(plain) == fingerprint(Request("http://api.test/items/1"))
    assert fingerprint(plain) != fingerprint(Request("http://api.test/items/2"))


class Stats(dict):  # type: ignore[type-arg]
    def get_value(self, key: str, default: Any = None) -> Any:
        return self.get(key, default)


def test_progress_counts_ids_and_requests_apart_and_the_eta_by_batches() -> None:
    from ingest.progress.figures import Figures
    from ingest.progress.lines import progress_line
    from ingest.ratelimit.pacing.rates import parse_rates

    clock = [1000.0]
    stats = Stats({"storage/stored": 4000, "batch/requests_answered": 80})
    stats["batch/ids_answered"] = 4000
    figures = Figures(stats, parse_rates("100/60"), clock=lambda: clock[0])  # type: ignore[arg-type]
    figures.total = 10_000
    for _ in range(80):  # 80 requests over 48 s: 100/min
        figures.request_sent()
        clock[0] += 0.6
    snapshot = figures.snapshot()
    line = progress_line(snapshot)
    assert line.startswith("4000/10000 ids (40.0%) | 100.0 req/min")
    assert "50.0 ids/request" in line
    assert snapshot.eta == pytest.approx(6000 / 50 * 0.6, rel=0.02)  # 120 requests to go
