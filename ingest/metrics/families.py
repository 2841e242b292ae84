"""The metrics a crawl exposes, read from its figures and stats at each scrape."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from scrapy.exceptions import IgnoreRequest
from scrapy.utils.misc import load_object

from ingest.progress.figures import Figures, Snapshot

STATUS_KEY = re.compile(r"^downloader/response_status_count/(\d+)$")
EXCEPTION_KEY = re.compile(r"^downloader/exception_type_count/(.+)$")
# Buckets of the write latency histogram, in seconds: a batch usually takes milliseconds;
# an outage waited out shows at the top.
WRITE_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip


class CrawlCollector(Collector):
    """Every family carries the same base labels (``api``; ``worker`` in a distributed
    job), given as a mapping so that one more (an API key's fingerprint) is one more
    entry. Values come from the crawl's stats and figures when Prometheus scrapes:
    nothing is counted twice."""

    def __init__(
        self,
        figures: Figures,
        labels: Callable[[], Mapping[str, str]],
        outage: Callable[[], bool],
    ) -> None:
        self.figures, self.labels, self.outage = figures, labels, outage

    def describe(self) -> list[Metric]:
        return []  # the families vary (quota, status codes): no check at registration

    def collect(self) -> Iterator[Metric]:
        f = _Families(self.labels())
        stats: dict[str, Any] = dict(self.figures.stats.get_stats())
        s = self.figures.snapshot()
        yield from self._requests(f, stats, s)
        yield from self._pace(f, stats, s)
        yield from self._progress(f, stats, s)

    def _requests(self, f: _Families, stats: dict[str, Any], s: Snapshot) -> Iterator[Metric]:
        yield f.labelled(
            "ingest_requests",
            "Answers from the API by HTTP status, 429s the rate limiter requeued included",
            "status",
            {m.group(1): n for key, n in sorted(stats.items()) if (m := STATUS_KEY.match(key))},
        )
        yield f.counter(
            "ingest_requests_sent",
            "Requests sent to the API (retries and requeued 429s included)",
            s.requests,
        )
        errors = {
            m.group(1): n
            for key, n in sorted(stats.items())
            if (m := EXCEPTION_KEY.match(key)) and not _ignored(m.group(1))
        }
        yield f.labelled(
            "ingest_request_errors",
            "Requests that got no answer (timeouts, refused or lost connections), by exception",
            "exception",
            errors,
        )
        yield f.labelled(
            "ingest_rate_limited",
            "429s received: expected (the rates foresaw them) or not (each lowers the pace)",
            "expected",
            {"false": s.unexpected, "true": max(0, s.throttled - s.unexpected)},
        )
        yield f.labelled(
            "ingest_retries",
            "Requests sent again: after a backoff (5xx, timeouts) or requeued after a 429",
            "kind",
            {
                "backoff": stats.get("retry/count", 0),
                "rate_limited": stats.get("ratelimit/requeued", 0),
            },
        )

    def _pace(self, f: _Families, stats: dict[str, Any], s: Snapshot) -> Iterator[Metric]:
        yield f.gauge("ingest_pace_requests_per_minute", "The pace the bucket allows now", s.pace)
        yield f.labelled(
            "ingest_pace_source",
            "Why the pace is what it is (1 for the reason)",
            "source",
            {s.pace_source or "configured": 1},
            kind=GaugeMetricFamily,
        )
        if (inferred := stats.get("ratelimit/inferred_rate")) is not None:
            yield f.gauge(
                "ingest_inferred_limit_per_minute",
                "The slowest limit inferred from 429s, in requests a minute",
                inferred,
            )
        yield f.gauge(
            "ingest_request_rate_per_minute", "Requests sent in the last minute", s.per_minute
        )
        yield f.gauge("ingest_paused", "1 while a pause the server imposed lasts", s.pause_left > 0)
        yield f.gauge(
            "ingest_paused_until_timestamp_seconds",
            "When the last pause the server imposed ends (Unix time)",
            s.paused_until,
        )
        yield f.counter(
            "ingest_paused_seconds", "Seconds paused at the server's word", s.paused_seconds
        )
        yield f.counter(
            "ingest_pauses", "Pauses the server imposed", stats.get("ratelimit/pauses", 0)
        )
        yield f.gauge(
            "ingest_quota_remaining",
            "Requests left in the quota, as the server last said",
            stats.get("ratelimit/quota_remaining"),
        )
        yield f.gauge(
            "ingest_quota_reset_timestamp_seconds",
            "When the quota frees again, as the server last said (Unix time)",
            stats.get("ratelimit/quota_reset_at"),
        )

    def _progress(self, f: _Families, stats: dict[str, Any], s: Snapshot) -> Iterator[Metric]:
        yield f.labelled(
            "ingest_ids",
            "Ids that reached a terminal state in this run, and ids skipped as already done",
            "state",
            {**s.by_state, "skipped": s.skipped},
        )
        yield f.gauge("ingest_ids_requested", "Ids the job asks for", s.total)
        yield f.gauge("ingest_ids_pending", "Ids of the job without an outcome yet", s.pending)
        yield f.gauge("ingest_eta_seconds", "Seconds until every id is done, at this rate", s.eta)
        yield f.counter(
            "ingest_storage_batches", "Transactions written", stats.get("storage/batches", 0)
        )
        yield f.gauge("ingest_storage_outage", "1 while the database is unavailable", self.outage())
        yield f.counter(
            "ingest_storage_outages", "Database outages waited out", stats.get("storage/outages", 0)
        )
        yield f.counter(
            "ingest_storage_outage_seconds",
            "Seconds of database outages waited out (ended ones)",
            stats.get("storage/outage_seconds", 0.0),
        )


class _Families:
    """Families that all carry the base labels, and at most one label of their own."""

    def __init__(self, base: Mapping[str, str]) -> None:
        self.names, self.values = list(base), list(base.values())

    def counter(self, name: str, doc: str, value: float) -> Metric:
        family = CounterMetricFamily(name, doc, labels=self.names)
        family.add_metric(self.values, value)
        return family

    def gauge(self, name: str, doc: str, value: float | None) -> Metric:
        family = GaugeMetricFamily(name, doc, labels=self.names)
        if value is not None:
            family.add_metric(self.values, float(value))
        return family

    def labelled(
        self,
        name: str,
        doc: str,
        label: str,
        values: Mapping[str, float],
        kind: type[CounterMetricFamily | GaugeMetricFamily] = CounterMetricFamily,
    ) -> Metric:
        family = kind(name, doc, labels=[*self.names, label])
        for value, number in values.items():
            family.add_metric([*self.values, value], number)
        return family


@functools.cache
def _ignored(path: str) -> bool:
    """Whether an exception counted by Scrapy's DownloaderStats was a request dropped or
    given back before it was sent (an ``IgnoreRequest``), not a failure to get an answer."""
    try:
        kind = load_object(path)
    except (ImportError, ValueError, NameError, AttributeError):
        return False
    return isinstance(kind, type) and issubclass(kind, IgnoreRequest)
