"""The pacing benchmark's clients still run end to end and report every id they fetched."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.benchmarks.clients import NAMES, expand_ids, launch, run
from tests.benchmarks.pacing import CASES
from tests.support.mockapi import statuses


@pytest.mark.parametrize("client", NAMES)
def test_client_fetches_every_id(mockapi, tmp_path: Path, client: str) -> None:
    api = mockapi("--limit", "none", "--not-found", "4")
    result = run(launch(client, api.url_template, "1-10", "6000/60", tmp_path), timeout=30)
    log = (tmp_path / f"{client}.log").read_text(errors="replace")
    assert (result.returncode, result.timed_out) == (0, False), log[-3000:]
    assert result.done == {str(i) for i in range(1, 11)}
    assert statuses(api.requests()) == {200: 9, 404: 1}
    assert result.cpu > 0
    assert result.peak_rss_mb > 10


def test_ids_and_ideal() -> None:
    assert expand_ids("1-3,7") == ["1", "2", "3", "7"]
    assert CASES["fixed"].ideal(301) == pytest.approx(30.0)
    # The binding limit of 100/10 and 150/30 is the slower one, 5 requests a second.
    assert CASES["hidden-quota"].ideal(301) == pytest.approx(60.0)
