"""When the API refuses the token, cannot be reached, or only paces: no id is wrongly marked."""

from __future__ import annotations

import re
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.support.crawl import REPO_ROOT, crawl, crawl_command, environment, terminal_states
from tests.support.mockapi import statuses

FAST = {"RATELIMIT_RATE": "6000/60"}


@pytest.mark.parametrize("token", ["WRONG", None])
def test_a_refused_token_stops_the_crawl_and_marks_nothing(
    mockapi, tmp_path: Path, token: str | None
) -> None:
    api = mockapi("--limit", "none", "--token", "right-token")
    db = f"sqlite:///{tmp_path}/ingest.db"
    env = environment(**({"INGEST_API_TOKEN": token} if token else {}))
    began = time.monotonic()
    done = crawl(api.url_template, db, "-a", "ids=1-200", env=env, **FAST)
    took = time.monotonic() - began
    assert done.returncode == 77, done.stderr[-3000:]
    assert took < 5 + 3  # Scrapy's own start and stop take about 2 s
    errors = [line for line in done.stderr.splitlines() if " ERROR: " in line]
    assert len(errors) == 1 and "401 Unauthorized" in errors[0] and api.base in errors[0]
    assert "WRONG" not in done.stderr
    assert terminal_states(db) == {}
    assert len(api.requests()) <= 16  # CONCURRENT_REQUESTS

    again = crawl(api.url_template, db, "-a", "ids=1-200", env=environment(
        INGEST_API_TOKEN="right-token"), **FAST)  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    states = terminal_states(db)
    assert len(states) == 200 and set(states.values()) == {"stored"}


def test_a_403_before_any_success_is_a_refused_token(mockapi, tmp_path: Path) -> None:
    api = mockapi("--limit", "none")
    api.inject(status=403, count=3)
    db = f"sqlite:///{tmp_path}/ingest.db"
    done = crawl(api.url_template, db, "-a", "ids=1-50", **FAST)
    assert done.returncode == 77, done.stderr[-3000:]
    assert "403 Forbidden" in done.stderr
    assert terminal_states(db) == {}


def test_a_403_after_successes_is_that_ids_failure(mockapi, tmp_path: Path) -> None:
    api = mockapi("--limit", "none")
    api.inject(status=403, count=1, after=5)
    db = f"sqlite:///{tmp_path}/ingest.db"
    done = crawl(api.url_template, db, "-a", "ids=1-20", **FAST)
    assert done.returncode == 3, done.stderr[-3000:]  # finished, an id failed
    assert Counter(terminal_states(db).values()) == {"stored": 19, "failed": 1}
    again = crawl(api.url_template, db, "-a", "ids=1-20", **FAST)
    assert again.returncode == 0, again.stderr[-3000:]  # the failed id tried again, stored
    assert Counter(terminal_states(db).values()) == {"stored": 20}


@pytest.mark.parametrize(("max_pause", "rate"), [(0, "6000/60"), (1, "30/60"), (5, "10/60")])
def test_pacing_slower_than_the_maximum_pause_is_no_reason_to_stop(
    mockapi, tmp_path: Path, max_pause: int, rate: str
) -> None:
    api = mockapi("--limit", "none")
    db = f"sqlite:///{tmp_path}/ingest.db"
    done = crawl(
        api.url_template, db, "-a", "ids=1-3", RATELIMIT_RATE=rate, RATELIMIT_MAX_PAUSE=max_pause
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "RATELIMIT_MAX_PAUSE" not in done.stderr
    assert statuses(api.requests()) == {200: 3}
    assert set(terminal_states(db).values()) == {"stored"} and len(terminal_states(db)) == 3


def test_an_api_down_longer_than_the_retries_last_fails_no_id(mockapi, tmp_path: Path) -> None:
    n = 60
    api = mockapi("--limit", "none")
    db = f"sqlite:///{tmp_path}/ingest.db"
    # One retry, a second at most: an outage of 8 s would fail every id it touched.
    settings = {"RATELIMIT_RATE": "600/60", "RETRY_TIMES": 1, "RETRY_BACKOFF_BASE": 1}
    command = crawl_command(api.url_template, db, "-a", f"ids=1-{n}", **settings)
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, env=environment(), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        before = api.wait_for(40)
        api.stop()
        time.sleep(8)
        again = mockapi("--limit", "none", "--port", str(api.port))
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 0, stderr[-3000:]
    states = terminal_states(db)
    assert len(states) == n and set(states.values()) == {"stored"}
    requested = {e["id"] for e in before} | {e["id"] for e in again.requests()}
    assert requested == {str(i) for i in range(1, n + 1)}
    assert stderr.count("cannot be reached") == 1
    assert "answers again after" in stderr
    # While it was down: the requests in flight, then a probe now and then (after 0.5,
    # 1, 2, 4 s …), not a flood of connection attempts.
    tries = re.search(r"'api/unreachable': (\d+)", stderr)
    assert tries is not None and int(tries.group(1)) <= 16 + 8
