"""A job in Redis: its id, its keys, and scrapy-redis's scheduler keyed by it."""

from __future__ import annotations

import hashlib
import warnings
from collections import deque
from typing import TYPE_CHECKING, Any

from scrapy.exceptions import ScrapyDeprecationWarning
from scrapy.settings import SETTINGS_PRIORITIES
from scrapy_redis.dupefilter import RFPDupeFilter
from scrapy_redis.scheduler import Scheduler

from ingest.config.masking import mask_url
from ingest.distributed.unavailable import DOWN, SYNC_PARAMS, Outage
from ingest.fetching.ids import IdRanges, IdSource
from ingest.job import is_distributed
from ingest.listing.walk import PAGE
from ingest.run import Run

if TYPE_CHECKING:
    from typing import Self

    from scrapy import Request, Spider
    from scrapy.crawler import Crawler
    from scrapy.settings import BaseSettings

# scrapy-redis 0.9.1 passes ``spider=`` to the stats collector, deprecated in Scrapy
# 2.19: harmless, and these two calls are all that warn.
warnings.filterwarnings(
    "ignore",
    message=r"Passing a 'spider' argument to StatsCollector\.inc_value\(\) is deprecated",
    category=ScrapyDeprecationWarning,
    module=r"scrapy_redis\.scheduler",
)


def job_id(url_template: str, ids: IdSource | str, database_url: str) -> str:
    """The same command gives the same job, on any machine: an id file is known by
    its ids, not by its path; a listing (``ids`` a str) by its key."""
    digest = hashlib.sha1(usedforsecurity=False)
    for part in (url_template, mask_url(database_url), type(ids).__name__):
        digest.update(part.encode() + b"\0")
    if isinstance(ids, str):
        digest.update(ids.encode())
    elif isinstance(ids, IdRanges):
        digest.update(ids.describe().encode())
    else:
        for id_ in ids:
            digest.update(id_.encode() + b"\n")
    return digest.hexdigest()[:12]


# The keys that hold a lease: each expires with its lease, never kept with the job's data.
LEASES = frozenset({"seeder", "reconciler"})


def job_keys(job: str) -> dict[str, str]:
    prefix = f"ingest:{{{job}}}"
    return {
        "queue": f"{prefix}:requests",
        "seen": f"{prefix}:seen",
        "workers": f"{prefix}:workers",
        "seeder": f"{prefix}:seeder",
        "seeded": f"{prefix}:seeded",
        "done": f"{prefix}:seeding-done",
        "complete": f"{prefix}:complete",
        "reconciler": f"{prefix}:reconciler",
    }


class DistributedAddon:
    """With ``DISTRIBUTED``: scrapy-redis's scheduler (our job-keyed subclass), a
    persistent queue, and the Redis rate-limit backend."""

    def update_settings(self, settings: BaseSettings) -> None:
        if not is_distributed(settings):
            return
        project = SETTINGS_PRIORITIES["project"]
        for name, value in {
            "SCHEDULER": "ingest.distributed.jobs.JobScheduler",
            "DUPEFILTER_CLASS": "scrapy_redis.dupefilter.RFPDupeFilter",
            "SCHEDULER_PERSIST": True,
            "RATELIMIT_BACKEND": "redis",
            "REDIS_PARAMS": SYNC_PARAMS,
        }.items():
            if (settings.getpriority(name) or 0) <= project:
                settings.set(name, value, priority="project")


class JobScheduler(Scheduler):
    """scrapy-redis's scheduler, with its queue and duplicate filter keyed by the job; a
    listing's pages stay with the worker that walks it, in a queue of its own, ahead of
    the shared one: the walk's state is in that worker's memory, and the database says
    where a successor resumes.

    While Redis is unavailable, nothing comes from the shared queue, the requests for it
    wait in this worker (pushed once it is back), and the queue counts as not empty: the
    crawl neither stops nor marks anything meanwhile. A worker that dies then loses what
    waited; the look for lost ids fetches it.
    """

    crawler: Crawler
    pages: deque[Request]
    unsent: deque[Request]
    outage: Outage

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        scheduler = super().from_crawler(crawler)
        scheduler.crawler = crawler
        scheduler.pages, scheduler.unsent = deque(), deque()
        scheduler.outage = Outage("the job's queue")
        return scheduler

    def open(self, spider: Spider) -> Any:
        run = Run.of(self.crawler)
        assert run is not None and run.coordinator is not None
        keys = job_keys(run.coordinator.job)
        self.queue_key = keys["queue"]
        self.df = RFPDupeFilter(self.server, key=keys["seen"])
        return super().open(spider)

    def enqueue_request(self, request: Request) -> bool:
        if PAGE in request.meta:
            self.pages.append(request)
            return True
        if self._push():
            try:
                return bool(super().enqueue_request(request))  # False: a duplicate, dropped
            except DOWN as exc:
                self.outage.began(exc)
        self.unsent.append(request)  # behind those that wait already
        return True

    def _push(self) -> bool:
        """What waits goes to the shared queue, while Redis takes it; True once none waits."""
        while self.unsent:
            try:
                super().enqueue_request(self.unsent[0])
            except DOWN as exc:
                self.outage.began(exc)
                return False
            self.unsent.popleft()
        self.outage.ended()
        return True

    def next_request(self) -> Request | None:
        if self.pages:
            return self.pages.popleft()
        self._push()
        try:
            request: Request | None = super().next_request()
        except DOWN as exc:
            self.outage.began(exc)
            return None
        self.outage.ended()
        return request

    def has_pending_requests(self) -> bool:
        if self.pages or self.unsent:
            return True
        try:
            return bool(super().has_pending_requests())
        except DOWN as exc:
            self.outage.began(exc)
            return True  # not known: not empty, so that the crawl does not end
