"""An unknown limit found behind the real limiters APIs sit behind: nginx's limit_req and an
HAProxy stick table, each started here in front of a mock API with no limit of its own, each
judged from its own access log (tests/benchmarks/fronts.py; both are installed with apt
when missing, as redis-server is). The figures of the full-size runs are benchmarks
(``python -m tests.benchmarks.pacing --clients ingest --cases discover-…``)."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

from tests.benchmarks import fronts
from tests.support.crawl import crawl, terminal_states
from tests.support.mockapi import statuses


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ingest.db'}"


def crawl_auto(url_template: str, db: str, n: int) -> str:
    done = crawl(url_template, db, "-a", f"ids=1-{n}", RATELIMIT_RATE="auto")
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


def test_auto_finds_haproxys_sliding_window_counter(mockapi, tmp_path: Path) -> None:
    # http_req_rate(10s) over 100 refused with a fixed "Retry-After: 5", every request
    # counted, refused or not. The ramp spends the first period's 100 in about 4 s; the
    # counter then refuses until the next period is under way, longer than the header
    # says: the pause lasts until the limit inferred lets one through.
    n = 200
    mock = mockapi("--limit", "none")
    db = sqlite_url(tmp_path)
    with fronts.haproxy(mock.port, 100, 10, retry_after=5) as front:
        log = crawl_auto(front.url_template, db, n)
        record = front.requests()
    assert len(terminal_states(db)) == n
    assert set(terminal_states(db).values()) == {"stored"}
    assert {e["id"] for e in record if e["status"] == 200} == {str(i) for i in range(1, n + 1)}
    assert statuses(record)[429] <= 3, statuses(record)
    assert "Inferred limit for" in log
    # The first request after each pause (a second or more with nothing sent) went
    # through: no pause was too short.
    resumed = [b for a, b in pairwise(record) if b["t"] - a["t"] >= 1.0]
    assert resumed, "the ramp met no 429"
    assert [e["status"] for e in resumed] == [200] * len(resumed), record


def test_auto_finds_nginx_limit_req_with_a_burst(mockapi, tmp_path: Path) -> None:
    # limit_req rate=600r/m burst=5, no Retry-After: a leaky bucket on nginx's clock.
    n = 120
    mock = mockapi("--limit", "none")
    db = sqlite_url(tmp_path)
    with fronts.nginx(mock.port, 600, 5, nodelay=True) as front:
        log = crawl_auto(front.url_template, db, n)
        record = front.requests()
    assert len(terminal_states(db)) == n
    assert set(terminal_states(db).values()) == {"stored"}
    assert {e["id"] for e in record if e["status"] == 200} == {str(i) for i in range(1, n + 1)}
    assert statuses(record)[429] <= 4, statuses(record)
    assert "Inferred limit for" in log
