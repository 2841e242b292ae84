"""Several API keys: read and checked, each request on the key that can send soonest, a
refused key retired, and no token anywhere but the Authorization header."""

from __future__ import annotations

import asyncio
import configparser
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
import redis
from scrapy.settings import Settings
from scrapy.utils.test import get_crawler

from ingest.config.keys import load_keys, parse_tokens
from ingest.config.masking import fingerprint
from ingest.config.values import ConfigError
from ingest.ratelimit.backends.memory import MemoryBackend
from ingest.ratelimit.feedback import Pauses
from ingest.ratelimit.pacing.bucket import TokenBucket
from ingest.ratelimit.pacing.rates import Rate
from ingest.ratelimit.routing import Router, soonest
from ingest.stopping.waiting import Stopping, Waiter
from tests.support.clock import FakeClock
from tests.support.crawl import REPO_ROOT, crawl, crawl_command, environment, spawn, terminal_states
from tests.support.mockapi import span, statuses
from tests.test_scrapyd import scrapyd_deploy

API = "http://api.example"
TOKENS = ("tok-alpha-1", "tok-beta-22", "tok-gamma-333")
FP = [fingerprint(t) for t in TOKENS]

# ---------------------------------------------------------------- reading the keys


def test_tokens_are_separated_by_commas_or_newlines() -> None:
    assert parse_tokens("API_TOKENS", " a,b\nc \n") == ("a", "b", "c")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("secret-a,,secret-b", "API_TOKENS entry 2 of 3 is empty"),
        ("secret-a,secret b", "API_TOKENS entry 2 of 2 holds a space"),
        ("secret-a,secret-a", "API_TOKENS names the same token twice"),
    ],
)
def test_a_bad_list_of_tokens_is_named_without_the_tokens(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        parse_tokens("API_TOKENS", value)
    assert "secret" not in str(error.value)
    assert f"{fingerprint('secret-a')}…" in str(error.value)


def test_keys_come_from_one_setting_each_named_by_number_and_fingerprint(tmp_path: Path) -> None:
    assert load_keys(Settings()) == ()
    (one,) = load_keys(Settings({"API_TOKEN": "solo"}))
    assert str(one) == f"key 1 of 1 ({fingerprint('solo')}…)"
    keys = load_keys(Settings({"API_TOKENS": ",".join(TOKENS)}))
    assert [str(k) for k in keys][2] == f"key 3 of 3 ({FP[2]}…)"
    assert all(t not in repr(keys) for t in TOKENS)
    path = tmp_path / "keys"
    path.write_text(f"# ours\n{TOKENS[0]}\n\n{TOKENS[1]}  # the partner's\n", encoding="utf-8")
    assert [k.token for k in load_keys(Settings({"API_TOKENS_FILE": str(path)}))] == [
        TOKENS[0],
        TOKENS[1],
    ]
    with pytest.raises(ConfigError, match="API_TOKEN and API_TOKENS are both set"):
        load_keys(Settings({"API_TOKEN": "a", "API_TOKENS": "b,c"}))
    with pytest.raises(ConfigError, match="API_TOKENS_FILE cannot be read"):
        load_keys(Settings({"API_TOKENS_FILE": str(tmp_path / "none")}))


# ---------------------------------------------------------------- routing, on a fake clock


def test_the_soonest_slot_wins_then_the_key_idle_longest_then_the_first() -> None:
    assert soonest({"a": (2.0, 0.0), "b": (1.0, 0.5), "c": (1.0, 0.5)}) == "b"
    assert soonest({"a": (1.0, 0.9), "b": (1.0, 0.2)}) == "b"
    assert soonest({"a": (1.0, 0.2), "b": (1.0, 0.2)}) == "a"
    assert soonest({}) is None


def router(clock: FakeClock, backend: MemoryBackend, rejected: list[str]) -> Router:
    crawler = get_crawler()
    assert crawler.stats is not None
    keys = load_keys(Settings({"API_TOKENS": ",".join(TOKENS)}))
    return Router(
        keys,
        backend,
        pauses=Pauses(crawler, backend, max_pause=900),
        waiter=Waiter(lambda: False, spin=0.0, clock=clock, sleep=clock.sleep),
        stats=crawler.stats,
        on_all_rejected=rejected.append,
    )


def test_each_request_goes_on_the_key_that_can_send_soonest() -> None:
    clock = FakeClock()
    backend = MemoryBackend([Rate(2, 1)], clock=clock, rand=lambda: 0.0)
    rejected: list[str] = []
    r = router(clock, backend, rejected)

    async def sends(n: int) -> list[tuple[int, float]]:
        """(key number, when it went): times to a tenth, which the margins leave them within."""
        routes = [await r.send_slot(API) for _ in range(n)]
        return [
            (FP.index(str(x.fingerprint)) + 1, pytest.approx(x.at - 1000, abs=0.1)) for x in routes
        ]

    async def scenario() -> None:
        # Three keys at 2/s each: they take turns, three sends every half second.
        assert await sends(6) == [(1, 0), (2, 0), (3, 0), (1, 0.5), (2, 0.5), (3, 0.5)]
        # Key 2 paused (its own 429) for 10 s: the others carry on, key 2 alone waits.
        await backend.run(r.bucket(API, FP[1]), TokenBucket.pause, 10.0)
        assert await sends(4) == [(1, 1.0), (3, 1.0), (1, 1.5), (3, 1.5)]
        # Key 3 refused: the others only; then key 1 too: key 2 after its pause.
        r.reject(API, FP[2])
        await r.close()
        assert await sends(2) == [(1, 2.0), (1, 2.5)]
        r.reject(API, FP[0])
        assert await sends(1) == [(2, 10.5)]  # paused at 0.5, for 10 s
        assert rejected == []
        r.reject(API, FP[1])
        with pytest.raises(Stopping):
            await r.send_slot(API)
        assert rejected == [API]

    asyncio.run(scenario())


def test_a_key_retired_by_another_worker_is_left_and_an_old_retirement_is_not() -> None:
    clock = FakeClock()
    backend = MemoryBackend([Rate(2, 1)], clock=clock, rand=lambda: 0.0)

    async def scenario() -> None:
        # Retired before this worker started (a run before): used again.
        await backend.run(f"{API}#{FP[0]}", TokenBucket.retire)
        clock.now += 1
        mine, other = router(clock, backend, []), router(clock, backend, [])
        assert (await mine.send_slot(API)).fingerprint == FP[0]
        other.reject(API, FP[1])  # refused while this worker runs: left by both
        await other.close()
        used = {(await mine.send_slot(API)).fingerprint for _ in range(4)}
        assert used == {FP[0], FP[2]}

    asyncio.run(scenario())


# ---------------------------------------------------------------- crawls against the mock


def token_args() -> list[str]:
    return ["--tokens", ",".join(TOKENS)]


def keys_env(**extra: str) -> dict[str, str]:
    return environment(INGEST_API_TOKENS=",".join(TOKENS), **extra)


def test_three_keys_each_carry_a_third_at_their_own_pace(mockapi, tmp_path: Path) -> None:
    n = 120
    api = mockapi(*token_args(), "--limit", "20/1", "--algorithm", "sliding")
    db = f"sqlite:///{tmp_path}/ingest.db"
    done = crawl(api.url_template, db, "-a", f"ids=1-{n}", env=keys_env(), RATELIMIT_RATE="20/1")
    assert done.returncode == 0, done.stderr[-3000:]
    record = api.requests()
    assert statuses(record) == {200: n}
    shares = Counter(entry["token"] for entry in record)
    assert set(shares) == set(FP) and all(abs(c - n / 3) <= 2 for c in shares.values())
    # Together three times one key's limit: 120 requests at 60/s take about 2 s.
    assert 39 / 20 <= span(record) <= 2.6
    assert "3 keys x the 20/1 limit" in done.stderr
    assert re.search(rf"'ratelimit/key/{FP[0]}/requests': 4\d", done.stderr)
    assert len(terminal_states(db)) == n


def test_a_shared_rate_holds_all_keys_together(mockapi, tmp_path: Path) -> None:
    n = 90
    api = mockapi(
        *token_args(), "--limit", "20/1", "--shared-limit", "30/1", "--algorithm", "sliding"
    )
    db = f"sqlite:///{tmp_path}/ingest.db"
    done = crawl(
        api.url_template, db, "-a", f"ids=1-{n}", env=keys_env(),
        RATELIMIT_RATE="20/1", RATELIMIT_SHARED_RATE="30/1",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    record = api.requests()
    assert statuses(record) == {200: n}
    assert span(record) >= (n - 1) / 30  # the shared cap, not three keys' 60/s
    assert set(Counter(entry["token"] for entry in record)) == set(FP)


def test_a_revoked_key_is_retired_and_its_share_moves_to_the_others(
    mockapi, tmp_path: Path
) -> None:
    n = 240
    api = mockapi(*token_args(), "--limit", "20/1", "--algorithm", "sliding")
    db = f"sqlite:///{tmp_path}/ingest.db"
    command = crawl_command(api.url_template, db, "-a", f"ids=1-{n}", RATELIMIT_RATE="20/1")
    process = spawn(command, keys_env())
    try:
        api.wait_for(60)
        api.revoke(TOKENS[1])
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, stderr[-3000:]
    record = api.requests()
    refused = [e for e in record if e["status"] == 401]
    assert len(refused) == 1 and refused[0]["token"] == FP[1]
    after = [e for e in record if e["t"] > refused[0]["t"]]
    assert {e["token"] for e in after} == {FP[0], FP[2]}
    assert statuses(record)[429] == 0
    warnings = [line for line in stderr.splitlines() if " WARNING: " in line and "key" in line]
    assert len(warnings) == 1 and f"key 2 of 3 ({FP[1]}…) rejected: 401 Unauthorized" in warnings[0]
    states = terminal_states(db)
    assert len(states) == n and set(states.values()) == {"stored"}


def test_every_key_refused_stops_the_crawl_and_the_rerun_completes(mockapi, tmp_path: Path) -> None:
    n = 300
    api = mockapi(
        "--tokens", ",".join((*TOKENS, "tok-good")), "--limit", "20/1",
        "--token-limit", "tok-good=6000/60",
    )  # fmt: skip
    db = f"sqlite:///{tmp_path}/ingest.db"
    command = crawl_command(api.url_template, db, "-a", f"ids=1-{n}", RATELIMIT_RATE="20/1")
    process = spawn(command, keys_env())
    try:
        api.wait_for(30)
        for token in TOKENS:
            api.revoke(token)
        revoked = time.monotonic()
        _, stderr = process.communicate(timeout=30)
        took = time.monotonic() - revoked
    finally:
        process.kill()
    assert process.returncode == 77, stderr[-3000:]
    assert took < 5, took
    errors = [line for line in stderr.splitlines() if " ERROR: " in line]
    assert len(errors) == 1 and "rejected all 3 API keys" in errors[0]
    assert set(terminal_states(db).values()) <= {"stored"}
    again = crawl(api.url_template, db, "-a", f"ids=1-{n}", env=environment(
        INGEST_API_TOKEN="tok-good"), RATELIMIT_RATE="6000/60")  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    states = terminal_states(db)
    assert len(states) == n and set(states.values()) == {"stored"}


def redis_dump(url: str) -> bytes:
    """Every key of the database and its value, whatever its type."""
    out = []
    with redis.Redis.from_url(url) as client:
        for key in client.scan_iter():
            kind = client.type(key)
            if kind == b"hash":
                value: object = client.hgetall(key)
            elif kind == b"list":
                value = client.lrange(key, 0, -1)
            elif kind == b"set":
                value = client.smembers(key)
            elif kind == b"zset":
                value = client.zrange(key, 0, -1)
            else:
                value = client.get(key)
            out.append(key + b"=" + repr(value).encode())
    return b"\n".join(out)


def build_egg(tmp_path: Path) -> Path:
    """The egg scrapyd-deploy builds of a copy of the project."""
    project = tmp_path / "project"
    shutil.copytree(
        REPO_ROOT / "ingest", project / "ingest", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy2(REPO_ROOT / "setup.py", project / "setup.py")
    config = configparser.ConfigParser()
    config.read(REPO_ROOT / "scrapy.cfg", encoding="utf-8")
    with (project / "scrapy.cfg").open("w", encoding="utf-8") as cfg:
        config.write(cfg)
    egg = tmp_path / "ingest.egg"
    subprocess.run(
        [scrapyd_deploy(), f"--build-egg={egg}"], cwd=project, env=keys_env(),
        capture_output=True, timeout=60, check=True,
    )  # fmt: skip
    return egg


def test_no_token_anywhere_but_the_authorization_header(
    mockapi, tmp_path: Path, redis_url: str
) -> None:
    n = 400
    api = mockapi(*token_args(), "--limit", "none")
    db, jobdir = f"sqlite:///{tmp_path}/ingest.db", tmp_path / "job"
    settings = {"RATELIMIT_RATE": "3000/60", "REDIS_URL": redis_url, "LOG_LEVEL": "DEBUG"}
    logs, dumps = [], []
    for distributed in (False, True):
        extra = (
            {"DISTRIBUTED": 1} if distributed else {"JOBDIR": jobdir, "RATELIMIT_BACKEND": "redis"}
        )
        command = crawl_command(api.url_template, db, "-a", f"ids=1-{n}", **settings, **extra)
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=keys_env(), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            api.wait_for(len(api.requests()) + 60)
            dumps.append(redis_dump(redis_url))  # requests queued in Redis, buckets
            if not distributed:
                process.send_signal(signal.SIGINT)  # leaves requests queued in JOBDIR
            out, err = process.communicate(timeout=60)
        finally:
            process.kill()
        logs.append(out + err)
    assert process.returncode == 0, logs[-1][-3000:]
    assert len(terminal_states(db)) == n
    record = api.requests()
    assert all(entry["token"] in FP for entry in record)  # a key was sent every time
    assert {entry["token"] for entry in record} == set(FP)
    dumps.append(redis_dump(redis_url))
    assert b"ratelimit" in dumps[0] and FP[0].encode() in dumps[0]
    egg = build_egg(tmp_path / "egg")
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".egg" for p in files) and any("job" in p.parts for p in files)
    for token in TOKENS:
        for text in logs:
            assert token not in text
        for dump in dumps:
            assert token.encode() not in dump
        for path in files:
            assert token.encode() not in path.read_bytes(), path
    assert egg.stat().st_size > 0


@pytest.mark.parametrize("revoked", [0, 1])
def test_a_key_refused_at_the_first_request_lets_the_others_go(
    mockapi, tmp_path: Path, revoked: int
) -> None:
    # The first request to an API goes alone; refused for its key, it is sent again on
    # another, and those that waited for its answer go then.
    api = mockapi(*token_args(), "--limit", "none")
    api.revoke(TOKENS[revoked])
    db = f"sqlite:///{tmp_path}/ingest.db"
    command = crawl_command(api.url_template, db, "-a", "ids=1-30", RATELIMIT_RATE="20/1")
    process = spawn(command, keys_env())
    try:
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, stderr[-3000:]
    assert statuses(api.requests())[401] == 1
    assert set(terminal_states(db).values()) == {"stored"} and len(terminal_states(db)) == 30
