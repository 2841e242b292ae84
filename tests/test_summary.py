"""The summary's figures, as the server would count them, and the exit code of each ending."""

from __future__ import annotations

from typing import Any

import pytest

from ingest.progress.figures import Figures
from ingest.progress.lines import summary_record, summary_text
from ingest.ratelimit.pacing.rates import Rate, parse_rates
from ingest.stopping.endings import exit_code


class Stats(dict):  # type: ignore[type-arg]
    def get_value(self, key: str, default: Any = None) -> Any:
        return self.get(key, default)

    def set_value(self, key: str, value: Any) -> None:
        self[key] = value

    def inc_value(self, key: str, by: int = 1) -> None:
        self[key] = self.get(key, 0) + by


def sent(figures: Figures, clock: list[float], times: list[float], **answers: int) -> None:
    """Requests sent at ``times``; ``answers``: how many of them were answered with a status."""
    for t in times:
        clock[0] = t
        figures.request_sent()
    for status, count in answers.items():
        figures.stats.inc_value(f"downloader/response_status_count/{status[1:]}", count)


def figures_of(rate: str, **options: Any) -> tuple[Figures, list[float]]:
    clock = [1000.0]
    stats = Stats()
    return Figures(stats, parse_rates(rate), clock=lambda: clock[0], **options), clock  # type: ignore[arg-type]


def test_a_limit_kept_is_at_most_all_of_it_however_few_the_requests() -> None:
    figures, clock = figures_of("60/60")
    sent(figures, clock, [1000.0 + i for i in range(16)])  # 16 requests, one a second
    assert figures.overall_per_minute() == pytest.approx(60.0)  # (n - 1) / span
    assert figures.share_of_limit() == pytest.approx(1.0)


def test_free_304s_are_said_apart_not_counted_against_the_limit() -> None:
    figures, clock = figures_of("60/60", count_304=False)
    # 10 paced requests, then 200 answered 304 as fast as they come (tokens given back).
    sent(figures, clock, [1000.0 + i for i in range(10)] + [1009.5 + i / 1000 for i in range(200)])
    figures.stats.inc_value("downloader/response_status_count/304", 200)
    share = figures.share_of_limit()
    assert share is not None and share <= 1.0
    record = summary_record(figures.snapshot(), figures, "finished")
    assert record["free_304"] == 200
    assert "200 x 304 the server does not count" in summary_text(record)


def test_a_limit_inferred_from_429s_is_measured_from_when_it_was_inferred() -> None:
    figures, clock = figures_of("20/2")
    # Twice the real limit (10/2) for 4 s, with one 429, then at the limit inferred.
    sent(figures, clock, [1000.0 + i * 0.1 for i in range(40)], s429=1)
    clock[0] = 1004.0
    figures.limit_inferred(Rate(10, 2.0))
    sent(figures, clock, [1004.2 + i * 0.2 for i in range(100)])
    record = summary_record(figures.snapshot(), figures, "finished")
    assert record["limit"] == "10/2" and record["share_of_limit"] <= 1.0
    assert "of the 10/2 limit (since it was inferred)" in summary_text(record)
    # A later, faster inference (a probe up) does not move the start.
    figures.limit_inferred(Rate(11, 2.0))
    assert figures.stretch is not None and figures.stretch.at == 1004.0


@pytest.mark.parametrize(
    ("reason", "failed", "code"),
    [
        ("finished", 0, 0),
        ("finished", 2, 3),
        ("bad_setting", 0, 2),
        ("listing_bad_page", 0, 65),
        ("shutdown", 0, 75),  # Ctrl-C, a scrapyd cancel
        (None, 0, 75),  # a second Ctrl-C: the crawl never closed
        ("closespider_timeout", 0, 75),
        ("ratelimit_paused", 0, 75),
        ("listing_page_failed", 0, 75),
        ("api_unauthorized", 0, 77),
    ],
)
def test_each_ending_has_its_exit_code(reason: str | None, failed: int, code: int) -> None:
    assert exit_code(reason, failed) == code
