"""Parsing what users type: id specs, rates, the API URL, the schema, Retry-After."""

from __future__ import annotations

import json
import tracemalloc
from email.utils import formatdate
from pathlib import Path

import pytest

from ingest.config.values import ConfigError, load_schema
from ingest.fetching.ids import id_source, parse_ids
from ingest.fetching.urls import check_api_url
from ingest.ratelimit.headers import retry_after_seconds
from ingest.ratelimit.pacing.rates import Rate, parse_rates


def test_ids_ranges_and_singles_in_order_merged() -> None:
    ids = parse_ids("12-14, 1-3,9,2-4")
    assert list(ids) == ["1", "2", "3", "4", "9", "12", "13", "14"]
    assert len(ids) == 8


def test_a_million_ids_are_never_a_list() -> None:
    tracemalloc.start()
    ids = parse_ids("1-1000000")
    count = sum(1 for _ in ids)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert count == len(ids) == 1_000_000
    assert peak < 1_000_000  # bytes: nothing proportional to the id count


@pytest.mark.parametrize(
    ("spec", "named"),
    [("abc", "'abc'"), ("5-1", "'5-1'"), ("", "''"), ("1,,2", "''"), ("1-2-3", "'1-2-3'")],
)
def test_bad_ids_name_the_value(spec: str, named: str) -> None:
    with pytest.raises(ConfigError, match="ids") as error:
        parse_ids(spec)
    assert named in str(error.value)


def test_ids_file_lazily_skipping_blanks_and_comments(tmp_path: Path) -> None:
    path = tmp_path / "ids.txt"
    path.write_text("# wanted\nA-1\n\n  b2  \n7\n", encoding="utf-8")
    assert list(id_source({"ids_file": str(path)})) == ["A-1", "b2", "7"]


def test_ids_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        id_source({"ids_file": str(tmp_path / "missing.txt")})
    bad = tmp_path / "bad.txt"
    for line, why in [("..", "path segments"), ("a\tb", "control character")]:
        bad.write_text(f"1\n{line}\n", encoding="utf-8")
        with pytest.raises(ConfigError, match=f"line 2 .*{why}"):
            id_source({"ids_file": str(bad)})
    with pytest.raises(ConfigError, match="either ids or ids_file"):
        id_source({"ids": "1", "ids_file": str(bad)})
    with pytest.raises(ConfigError, match="needs -a ids"):
        id_source({})
    with pytest.raises(ConfigError, match="unknown argument idz='1'"):
        id_source({"ids": "1", "idz": "1"})
    assert list(id_source({"ids": "1", "_job": "from-scrapyd"})) == ["1"]


def test_rates() -> None:
    assert parse_rates("100/60") == (Rate(100, 60.0),)
    assert parse_rates("5000/3600, 100/60") == (Rate(100, 60.0), Rate(5000, 3600.0))
    assert Rate(100, 60).interval == pytest.approx(0.6)
    assert str(Rate(100, 60.0)) == "100/60"


@pytest.mark.parametrize("value", ["fast", "0/60", "10/0", "100", "100/60,", "-1/60", "1/inf"])
def test_bad_rates_name_the_setting_and_value(value: str) -> None:
    with pytest.raises(ConfigError, match="RATELIMIT_RATE") as error:
        parse_rates(value)
    assert repr(value) in str(error.value)


def test_api_url() -> None:
    assert check_api_url("https://api.example.com/v1/items/{id}?x=1")
    for bad in [
        "https://api.example.com/items/",
        "ftp://h/{id}",
        "/items/{id}",
        "http://h/{id}/{x}",
    ]:
        with pytest.raises(ConfigError, match="API_URL") as error:
            check_api_url(bad)
        assert repr(bad) in str(error.value)


def test_schema(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"type": "object", "required": ["id"]}), encoding="utf-8")
    assert load_schema(str(good))["required"] == ["id"]
    with pytest.raises(ConfigError, match="not a file"):
        load_schema(str(tmp_path))
    broken = tmp_path / "broken.json"
    broken.write_text("{nope", encoding="utf-8")
    with pytest.raises(ConfigError, match="not a JSON file"):
        load_schema(str(broken))
    invalid = tmp_path / "invalid.json"
    invalid.write_text(json.dumps({"type": "thing"}), encoding="utf-8")
    with pytest.raises(ConfigError, match="not a valid JSON Schema"):
        load_schema(str(invalid))


def test_retry_after_delta_seconds() -> None:
    assert retry_after_seconds("120", now=0) == 120.0
    assert retry_after_seconds(b" 2 ", now=0) == 2.0
    assert retry_after_seconds("2.0", now=0) == 2.0  # Shopify writes it so
    assert retry_after_seconds("0.5", now=0) == 0.5


@pytest.mark.parametrize("value", [None, "0", "0.0", "-5", "soon", "1.5.2", "1e3", ""])
def test_retry_after_zero_or_garbage_means_back_off_yourself(value: str | None) -> None:
    assert retry_after_seconds(value, now=1_700_000_000) is None


def test_retry_after_date_is_measured_against_the_servers_date() -> None:
    server_now = 1_700_000_000
    value = formatdate(server_now + 30, usegmt=True)
    date = formatdate(server_now, usegmt=True)
    # Our clock is 1000 s ahead of the server's: the Date header makes it irrelevant.
    assert retry_after_seconds(value, now=server_now + 1000, date=date) == 30.0
    # Without a Date header, our own clock is the reference.
    assert retry_after_seconds(value, now=server_now + 10) == 20.0
    # A date in the past is no instruction.
    assert retry_after_seconds(formatdate(server_now - 5, usegmt=True), now=0, date=date) is None
