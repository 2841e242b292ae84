"""The core crawl end to end: ``scrapy crawl api`` against the mock API process, into SQLite.

Pacing is judged from the server's record of what it received, never from the
crawler's own counters.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.support.crawl import (
    REPO_ROOT,
    crawl,
    crawl_command,
    duplicate_rows,
    environment,
    failures,
    query,
    terminal_states,
)
from tests.support.mockapi import span, statuses


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ingest.db'}"


def stat(log: str, key: str) -> float:
    match = re.search(rf"'{re.escape(key)}': ([\d.]+)", log)
    return float(match.group(1)) if match else 0.0


@pytest.mark.parametrize(
    "server",
    [
        pytest.param(["--algorithm", "fixed"], id="fixed-window"),
        pytest.param(["--algorithm", "sliding"], id="sliding-window-counting-rejects"),
        pytest.param(["--algorithm", "token", "--burst", "2"], id="token-bucket"),
    ],
)
def test_paces_at_the_limit_without_a_429(mockapi, tmp_path: Path, server: list[str]) -> None:
    n, rate = 200, "1200/60"
    api = mockapi("--limit", rate, "--retry-after", "seconds", *server)
    db = sqlite_url(tmp_path)
    done = crawl(api.url_template, db, "-a", f"ids=1-{n}", RATELIMIT_RATE=rate)
    assert done.returncode == 0, done.stderr[-3000:]
    record = api.requests()
    assert statuses(record) == {200: n}
    ideal = (n - 1) * 60 / 1200
    assert span(record) >= ideal  # never faster than the limit (how close: the benchmark)
    states = terminal_states(db)
    assert sorted(states, key=int) == [str(i) for i in range(1, n + 1)]
    assert set(states.values()) == {"stored"}


def test_every_id_ends_in_exactly_one_terminal_state(mockapi, tmp_path: Path) -> None:
    api = mockapi(
        "--limit",
        "none",
        "--not-found",
        "3",
        "--gone",
        "4",
        "--invalid",
        "5,6",
        "--not-json",
        "7",
    )
    broken = mockapi("--limit", "none", "--error-rate", "1", "--error-statuses", "500")
    db = sqlite_url(tmp_path)
    done = crawl(api.url_template, db, "-a", "ids=1-12", RATELIMIT_RATE="6000/60")
    assert done.returncode == 3, done.stderr[-3000:]  # finished, with an id failed
    done = crawl(
        broken.url_template,
        db,
        "-a",
        "ids=20-21",
        RATELIMIT_RATE="6000/60",
        RETRY_TIMES=2,
        RETRY_BACKOFF_BASE=0.01,
    )
    assert done.returncode == 3, done.stderr[-3000:]  # both failed after their retries

    states = terminal_states(db)
    expected = {str(i): "stored" for i in [1, 2, 8, 9, 10, 11, 12]}
    expected |= {"3": "not_found", "4": "not_found", "5": "invalid", "6": "invalid"}
    expected |= {"7": "failed", "20": "failed", "21": "failed"}
    assert states == expected
    assert duplicate_rows(db) == 0

    failed = failures(db)
    _state, reason, data = failed["5"]
    assert "schema" in (reason or "") and data is not None and '"price"' in data
    assert failed["3"][1] == "404 Not Found" and failed["4"][1] == "410 Gone"
    assert "not JSON" in (failed["7"][1] or "")
    assert failed["20"][1] == "500 Internal Server Error (after 2 retries)"
    # Each broken id was tried three times (one request and two retries), no more.
    assert statuses(broken.requests()) == {500: 6}
    (name,) = query(db, "SELECT json_extract(data, '$.name') FROM items WHERE id = '1'")[0]
    assert name == "Item 1"


def test_retry_after_pauses_every_request_then_resumes_paced(mockapi, tmp_path: Path) -> None:
    api = mockapi("--limit", "none")
    api.inject(status=429, count=1, after=10, retry_after=2)
    db = sqlite_url(tmp_path)
    done = crawl(api.url_template, db, "-a", "ids=1-30", RATELIMIT_RATE="1200/60")
    assert done.returncode == 0, done.stderr[-3000:]
    record = api.requests()
    limited = [i for i, entry in enumerate(record) if entry["status"] == 429]
    assert len(limited) == 1
    t429 = record[limited[0]]["t"]
    after = [entry["t"] - t429 for entry in record[limited[0] + 1 :]]
    # Nothing within the 2 s the server named; then requests again (a loaded machine may
    # be late, never early).
    assert 2.0 <= after[0] < 4.0
    # Then paced at 1200/60, not a burst of everything that waited: the k-th request
    # after the pause no sooner than k slots of 50 ms after its end (a late one does not
    # make the next ones early; a millisecond for the way to the server).
    assert all(t >= 2.0 + k * 0.05 - 0.001 for k, t in enumerate(after)), after
    assert set(terminal_states(db).values()) == {"stored"} and len(terminal_states(db)) == 30
    assert stat(done.stderr, "ratelimit/pauses") == 1
    assert "Pausing requests to http://127.0.0.1" in done.stderr


def test_retry_after_as_an_http_date_is_obeyed(mockapi, tmp_path: Path) -> None:
    api = mockapi("--limit", "none")
    api.inject(status=429, count=1, after=5, retry_after=2, retry_after_format="http-date")
    db = sqlite_url(tmp_path)
    done = crawl(api.url_template, db, "-a", "ids=1-15", RATELIMIT_RATE="1200/60")
    assert done.returncode == 0, done.stderr[-3000:]
    record = api.requests()
    # The server answers any request before its date with 429 "early": there is none.
    assert [entry["reason"] for entry in record].count("early") == 0
    assert statuses(record) == {200: 15, 429: 1}


def test_concurrent_429s_make_one_pause(mockapi, tmp_path: Path) -> None:
    # Answers take 0.3 s, so six requests are in flight when the 429 comes back: the
    # server answers them 429 too (they arrive before the time it named).
    api = mockapi("--limit", "none", "--latency", "0.3")
    api.inject(status=429, count=1, after=8, retry_after=1)
    db = sqlite_url(tmp_path)
    done = crawl(api.url_template, db, "-a", "ids=1-30", RATELIMIT_RATE="1200/60")
    assert done.returncode == 0, done.stderr[-3000:]
    record = api.requests()
    # Several 429s at once (those in flight, early for the time the server named)...
    assert statuses(record)[429] >= 2
    # ... one pause, and no more early requests than could be in flight at once.
    assert stat(done.stderr, "ratelimit/pauses") == 1
    assert [e["reason"] for e in record].count("early") <= 16
    assert statuses(record)[200] == 30
    assert set(terminal_states(db).values()) == {"stored"}


def test_failed_requests_back_off_alone_and_retry_after_is_a_floor(mockapi, tmp_path: Path) -> None:
    api = mockapi("--limit", "none")
    api.inject(status=503, count=4, after=10)
    db = sqlite_url(tmp_path)
    done = crawl(
        api.url_template, db, "-a", "ids=1-60", RATELIMIT_RATE="1200/60", RETRY_BACKOFF_BASE=2
    )
    assert done.returncode == 0, done.stderr[-3000:]
    record = api.requests()
    # A retry drawn soon enough can meet one of the four 503s again: count answers.
    first_503 = {e["id"]: e["t"] for e in reversed(record) if e["status"] == 503}
    assert statuses(record)[503] == 4 and len(first_503) >= 2
    retried_at = {e["id"]: e["t"] for e in record if e["status"] == 200 and e["id"] in first_503}
    gaps = [retried_at[i] - first_503[i] for i in first_503]
    # Full jitter over [0, 2 s]: every retry under 0.1 s would be a 1-in-400 draw at
    # worst; an immediate retry (Scrapy's) would put them all at the pacing interval.
    assert max(gaps) > 0.1
    # Only the retried requests waited: other ids went on at the pace meanwhile.
    earliest, latest = min(first_503.values()), max(retried_at.values())
    others = [e for e in record if earliest < e["t"] < latest and e["id"] not in first_503]
    assert len(others) >= (latest - earliest) / 0.05 * 0.8
    assert set(terminal_states(db).values()) == {"stored"}

    floor = mockapi("--limit", "none")
    floor.inject(status=503, count=1, after=3, retry_after=1)
    done = crawl(
        floor.url_template,
        f"sqlite:///{tmp_path}/floor.db",
        "-a",
        "ids=1-8",
        RATELIMIT_RATE="1200/60",
        RETRY_BACKOFF_BASE=0.01,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    record = floor.requests()
    (bad,) = [e for e in record if e["status"] == 503]
    retry = next(e for e in record if e["id"] == bad["id"] and e["status"] == 200)
    assert retry["t"] - bad["t"] >= 1.0


def test_the_same_command_twice_stores_nothing_twice(mockapi, tmp_path: Path) -> None:
    api = mockapi("--limit", "none", "--not-found", "4")
    db = sqlite_url(tmp_path)
    first = crawl(api.url_template, db, "-a", "ids=1-40", RATELIMIT_RATE="6000/60")
    assert first.returncode == 0, first.stderr[-3000:]
    before = query(db, "SELECT id, data, fetched_at FROM items ORDER BY id")
    sent = len(api.requests())
    second = crawl(api.url_template, db, "-a", "ids=1-40", RATELIMIT_RATE="6000/60")
    assert second.returncode == 0, second.stderr[-3000:]
    assert len(api.requests()) == sent == 40  # no request for what is done
    assert query(db, "SELECT id, data, fetched_at FROM items ORDER BY id") == before
    assert duplicate_rows(db) == 0 and len(terminal_states(db)) == 40
    assert "40 skipped as already done" in second.stderr

    refreshed = crawl(
        api.url_template, db, "-a", "ids=1-40", "-a", "refresh=1", RATELIMIT_RATE="6000/60"
    )
    assert refreshed.returncode == 0, refreshed.stderr[-3000:]
    assert len(api.requests()) == 80
    assert duplicate_rows(db) == 0 and len(terminal_states(db)) == 40


def test_progress_lines_and_a_summary(mockapi, tmp_path: Path) -> None:
    api = mockapi("--limit", "none", "--not-found", "2")
    done = crawl(
        api.url_template,
        sqlite_url(tmp_path),
        "-a",
        "ids=1-40",
        RATELIMIT_RATE="1200/60",
        PROGRESS_INTERVAL=0.5,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    progress = re.findall(
        r"Progress: (\d+)/40 ids .*req/min over the last minute \| (\d+) x 429"
        r" \| paused [\d.]+s",
        done.stderr,
    )
    assert len(progress) >= 2
    assert [int(done) for done, _ in progress] == sorted(int(done) for done, _ in progress)
    assert re.search(
        r"Summary \(finished: 39 stored, 1 not_found, 0 invalid, 0 failed; .* elapsed [\d.]+s; "
        r"40 requests \(0 retries, 0 x 429\) at [\d.]+/min = \d+\.\d% of the 1200/60 limit\)",
        done.stderr,
    )


def test_autothrottle_slows_the_crawl_when_latency_climbs(mockapi, tmp_path: Path) -> None:
    api = mockapi("--limit", "none")
    process = subprocess.Popen(
        crawl_command(
            api.url_template, sqlite_url(tmp_path), "-a", "ids=1-150", RATELIMIT_RATE="1200/60"
        ),
        cwd=REPO_ROOT,
        env=environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        api.wait_for(40)
        api.configure(latency=1.0)
        changed = len(api.requests())
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 0, stderr[-3000:]
    record = api.requests()
    healthy = record[5:changed]
    slow = record[changed + 20 :]  # once AutoThrottle has seen the new latency
    healthy_rate = (len(healthy) - 1) / span(healthy)
    slow_rate = (len(slow) - 1) / span(slow)
    # 1 s answers, 8 wanted in flight: AutoThrottle asks for 8/s at most, where the
    # pace alone (20/s) went before.
    assert slow_rate <= 10 < healthy_rate


def test_ids_are_sent_as_one_encoded_path_segment(mockapi, tmp_path: Path) -> None:
    ids = ["x#y", "x?y=1", "%2F", "50%", "a b", "a/b", "../x", "café", "x"]
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("\n".join(ids) + "\n", encoding="utf-8")
    api = mockapi("--limit", "none")
    db = sqlite_url(tmp_path)
    done = crawl(api.url_template, db, "-a", f"ids_file={ids_file}", RATELIMIT_RATE="6000/60")
    assert done.returncode == 0, done.stderr[-3000:]
    record = api.requests()
    # The server got each id whole, as one segment: x#y as /items/x%23y, not /items/x.
    assert sorted(entry["id"] for entry in record) == sorted(ids)
    assert {entry["raw_path"] for entry in record} >= {"/items/x%23y", "/items/%252F"}
    rows = query(db, "SELECT id, json_extract(data, '$.id') FROM items")
    # Each id is stored with the payload the server returned for that id, and no other.
    assert sorted(rows) == sorted((id_, id_) for id_ in ids)


def test_an_export_holds_each_payload_as_json(mockapi, tmp_path: Path) -> None:
    api = mockapi("--limit", "none", "--not-found", "2")
    out = tmp_path / "out.jsonl"
    done = crawl(
        api.url_template, sqlite_url(tmp_path), "-a", "ids=1-3", "-O", str(out),
        RATELIMIT_RATE="6000/60",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    by_id = {line["id"]: line for line in lines}
    assert by_id["1"]["data"]["name"] == "Item 1" and by_id["1"]["state"] == "stored"
    assert by_id["2"]["state"] == "not_found" and by_id["2"]["data"] is None
    assert "payload" not in by_id["1"]


def test_invalid_ids_that_pass_a_changed_schema_are_stored_without_a_request(
    mockapi, tmp_path: Path
) -> None:
    api = mockapi("--limit", "none")
    db = sqlite_url(tmp_path)
    wrong = tmp_path / "wrong.schema.json"
    wrong.write_text(json.dumps({"type": "object", "required": ["sku"]}))
    ids = ["-a", "ids=1-60"]
    first = crawl(api.url_template, db, *ids, RATELIMIT_RATE="6000/60", ITEM_SCHEMA=str(wrong))
    assert first.returncode == 0, first.stderr[-3000:]  # invalid is an outcome
    assert set(terminal_states(db).values()) == {"invalid"} and len(terminal_states(db)) == 60
    sent = len(api.requests())

    # The mock's own schema: every payload kept passes it.
    done = crawl(api.url_template, db, *ids, RATELIMIT_RATE="6000/60")
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(api.requests()) == sent  # not one request
    assert set(terminal_states(db).values()) == {"stored"} and len(terminal_states(db)) == 60
    assert "60 ids kept as invalid pass the changed schema: stored without a request" in (
        done.stderr
    )
    assert stat(done.stderr, "validation/revalidated_stored") == 60


def test_without_item_schema_any_json_object_is_stored(mockapi, tmp_path: Path) -> None:
    api = mockapi("--limit", "none", "--shape", "sku")  # {"sku": "A1", "title": "Item 1"}
    db = sqlite_url(tmp_path)
    done = crawl(api.url_template, db, "-a", "ids=1-20", RATELIMIT_RATE="6000/60", ITEM_SCHEMA=None)
    assert done.returncode == 0, done.stderr[-3000:]
    assert set(terminal_states(db).values()) == {"stored"} and len(terminal_states(db)) == 20
    assert json.loads(query(db, "SELECT data FROM items WHERE id = '1'")[0][0]) == {
        "sku": "A1",
        "title": "Item 1",
    }


def test_an_answer_for_another_id_is_invalid_naming_both(mockapi, tmp_path: Path) -> None:
    api = mockapi("--limit", "none", "--wrong-id", "7,57")  # one id in 50
    db = sqlite_url(tmp_path)
    done = crawl(api.url_template, db, "-a", "ids=1-100", RATELIMIT_RATE="6000/60")
    assert done.returncode == 0, done.stderr[-3000:]
    states = terminal_states(db)
    assert {id_ for id_, state in states.items() if state == "invalid"} == {"7", "57"}
    assert len(states) == 100 and stat(done.stderr, "items/id_mismatch") == 2
    reason = failures(db)["7"][1]
    assert (
        reason
        == "the answer is the item of id '1000007', not of the id asked, '7' (at API_ITEM_ID 'id')"
    )
    # No row holds another id's item.
    stored = query(db, "SELECT id, json_extract(data, '$.id') FROM items")
    assert all(str(named) == id_ for id_, named in stored) and len(stored) == 98
