"""Several API keys against the mock API, judged from its record per token fingerprint.

    python -m tests.benchmarks.keys [--cases even,slow,revoke,all,workers] [--ids 900]

Cases (each key 100/10 as configured, the mock enforcing a sliding window that also
counts rejected requests):

- even: three keys, the server's limit the configured one: 429s per key, the span
  against the ideal (ids / (3 x 10 per second)), each key's share.
- slow: key 2's server limit 50/10 while 100/10 is configured: 429s per key, each
  key's pace over the last half of the run, ids lost.
- revoke: key 2 revoked a third of the way: 401s, requests on key 2 after its 401,
  each key's share after it, warnings, ids lost.
- all: every key revoked after 150 requests: seconds from the revocation to the exit,
  the exit code, ids wrongly marked; then the rerun with another, good key.
- workers: two workers x three keys through Redis (DISTRIBUTED): 429s per key, the
  span against the ideal, ids lost, ids requested twice.
"""

from __future__ import annotations

import argparse
import subprocess
import time
from collections import Counter
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from ingest.config.masking import fingerprint
from tests.support.crawl import REPO_ROOT, crawl, crawl_command, environment, terminal_states
from tests.support.mockapi import MockAPI, ids_requested_more_than_once, span
from tests.support.redis import running_redis

TOKENS = ("bench-key-one", "bench-key-two", "bench-key-three")
FP = [fingerprint(t) for t in TOKENS]
RATE = "100/10"
PER_SECOND = 10.0  # one key's


def start(*extra: str) -> MockAPI:
    return MockAPI("--tokens", ",".join(TOKENS), "--limit", RATE, "--algorithm", "sliding", *extra)


def launch(api: MockAPI, db: str, ids: int, **settings: Any) -> subprocess.Popen[str]:
    command = crawl_command(
        api.url_template, db, "-a", f"ids=1-{ids}", RATELIMIT_RATE=RATE, **settings
    )
    return subprocess.Popen(
        command, cwd=REPO_ROOT, env=environment(INGEST_API_TOKENS=",".join(TOKENS)),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def per_key(record: list[dict[str, Any]], status: int | None = None) -> str:
    counts = Counter(e["token"] for e in record if status is None or e["status"] == status)
    return " ".join(f"key{i + 1}={counts.get(fp, 0)}" for i, fp in enumerate(FP))


def shares(record: list[dict[str, Any]]) -> str:
    ok = [e for e in record if e["status"] == 200]
    counts = Counter(e["token"] for e in ok)
    return " ".join(
        f"key{i + 1}={100 * counts.get(fp, 0) / max(1, len(ok)):.1f}%" for i, fp in enumerate(FP)
    )


def lost(db: str, ids: int) -> int:
    states = terminal_states(db)
    return ids - sum(1 for state in states.values() if state == "stored")


def case_even(ids: int, root: Path) -> None:
    with start() as api:
        db = f"sqlite:///{root}/even.db"
        done = crawl(api.url_template, db, "-a", f"ids=1-{ids}", env=environment(
            INGEST_API_TOKENS=",".join(TOKENS)), RATELIMIT_RATE=RATE)  # fmt: skip
        record = api.requests()
    ideal = (ids - 3) / (3 * PER_SECOND)
    print(f"even: exit {done.returncode}; 429 per key: {per_key(record, 429)}")
    print(f"  span {span(record):.2f}s, ideal {ideal:.2f}s, ratio {span(record) / ideal:.4f}")
    print(f"  share per key: {shares(record)}; lost {lost(db, ids)}")


def case_slow(ids: int, root: Path) -> None:
    with start("--token-limit", f"{TOKENS[1]}=50/10") as api:
        db = f"sqlite:///{root}/slow.db"
        done = crawl(api.url_template, db, "-a", f"ids=1-{ids}", env=environment(
            INGEST_API_TOKENS=",".join(TOKENS)), RATELIMIT_RATE=RATE)  # fmt: skip
        record = api.requests()
    half = [e for e in record if e["t"] >= record[0]["t"] + span(record) / 2]
    seconds = max(span(half), 1e-9)
    paces = Counter(e["token"] for e in half if e["status"] == 200)
    pace = " ".join(f"key{i + 1}={paces.get(fp, 0) / seconds:.2f}/s" for i, fp in enumerate(FP))
    print(f"slow: exit {done.returncode}; 429 per key: {per_key(record, 429)}")
    print(f"  pace over the last half: {pace}; share {shares(record)}; lost {lost(db, ids)}")


def case_revoke(ids: int, root: Path) -> None:
    with start() as api:
        db = f"sqlite:///{root}/revoke.db"
        process = launch(api, db, ids)
        api.wait_for(ids // 3, timeout=120)
        api.revoke(TOKENS[1])
        _, stderr = process.communicate(timeout=300)
        record = api.requests()
    refused = [e for e in record if e["status"] == 401]
    after = [e for e in record if refused and e["t"] > refused[0]["t"]]
    warnings = [line for line in stderr.splitlines() if " WARNING: " in line and "rejected" in line]
    print(f"revoke: exit {process.returncode}; 401 per key: {per_key(record, 401)}")
    print(f"  requests after the 401: {per_key(after)}; 429 per key: {per_key(record, 429)}")
    print(f"  warnings: {len(warnings)} {warnings[:1]}; lost {lost(db, ids)}")


def case_all(ids: int, root: Path) -> None:
    with start("--token", "bench-key-good", "--token-limit", "bench-key-good=6000/60") as api:
        db = f"sqlite:///{root}/all.db"
        process = launch(api, db, ids)
        api.wait_for(150, timeout=120)
        for token in TOKENS:
            api.revoke(token)
        revoked = time.monotonic()
        _, stderr = process.communicate(timeout=300)
        took = time.monotonic() - revoked
        marked = Counter(terminal_states(db).values())
        errors = [line for line in stderr.splitlines() if " ERROR: " in line]
        again = crawl(api.url_template, db, "-a", f"ids=1-{ids}", env=environment(
            INGEST_API_TOKEN="bench-key-good"), RATELIMIT_RATE="6000/60")  # fmt: skip
    print(f"all: exit {process.returncode} {took:.2f}s after the revocation; marked {dict(marked)}")
    print(f"  error lines: {len(errors)}; rerun with a good key: exit {again.returncode}, "
          f"lost {lost(db, ids)}")  # fmt: skip


def case_workers(ids: int, root: Path) -> None:
    with running_redis() as server, start() as api:
        db = f"sqlite:///{root}/workers.db"
        settings = {"DISTRIBUTED": 1, "REDIS_URL": server.url(), "PROGRESS_INTERVAL": 0}
        processes = [launch(api, db, ids, USER_AGENT=f"worker-{n}", **settings) for n in (0, 1)]
        codes = [p.wait(timeout=300) for p in processes]
        record = api.requests()
    ideal = (ids - 3) / (3 * PER_SECOND)
    agents = Counter(e["agent"] for e in record)
    print(f"workers: exits {codes}; 429 per key: {per_key(record, 429)}; by worker {dict(agents)}")
    print(f"  span {span(record):.2f}s, ideal {ideal:.2f}s, ratio {span(record) / ideal:.4f}")
    print(f"  share {shares(record)}; lost {lost(db, ids)}; "
          f"requested twice {len(ids_requested_more_than_once(record))}")  # fmt: skip


CASES = {
    "even": case_even,
    "slow": case_slow,
    "revoke": case_revoke,
    "all": case_all,
    "workers": case_workers,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated")
    parser.add_argument("--ids", type=int, default=900)
    args = parser.parse_args()
    with TemporaryDirectory(prefix="ingest-keys-") as root:
        for name in args.cases.split(","):
            CASES[name](args.ids, Path(root))


if __name__ == "__main__":
    main()
