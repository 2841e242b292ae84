"""The soak, small: three workers through Redis into PostgreSQL while one is killed, the
database restarted, Redis restarted (append-only file) and the API gone for a while; judged
from the mock's record and the database. The full soak is a benchmark
(``python -m tests.benchmarks.soak``, docs/benchmarks/soak.md)."""

from __future__ import annotations

from pathlib import Path

from tests.benchmarks.soak import Params, soak


def test_a_small_soak_through_faults_stores_every_id_once_within_the_limit(
    tmp_path: Path,
) -> None:
    params = Params(
        ids=4000, workers=3, keys=2, size=100, rate="5/5",  # the window fills: 20 s of limit
        # The server allows one more a window: paced right, a request a busy machine held
        # up a little does not meet a full window; paced wrong (a burst), 429s.
        server_rate="6/5",
        faults=("kill", "pg", "redis", "api-down"), kill_every=7.0, down=4.0, redis_down=2.0,
        timeout=240.0,
    )  # fmt: skip
    report = soak(params, tmp_path)
    assert report.every_id_once, (report.terminal, report.missing, report.duplicates)
    assert report.states == {"stored": 4000}
    for key, statuses in report.per_key.items():
        assert statuses.get(429, 0) == 0, (key, statuses)
    assert report.within_in_flight(), report.resent
    assert "with no fault" not in report.resent, report.resent
    assert report.wall < params.timeout  # the job ended: no stall
    # Each of the 3 ends the job with 0; a worker started again while a server was down
    # may have been refused at its pre-flight check first (69, 2, 1), then started again.
    assert report.exits[0] == 3, report.exits
