"""Pacing that wastes nothing, end to end: several rates, the server's headers, a wrong
or unknown limit, a pause too long to wait out. Judged from the server's record."""

from __future__ import annotations

import itertools
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.crawl import REPO_ROOT, crawl, crawl_command, environment, terminal_states
from tests.support.mockapi import MockAPI, span, statuses


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ingest.db'}"


def most_in_any_window(times: list[float], seconds: float) -> int:
    times = sorted(times)
    most, first = 0, 0
    for last, t in enumerate(times):
        while t - times[first] >= seconds:
            first += 1
        most = max(most, last - first + 1)
    return most


def crawl_auto(api: MockAPI, db: str, n: int, *, start: str) -> subprocess.CompletedProcess[str]:
    """Ids 1 to ``n`` with the limit unknown (``RATELIMIT_RATE=auto``), from ``start``."""
    return crawl(
        api.url_template, db, "-a", f"ids=1-{n}", RATELIMIT_RATE="auto", RATELIMIT_START=start
    )


def test_every_rate_applies_at_once(mockapi, tmp_path: Path) -> None:
    api = mockapi("--limit", "30/1,60/4", "--algorithm", "sliding")
    db = sqlite_url(tmp_path)
    done = crawl(api.url_template, db, "-a", "ids=1-150", RATELIMIT_RATE="30/1,60/4")
    assert done.returncode == 0, done.stderr[-3000:]
    record = api.requests()
    assert statuses(record) == {200: 150}
    times = [entry["t"] for entry in record]
    assert most_in_any_window(times, 1.0) <= 30
    assert most_in_any_window(times, 4.0) <= 60
    # Two full windows of 60 (8 s), then 30 more at 30/s: the 150th request no sooner
    # than 8 + 29/30 s after the first.
    ideal = 8 + 29 / 30
    assert span(record) >= ideal


def test_a_limit_20_percent_lower_than_configured_costs_few_429s(mockapi, tmp_path: Path) -> None:
    n = 300
    api = mockapi("--limit", "100/5", "--algorithm", "sliding")
    db = sqlite_url(tmp_path)
    done = crawl(api.url_template, db, "-a", f"ids=1-{n}", RATELIMIT_RATE="120/5")
    assert done.returncode == 0, done.stderr[-3000:]
    record = api.requests()
    assert statuses(record)[429] <= 0.02 * len(record)
    assert len(terminal_states(db)) == n and set(terminal_states(db).values()) == {"stored"}
    # The limit is inferred from the first 429, not merely approached by cutting the pace.
    assert "Inferred limit for http://127.0.0.1" in done.stderr
    assert "'ratelimit/inferred_limit': '100/5'" in done.stderr
    assert re.search(r"'ratelimit/429_unexpected': [1-9]", done.stderr)


def test_auto_finds_an_unknown_limit_and_keeps_under_it(mockapi, tmp_path: Path) -> None:
    n = 150
    api = mockapi("--limit", "50/5", "--algorithm", "sliding")
    db = sqlite_url(tmp_path)
    done = crawl_auto(api, db, n, start="300/60")  # 5/s, ramping up: 10/s within seconds
    assert done.returncode == 0, done.stderr[-3000:]
    record = api.requests()
    assert 1 <= statuses(record)[429] <= 4
    assert len(terminal_states(db)) == n and set(terminal_states(db).values()) == {"stored"}
    assert "Inferred limit for http://127.0.0.1" in done.stderr
    inferred = re.search(r"'ratelimit/inferred_rate': ([\d.]+)", done.stderr)
    assert inferred and 540 <= float(inferred.group(1)) <= 600, done.stderr[-3000:]
    assert re.search(r"\(inferred \d+/\d+ s from \d x 429\)", done.stderr)


def test_auto_without_a_limit_meets_no_429_and_says_the_limit_is_not_known(
    mockapi, tmp_path: Path
) -> None:
    n = 400
    api = mockapi("--limit", "none")
    db = sqlite_url(tmp_path)
    done = crawl_auto(api, db, n, start="3000/60")  # 50/s, ramping up: done in about 6 s
    assert done.returncode == 0, done.stderr[-3000:]
    assert statuses(api.requests()) == {200: n}
    assert len(terminal_states(db)) == n and set(terminal_states(db).values()) == {"stored"}
    assert "the limit is not known" in done.stderr, done.stderr[-3000:]


def test_a_hidden_second_quota_costs_few_429s(mockapi, tmp_path: Path) -> None:
    n = 300
    api = mockapi("--limit", "100/5,150/15", "--algorithm", "fixed")
    db = sqlite_url(tmp_path)
    done = crawl(api.url_template, db, "-a", f"ids=1-{n}", RATELIMIT_RATE="100/5")
    assert done.returncode == 0, done.stderr[-3000:]
    record = api.requests()
    assert statuses(record)[429] <= 0.05 * len(record)
    assert set(terminal_states(db).values()) == {"stored"} and len(terminal_states(db)) == n


@pytest.mark.parametrize("headers", ["x-ratelimit", "ietf"])
@pytest.mark.parametrize("algorithm", ["fixed", "sliding"])
def test_announced_quotas_are_followed_within_three_429s(
    mockapi, tmp_path: Path, headers: str, algorithm: str
) -> None:
    n = 100
    api = mockapi("--limit", "40/4", "--algorithm", algorithm, "--headers", headers)
    db = sqlite_url(tmp_path)
    # Configured a hundred times faster than the server allows.
    done = crawl(api.url_template, db, "-a", f"ids=1-{n}", RATELIMIT_RATE="6000/60")
    assert done.returncode == 0, done.stderr[-3000:]
    record = api.requests()
    assert statuses(record)[429] <= 3
    assert statuses(record)[200] == n
    assert len(terminal_states(db)) == n


def test_403_with_nothing_remaining_is_rate_limiting(mockapi, tmp_path: Path) -> None:
    api = mockapi(
        "--limit", "20/3", "--limit-status", "403", "--headers", "x-ratelimit",
        "--reset-format", "epoch",
    )  # fmt: skip
    db = sqlite_url(tmp_path)
    done = crawl(api.url_template, db, "-a", "ids=1-50", RATELIMIT_RATE="6000/60")
    assert done.returncode == 0, done.stderr[-3000:]
    assert set(terminal_states(db).values()) == {"stored"} and len(terminal_states(db)) == 50
    assert statuses(api.requests())[403] <= 3


def test_a_pause_longer_than_the_maximum_stops_cleanly(mockapi, tmp_path: Path) -> None:
    api = mockapi("--limit", "none")
    api.inject(status=429, count=1, after=20, retry_after=3600)
    db = sqlite_url(tmp_path)
    command = crawl_command(api.url_template, db, "-a", "ids=1-100", RATELIMIT_RATE="1200/60")
    began = time.monotonic()
    process = subprocess.run(
        command,
        cwd=REPO_ROOT,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    took = time.monotonic() - began
    assert process.returncode == 75, process.stderr[-3000:]
    assert took < 10
    assert re.search(
        r"asks to wait 36\d\ds .* Run the same command again after \d{4}-", process.stderr
    )
    assert "Closing spider (ratelimit_paused)" in process.stderr
    stored = terminal_states(db)
    assert len(stored) == 20  # everything answered is stored; the rest waits for the rerun
    api.reset()  # the hour has passed
    done = crawl(api.url_template, db, "-a", "ids=1-100", RATELIMIT_RATE="1200/60")
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(terminal_states(db)) == 100 and set(terminal_states(db).values()) == {"stored"}
    assert statuses(api.requests()) == {200: 80}  # only the ids not yet done


def test_retry_after_zero_means_an_ordinary_backoff(mockapi, tmp_path: Path) -> None:
    api = mockapi("--limit", "none", "--no-enforce-retry-after")
    api.inject(status=429, count=1, after=5, retry_after=0)
    db = sqlite_url(tmp_path)
    done = crawl(api.url_template, db, "-a", "ids=1-15", RATELIMIT_RATE="1200/60")
    assert done.returncode == 0, done.stderr[-3000:]
    record = api.requests()
    (limited,) = [i for i, entry in enumerate(record) if entry["status"] == 429]
    assert record[limited + 1]["t"] - record[limited]["t"] >= 1.0  # the first backoff step
    assert "no Retry-After: backing off" in done.stderr
    assert "Resuming requests to" in done.stderr


def test_the_second_request_is_paced_from_the_first_answer(mockapi, tmp_path: Path) -> None:
    # The first request also opens the connection, so it reaches the server later than
    # its send time says; a bucket with no burst must still see the two a full interval apart.
    api = mockapi("--limit", "600/60", "--algorithm", "token", "--burst", "1")
    done = crawl(api.url_template, sqlite_url(tmp_path), "-a", "ids=1-5", RATELIMIT_RATE="600/60")
    assert done.returncode == 0, done.stderr[-3000:]
    first, second = api.requests()[:2]
    assert second["t"] - first["t"] >= 0.1
    assert first["status"] == second["status"] == 200


def test_no_request_goes_before_the_first_one_is_answered(mockapi, tmp_path: Path) -> None:
    # An answer slower than the interval: the next requests wait for it all the same,
    # then go a full interval later; after that they are paced as usual.
    api = mockapi("--limit", "600/60", "--algorithm", "sliding", "--latency", "0.3")
    done = crawl(api.url_template, sqlite_url(tmp_path), "-a", "ids=1-6", RATELIMIT_RATE="600/60")
    assert done.returncode == 0, done.stderr[-3000:]
    record = api.requests()
    assert statuses(record) == {200: 6}
    times = sorted(r["t"] for r in record)
    assert times[1] - times[0] >= 0.3 + 0.1
    assert max(b - a for a, b in itertools.pairwise(times[1:])) < 0.3
