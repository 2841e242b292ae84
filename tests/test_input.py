"""Bad input is refused before any request: one line naming the culprit and its value."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.crawl import crawl, terminal_states

IDS = ["-a", "ids=1-3"]

# (spider arguments, settings, what the one line must name)
BAD_INPUT = [
    (["-a", "ids=abc"], {}, "'abc'"),
    (["-a", "ids=5-1"], {}, "'5-1'"),
    (["-a", "ids_file=/nonexistent/ids.txt"], {}, "'/nonexistent/ids.txt'"),
    (["-a", "ids=1-3", "-a", "refresh=maybe"], {}, "'maybe'"),
    (["-a", "ids=1-3", "-a", "refresh=yes"], {}, "refresh must be 1 or 0, got 'yes'"),
    (["-a", "idz=1-5"], {}, "idz='1-5'"),
    (["-a", "ids=1-3", "-a", "idz=1-5"], {}, "idz='1-5'"),
    (IDS, {"RATELIMIT_RATE": "fast"}, "RATELIMIT_RATE must look like 100/60"),
    (IDS, {"RATELIMIT_RATE": "0/60"}, "'0/60'"),
    (
        IDS,
        {"RATELIMIT_RATE": "auto,fast"},
        "RATELIMIT_RATE must look like 100/60 (requests/seconds) or auto, got 'auto,fast'",
    ),
    (
        IDS,
        {"RATELIMIT_RATE": "auto,auto"},
        "RATELIMIT_RATE names auto once at most, got 'auto,auto'",
    ),
    (
        IDS,
        {"RATELIMIT_RATE": "auto", "RATELIMIT_START": "soon"},
        "RATELIMIT_START must look like 100/60 (requests/seconds), got 'soon'",
    ),
    (
        IDS,
        {"RATELIMIT_START": "0/60"},
        "RATELIMIT_START needs a positive count and period, got '0/60'",
    ),
    (
        IDS,
        {"RATELIMIT_START": "1/1,60/60"},
        "RATELIMIT_START must be one rate like 60/60, got '1/1,60/60'",
    ),
    (IDS, {"RATELIMIT_BURST": "0"}, "RATELIMIT_BURST must be an integer >= 1, got '0'"),
    (IDS, {"RATELIMIT_BACKEND": "disk"}, "RATELIMIT_BACKEND must be memory or redis, got 'disk'"),
    (IDS, {"RATELIMIT_MAX_PAUSE": "-1"}, "RATELIMIT_MAX_PAUSE must be a number of seconds >= 0"),
    (IDS, {"RATELIMIT_MAX_PAUSE": "soon"}, "RATELIMIT_MAX_PAUSE must be a number of seconds"),
    (IDS, {"RATELIMIT_ENABLED": "maybe"}, "RATELIMIT_ENABLED must be True or False"),
    (IDS, {"RATELIMIT_RETRY_TIMES": "abc"}, "RATELIMIT_RETRY_TIMES must be an integer, got 'abc'"),
    (IDS, {"RATELIMIT_RETRY_TIMES": "-1"}, "RATELIMIT_RETRY_TIMES must be an integer >= 0"),
    (IDS, {"CONCURRENT_REQUESTS": "abc"}, "CONCURRENT_REQUESTS must be an integer, got 'abc'"),
    (IDS, {"CONCURRENT_REQUESTS": "0"}, "CONCURRENT_REQUESTS must be an integer >= 1, got '0'"),
    (IDS, {"CONCURRENT_REQUESTS": "-1"}, "CONCURRENT_REQUESTS must be an integer >= 1"),
    (IDS, {"CONCURRENT_REQUESTS_PER_DOMAIN": "0"}, "CONCURRENT_REQUESTS_PER_DOMAIN"),
    (IDS, {"RETRY_TIMES": "abc"}, "RETRY_TIMES must be an integer, got 'abc'"),
    (IDS, {"RETRY_TIMES": "-1"}, "RETRY_TIMES must be an integer >= 0, got '-1'"),
    (IDS, {"RETRY_BACKOFF_BASE": "abc"}, "RETRY_BACKOFF_BASE must be a number of seconds"),
    (IDS, {"RETRY_BACKOFF_MAX": "-5"}, "RETRY_BACKOFF_MAX must be a number of seconds >= 0"),
    (IDS, {"RETRY_HTTP_CODES": "500,abc"}, "RETRY_HTTP_CODES must list HTTP statuses"),
    (IDS, {"RETRY_ENABLED": "sometimes"}, "RETRY_ENABLED must be True or False"),
    (IDS, {"DOWNLOAD_TIMEOUT": "abc"}, "DOWNLOAD_TIMEOUT must be a number of seconds, got 'abc'"),
    (IDS, {"DOWNLOAD_TIMEOUT": "0"}, "DOWNLOAD_TIMEOUT must be a number of seconds > 0"),
    (IDS, {"DOWNLOAD_DELAY": "-1"}, "DOWNLOAD_DELAY must be a number of seconds >= 0"),
    (IDS, {"PROGRESS_INTERVAL": "abc"}, "PROGRESS_INTERVAL must be a number of seconds"),
    (IDS, {"PROGRESS_INTERVAL": "-1"}, "PROGRESS_INTERVAL must be a number of seconds >= 0"),
    (IDS, {"STORAGE_BATCH_SIZE": "0"}, "STORAGE_BATCH_SIZE must be an integer >= 1"),
    (IDS, {"STORAGE_LINGER": "later"}, "STORAGE_LINGER must be a number of seconds"),
    (IDS, {"AUTOTHROTTLE_ENABLED": "perhaps"}, "AUTOTHROTTLE_ENABLED must be True or False"),
    (IDS, {"AUTOTHROTTLE_TARGET_CONCURRENCY": "0"}, "AUTOTHROTTLE_TARGET_CONCURRENCY"),
    (IDS, {"CONCURRENT_ITEMS": "x"}, "CONCURRENT_ITEMS must be an integer, got 'x'"),
    (IDS, {"DISTRIBUTED": "yes please"}, "DISTRIBUTED must be True or False"),
    (IDS, {"LOG_LEVEL": "LOUD"}, "LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL"),
    (IDS, {"API_URL": "http://127.0.0.1:9/items/"}, "'http://127.0.0.1:9/items/'"),
    (IDS, {"API_URL": "http://127.0.0.1:9/{id}/{id}"}, "{id} exactly once"),
    (IDS, {"ITEM_SCHEMA": "/nonexistent.json"}, "'/nonexistent.json'"),
    (IDS, {"DATABASE_URL": "mysql://u:secret@h/db"}, "'mysql://u:***@h/db'"),
    (IDS, {"DATABASE_URL": "sqlite:////proc/ingest/x.db"}, "sqlite:////proc/ingest/x.db"),
    (IDS, {"DISTRIBUTED": "1"}, "DISTRIBUTED needs REDIS_URL"),
    (IDS, {"API_BATCH_SIZE": "0"}, "API_BATCH_SIZE must be an integer >= 1, got '0'"),
    (IDS, {"API_BATCH_SIZE": "50"}, "API_BATCH_SIZE=50 needs API_BATCH_URL"),
    (IDS, {"API_BATCH_SIZE": "50", "API_BATCH_URL": "http://127.0.0.1:9/items"}, "{ids} exactly"),
    (
        IDS,
        {
            "API_BATCH_SIZE": "9",
            "API_BATCH_METHOD": "POST",
            "API_BATCH_URL": "http://127.0.0.1:9/b",
            "API_BATCH_BODY": "ids",
        },
        "API_BATCH_BODY must be JSON, got 'ids'",
    ),
    (IDS, {"METRICS_PORT": "http"}, "METRICS_PORT must be an integer, got 'http'"),
    (
        IDS,
        {"METRICS_PORT": "70000"},
        "METRICS_PORT must be a TCP port from 0 to 65535, got '70000'",
    ),
    (
        IDS,
        {"METRICS_PORT": "0", "METRICS_BIND": "10.255.255.1"},
        "METRICS_BIND: cannot listen on '10.255.255.1'",
    ),
    (
        IDS,
        {"PROGRESS_BAR": "sometimes"},
        "PROGRESS_BAR must be True or False (or 1 or 0), got 'sometimes'",
    ),
    (IDS, {"API_TOKENS": "secret-a,,secret-b"}, "API_TOKENS entry 2 of 3 is empty"),
    (IDS, {"API_TOKENS_FILE": "/nonexistent/keys"}, "API_TOKENS_FILE cannot be read, got '/non"),
    (IDS, {"API_TOKEN": "secret-a", "API_TOKENS": "secret-b,secret-c"}, "API_TOKEN and API_TOKENS"),
    (IDS, {"RATELIMIT_SHARED_RATE": "lots"}, "RATELIMIT_SHARED_RATE must look like 100/60"),
]


@pytest.mark.parametrize(("args", "settings", "named"), BAD_INPUT)
def test_bad_input_fails_before_any_request(
    mockapi, tmp_path: Path, args: list[str], settings: dict[str, str], named: str
) -> None:
    api = mockapi("--limit", "none")
    merged = {"DATABASE_URL": f"sqlite:///{tmp_path / 'ingest.db'}", **settings}
    db = merged.pop("DATABASE_URL")
    done = crawl(merged.pop("API_URL", api.url_template), db, *args, timeout=60, **merged)
    assert done.returncode == 2, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert named in lines[0]
    assert "secret" not in done.stderr
    assert api.requests() == []


def test_unknown_arguments_are_named_with_the_known_ones(mockapi, tmp_path: Path) -> None:
    api = mockapi("--limit", "none")
    done = crawl(api.url_template, f"sqlite:///{tmp_path}/x.db", "-a", "idz=1-5", timeout=60)
    (line,) = done.stderr.strip().splitlines()
    assert "unknown argument idz='1-5'" in line and "ids, ids_file, refresh" in line


def test_invalid_schema_file_is_named(mockapi, tmp_path: Path) -> None:
    schema = tmp_path / "schema.json"
    schema.write_text('{"type": "nonsense"}', encoding="utf-8")
    api = mockapi("--limit", "none")
    done = crawl(api.url_template, f"sqlite:///{tmp_path}/x.db", *IDS, ITEM_SCHEMA=schema)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "ITEM_SCHEMA" in line and str(schema) in line and "not a valid JSON Schema" in line
    assert api.requests() == []


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("http://127.0.0.1:1/items/{id}", "API_URL http://127.0.0.1:1: cannot connect to"),
        ("http://no-such-host.invalid/items/{id}", "cannot resolve 'no-such-host.invalid'"),
    ],
)
def test_an_unreachable_api_stops_before_the_first_id(tmp_path: Path, url: str, named: str) -> None:
    db = f"sqlite:///{tmp_path}/ingest.db"
    done = crawl(url, db, "-a", "ids=1-5", timeout=60)
    assert done.returncode == 69, done.stderr[-3000:]
    (line,) = done.stderr.strip().splitlines()
    assert named in line
    assert terminal_states(db) == {}  # nothing marked failed
