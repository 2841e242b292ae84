"""What a crawl shows of itself: /metrics mid-crawl and the summary, against the server's record
and the database; no port unless asked."""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from pathlib import Path

from tests.support.crawl import REPO_ROOT, query, terminal_states
from tests.support.metrics import RunningCrawl, listening_ports, scrape, value
from tests.support.mockapi import span, statuses
from tests.test_status import status

FAST = {"RATELIMIT_RATE": "1200/60", "RETRY_BACKOFF_BASE": 0.05, "PROGRESS_INTERVAL": 0.5}


def test_metrics_mid_crawl_match_the_server_and_the_database(mockapi, tmp_path: Path) -> None:
    api = mockapi("--limit", "none", "--not-found", "4", "--invalid", "7")
    api.inject(status=503, count=2, after=5)
    api.inject(status=429, count=1, after=12, retry_after=3)
    db = f"sqlite:///{tmp_path / 'ingest.db'}"
    crawl = RunningCrawl(api.url_template, db, "-a", "ids=1-60", METRICS_PORT=0, **FAST)
    try:
        url = crawl.wait_for(r"Metrics for Prometheus at (http://\S+/metrics)").group(1)
        assert listening_ports(crawl.process.pid) == {int(url.rsplit(":", 1)[1].split("/")[0])}
        deadline = time.monotonic() + 20
        while value(scrape(url)[1], "ingest_paused") != 1:  # the 429's pause: all is still
            assert time.monotonic() < deadline, crawl.log[-3000:]
            time.sleep(0.05)
        time.sleep(0.5)  # answers in flight land, and their outcomes are written
        record, states = api.requests(), terminal_states(db)
        text, samples = scrape(url)
    finally:
        code = crawl.finish()
    assert code == 0, crawl.log[-3000:]

    assert (
        "# HELP ingest_requests_total " in text
        and "# TYPE ingest_pace_requests_per_minute gauge" in text
    )
    labels = {"api": api.base}
    by_status = {
        int(dict(ls)["status"]): v
        for (name, ls), v in samples.items()
        if name == "ingest_requests_total" and dict(ls).get("api") == api.base
    }
    assert by_status == dict(statuses(record)) and by_status[429] == 1 and by_status[503] == 2
    assert value(samples, "ingest_requests_sent_total", **labels) == len(record)
    limited = sum(v for (n, _), v in samples.items() if n == "ingest_rate_limited_total")
    assert limited == statuses(record)[429]
    assert value(samples, "ingest_retries_total", kind="backoff") == statuses(record)[503]
    assert value(samples, "ingest_retries_total", kind="rate_limited") == 1
    in_db = Counter(states.values())
    for state in ("stored", "not_found", "invalid", "failed"):
        assert value(samples, "ingest_ids_total", state=state) == in_db[state], state
    assert value(samples, "ingest_ids_pending") == 60 - len(states) > 0
    assert value(samples, "ingest_paused_until_timestamp_seconds") > record[-1]["t"]
    assert value(samples, "ingest_storage_batches_total") >= 1
    assert value(samples, "ingest_storage_write_seconds_count") >= 1
    assert value(samples, "ingest_storage_outage") == 0
    dashboard = (REPO_ROOT / "docs" / "grafana-dashboard.json").read_text()
    used = set(re.findall(r"ingest_[a-z_]+", dashboard)) - {"ingest_crawl"}
    # Every series the dashboard uses is served (a quota only once the server tells one).
    served = {name for name, _ in samples} | set(re.findall(r"# HELP (\w+)", text))
    assert used and served >= used
    # Scrapy's own key counts the 429 that was requeued, as the README says.
    record = api.requests()
    assert f"'downloader/response_status_count/429': {statuses(record)[429]}," in crawl.log
    assert f"'downloader/request_count': {len(record)}," in crawl.log


def test_summary_equals_the_servers_record_and_no_port_is_opened(mockapi, tmp_path: Path) -> None:
    api = mockapi("--limit", "none", "--not-found", "9")
    api.inject(status=500, count=2, after=5)
    api.inject(status=503, count=3, after=10)
    db = f"sqlite:///{tmp_path / 'ingest.db'}"
    jobdir = tmp_path / "job"
    crawl = RunningCrawl(api.url_template, db, "-a", "ids=1-50", JOBDIR=jobdir, **FAST)
    try:
        api.wait_for(20)
        assert listening_ports(crawl.process.pid) == set()  # no METRICS_PORT: no port
    finally:
        code = crawl.finish()
    assert code == 0, crawl.log[-3000:]
    record = api.requests()
    assert len(record) == 55 and statuses(record)[500] == 2 and statuses(record)[503] == 3
    summary = re.search(
        r"Summary \(finished: (\d+) stored, (\d+) not_found, 0 invalid, 0 failed; .*; "
        r"(\d+) requests \((\d+) retries, (\d+) x 429\) at ([\d.]+)/min",
        crawl.log,
    )
    assert summary, crawl.log[-3000:]
    stored, not_found, requests, retries, throttled = map(int, summary.groups()[:5])
    assert (stored, not_found) == (49, 1) == (len(query(db, "SELECT id FROM items")), 1)
    assert (requests, retries, throttled) == (len(record), 5, 0)
    server_rate = (len(record) - 1) * 60 / span(record)
    assert abs(float(summary.group(6)) - server_rate) <= 0.01 * server_rate
    # ingest-status --json tells the job's last summary, the same figures.
    done = status(db, "-a", "ids=1-50", "-s", f"JOBDIR={jobdir}", "--json")
    report = json.loads(done.stdout)
    assert report["job"]["pending"] == 0
    assert report["last_summary"]["requests"] == len(record)
    assert report["last_summary"]["ids"]["stored"] == 49


def test_each_worker_serves_its_own_metrics(mockapi, tmp_path: Path, redis_url: str) -> None:
    api = mockapi("--limit", "none")
    db = f"sqlite:///{tmp_path / 'ingest.db'}"
    settings = {**FAST, "DISTRIBUTED": 1, "REDIS_URL": redis_url, "METRICS_PORT": 0}
    crawls = [RunningCrawl(api.url_template, db, "-a", "ids=1-80", **settings) for _ in range(2)]
    try:
        seen = {}
        for crawl in crawls:
            worker = crawl.wait_for(r"Worker (\S+) of job").group(1)
            url = crawl.wait_for(r"Metrics for Prometheus at (http://\S+/metrics)").group(1)
            api.wait_for(5)
            _, samples = scrape(url)
            workers = {dict(ls).get("worker") for (name, ls), _ in samples.items()}
            assert workers == {worker}, workers
            assert value(samples, "ingest_requests_sent_total", worker=worker, api=api.base) >= 0
            seen[url] = worker
        assert len(set(seen.values())) == 2 and len(seen) == 2
    finally:
        codes = [crawl.finish() for crawl in crawls]
    assert codes == [0, 0], [crawl.log[-2000:] for crawl in crawls]
    assert len(terminal_states(db)) == 80
