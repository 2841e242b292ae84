"""Stop and resume with real signals: nothing lost, nothing stored twice, little re-sent."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.support.crawl import (
    REPO_ROOT,
    crawl,
    crawl_command,
    duplicate_rows,
    environment,
    terminal_states,
)
from tests.support.mockapi import MockAPI, statuses

N = 400
CONCURRENT_REQUESTS = 16
WRITE_WINDOW = 0.25  # seconds: STORAGE_LINGER (0.05) and the write itself, with room
SETTINGS = {"RATELIMIT_RATE": "12000/60", "CONCURRENT_REQUESTS": CONCURRENT_REQUESTS}


def start(api: MockAPI, db: str, jobdir: Path, **env: str) -> subprocess.Popen[str]:
    command = crawl_command(api.url_template, db, "-a", f"ids=1-{N}", JOBDIR=jobdir, **SETTINGS)
    return subprocess.Popen(
        command, cwd=REPO_ROOT, env=environment(**env), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def stop(process: subprocess.Popen[str], how: str) -> float:
    """Stop ``process`` as ``how`` says; return the wall-clock time of the stop."""
    stopped = time.time()
    if how == "kill":
        process.kill()
    else:
        process.send_signal(signal.SIGINT)
        if how == "sigint-twice":
            time.sleep(0.05)
            process.send_signal(signal.SIGINT)
    process.communicate(timeout=30)
    return stopped


@pytest.mark.parametrize("trial", range(3))
@pytest.mark.parametrize("how", ["sigint", "sigint-twice", "kill"])
def test_a_stop_at_any_moment_loses_nothing(mockapi, tmp_path: Path, how: str, trial: int) -> None:
    api = mockapi("--limit", "none", "--not-found", "13,250")
    db, jobdir = f"sqlite:///{tmp_path}/ingest.db", tmp_path / "job"
    moment = random.Random(f"{how}-{trial}").randint(10, N - 40)
    process = start(api, db, jobdir)
    try:
        api.wait_for(moment)
        stopped = stop(process, how)
    finally:
        process.kill()
    sent_before = len(api.requests())
    assert sent_before < N  # it did stop early
    # Stopped before done, by Ctrl-C once or twice: the exit code says to run it again.
    assert process.returncode == (-signal.SIGKILL if how == "kill" else 75)

    done = crawl(
        api.url_template, db, "-a", f"ids=1-{N}", JOBDIR=jobdir, **SETTINGS
    )  # the same command
    assert done.returncode == 0, done.stderr[-3000:]
    states = terminal_states(db)
    assert len(states) == N
    assert Counter(states.values()) == {"stored": N - 2, "not_found": 2}
    assert duplicate_rows(db) == 0
    requested = Counter(entry["id"] for entry in api.requests())
    assert set(requested) == {str(i) for i in range(1, N + 1)}
    again = [id_ for id_, count in requested.items() if count > 1]
    # In flight: requests sent, and answers not yet written. Those are the ones
    # answered in the last STORAGE_LINGER (with room for the write) before a forced stop.
    unwritten = sum(stopped - WRITE_WINDOW < entry["t"] <= stopped for entry in api.requests())
    assert len(again) <= CONCURRENT_REQUESTS + (unwritten if how != "sigint" else 0), again


def test_ctrl_c_during_a_long_pause_stops_within_two_seconds(mockapi, tmp_path: Path) -> None:
    api = mockapi("--limit", "none")
    api.inject(status=429, count=1, after=20, retry_after=30)
    db, jobdir = f"sqlite:///{tmp_path}/ingest.db", tmp_path / "job"
    process = start(api, db, jobdir)
    try:
        api.wait_for(21)
        time.sleep(0.5)  # everyone is waiting out the 30 s now
        began = time.monotonic()
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
        took = time.monotonic() - began
    finally:
        process.kill()
    assert took < 2.0, stderr[-3000:]
    assert process.returncode == 75  # stopped before done: the same command continues
    assert "scheduler/returned" in stderr  # the waiting requests went back to the queue
    api.reset()  # the server forgets the pause; the rerun finishes at once
    done = crawl(api.url_template, db, "-a", f"ids=1-{N}", JOBDIR=jobdir, **SETTINGS)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(terminal_states(db)) == N
    assert statuses(api.requests()) == {200: N - 20}


def test_a_finished_range_sends_nothing_with_or_without_jobdir(mockapi, tmp_path: Path) -> None:
    api = mockapi("--limit", "none", "--not-found", "7")
    db, jobdir = f"sqlite:///{tmp_path}/ingest.db", tmp_path / "job"
    assert crawl(api.url_template, db, "-a", "ids=1-50", JOBDIR=jobdir, **SETTINGS).returncode == 0
    sent = len(api.requests())
    for extra in ({"JOBDIR": jobdir}, {"JOBDIR": tmp_path / "other"}, {}):
        done = crawl(api.url_template, db, "-a", "ids=1-50", **extra, **SETTINGS)
        assert done.returncode == 0, done.stderr[-3000:]
    assert len(api.requests()) == sent == 50


def test_failed_ids_are_tried_again_and_invalid_ones_only_with_refresh(
    mockapi, tmp_path: Path
) -> None:
    db = f"sqlite:///{tmp_path}/ingest.db"
    broken = mockapi("--limit", "none", "--error-rate", "1", "--error-statuses", "503")
    done = crawl(broken.url_template, db, "-a", "ids=1-5", RETRY_TIMES=0, **SETTINGS)
    assert done.returncode == 3 and set(terminal_states(db).values()) == {"failed"}

    api = mockapi("--limit", "none", "--invalid", "6")
    done = crawl(api.url_template, db, "-a", "ids=1-6", **SETTINGS)
    assert done.returncode == 0
    assert terminal_states(db) == {**{str(i): "stored" for i in range(1, 6)}, "6": "invalid"}
    assert len(api.requests()) == 6  # 1-5 were failed: tried again
    done = crawl(api.url_template, db, "-a", "ids=1-6", **SETTINGS)
    assert len(api.requests()) == 6  # stored and invalid: left alone
    done = crawl(api.url_template, db, "-a", "ids=1-6", "-a", "refresh=1", **SETTINGS)
    assert done.returncode == 0
    assert len(api.requests()) == 12


def test_the_token_leaves_no_trace(mockapi, tmp_path: Path) -> None:
    secret = "s3cr3t-t0ken-4f9d"
    api = mockapi("--limit", "none", "--token", secret)
    db, jobdir = f"sqlite:///{tmp_path}/ingest.db", tmp_path / "job"
    process = start(api, db, jobdir, INGEST_API_TOKEN=secret)
    try:
        api.wait_for(100)
        process.send_signal(signal.SIGINT)  # leaves requests queued in JOBDIR
        _, first_log = process.communicate(timeout=30)
    finally:
        process.kill()
    done = crawl(
        api.url_template, db, "-a", f"ids=1-{N}", JOBDIR=jobdir, LOG_LEVEL="DEBUG",
        env=environment(INGEST_API_TOKEN=secret), **SETTINGS,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    record = api.requests()
    assert all(entry["auth"] for entry in record)  # the token was sent every time
    assert len(terminal_states(db)) == N
    assert secret not in first_log and secret not in done.stderr
    for path in [*tmp_path.rglob("*")]:
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
