"""Prometheus metrics of the crawl on METRICS_BIND:METRICS_PORT, when METRICS_PORT is set."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Histogram
from scrapy import signals
from scrapy.exceptions import NotConfigured
from scrapy.utils.defer import maybe_deferred_to_future

from ingest import signals as ingest_signals
from ingest.job import Job
from ingest.metrics.endpoint import listen
from ingest.metrics.families import WRITE_BUCKETS, CrawlCollector
from ingest.progress.figures import Figures
from ingest.run import Run

if TYPE_CHECKING:
    from typing import Self

    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)


class Metrics:
    """Serves ``/metrics`` for Prometheus while the spider is open.

    Each crawler has a registry of its own (never the process-wide one), so that two
    crawls in one process, or a test's, never mix. Every family carries ``api`` (the
    API's origin) and, in a distributed job, ``worker``; the labels are one mapping, so
    that a label more is one entry more.
    """

    def __init__(self, figures: Figures, port: int, bind: str, labels: dict[str, str]) -> None:
        self.figures, self.port, self.bind = figures, port, bind
        self.labels = labels
        self.registry = CollectorRegistry(auto_describe=False)
        self.outage = False
        self.registry.register(CrawlCollector(figures, lambda: self.labels, lambda: self.outage))
        self._writes: Histogram | None = None
        self.listening: Any = None

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        job = Job.of(crawler)
        port = job.reporting.metrics_port
        if port is None:
            raise NotConfigured("METRICS_PORT is not set")
        labels = {"api": job.origin}
        ext = cls(Figures.of(crawler), port, job.reporting.metrics_bind, labels)

        def opened() -> None:
            run = Run.of(crawler)
            # A worker of a distributed job is named by its run.
            ext.spider_opened(run.id if job.distributed and run is not None else None)

        crawler.signals.connect(opened, signal=signals.spider_opened, weak=False)
        crawler.signals.connect(ext.spider_closed, signal=signals.spider_closed)
        crawler.signals.connect(ext.batch_written, signal=ingest_signals.batch_written)
        crawler.signals.connect(ext.storage_unavailable, signal=ingest_signals.storage_unavailable)
        crawler.signals.connect(ext.storage_available, signal=ingest_signals.storage_available)
        return ext

    def spider_opened(self, worker: str | None = None) -> None:
        if worker is not None:
            self.labels["worker"] = worker
        self._writes = Histogram(
            "ingest_storage_write_seconds",
            "Seconds to commit one batch of outcomes (outages waited out included)",
            labelnames=list(self.labels),
            buckets=WRITE_BUCKETS,
            registry=self.registry,
        )
        self.listening = listen(self.registry, self.port, self.bind)
        address = self.listening.getHost()
        logger.info("Metrics for Prometheus at http://%s:%d/metrics", address.host, address.port)

    def batch_written(self, size: int, seconds: float) -> None:
        if self._writes is not None:
            self._writes.labels(**self.labels).observe(seconds)

    def storage_unavailable(self) -> None:
        self.outage = True

    def storage_available(self) -> None:
        self.outage = False

    async def spider_closed(self) -> None:
        if self.listening is not None:
            listening, self.listening = self.listening, None
            await maybe_deferred_to_future(listening.stopListening())
