"""Settings of the ingest project: every default in one place, components in order.

Values marked [env] can also come from the environment, so that deployments
(scrapyd, containers) need not change files; ``-s NAME=VALUE`` overrides both.
"""

from __future__ import annotations

import os
from pathlib import Path

BOT_NAME = "ingest"
SPIDER_MODULES = ["ingest.spiders"]
NEWSPIDER_MODULE = "ingest.spiders"
COMMANDS_MODULE = "ingest.commands"

# ---------------------------------------------------------------- the API
# URL template of one item; {id} is replaced by the id. [env INGEST_API_URL]
API_URL = os.environ.get("INGEST_API_URL", "http://127.0.0.1:8700/items/{id}")
# Sent as "Authorization: Bearer …", added only as the request leaves. [env INGEST_API_TOKEN]
API_TOKEN = os.environ.get("INGEST_API_TOKEN") or None
# Many ids in one request: at most API_BATCH_SIZE (1: one id a request, API_URL).
# GET: API_BATCH_URL holds {ids}, the ids percent-encoded and joined by
# API_BATCH_SEPARATOR, the URL kept within API_BATCH_MAX_URL bytes. POST: the JSON
# of API_BATCH_BODY, its string "{ids}" replaced by the array of ids, goes to API_BATCH_URL.
API_BATCH_SIZE = 1
API_BATCH_URL = None
API_BATCH_METHOD = "GET"
API_BATCH_BODY = '{"ids": "{ids}"}'
API_BATCH_SEPARATOR = ","
API_BATCH_MAX_URL = 8000
# Where an answer's items are: a dotted path; by default the answer itself when it is
# an array, else the first of its "items", "data", "results" that is one.
API_BATCH_ITEMS = None
API_ITEM_ID = "id"  # the field of each item naming its id, compared as text
# Several keys, comma- or newline-separated, each paced by its own bucket; or a file of
# them, one per line (# comments). Not together with API_TOKEN. [env INGEST_API_TOKENS]
API_TOKENS = os.environ.get("INGEST_API_TOKENS") or None
API_TOKENS_FILE = None
# JSON Schema every payload must satisfy; by default any JSON object does (name your API's
# own to check its items' shape: the demo and tests name the bundled mock API's).
ITEM_SCHEMA = str(Path(__file__).resolve().parent / "schemas" / "object.schema.json")

# ---------------------------------------------------------------- rate limit
RATELIMIT_ENABLED = True
RATELIMIT_RATE = "100/60"  # N/SECONDS; several comma-separated rates all apply; or auto
RATELIMIT_START = "60/60"  # with RATELIMIT_RATE=auto: the pace to start from
RATELIMIT_BURST = 1  # tokens that may go at once; 1 = evenly spaced
RATELIMIT_BACKEND = "memory"  # or "redis" (shared by workers)
# N/SECONDS that all keys together keep to as well (a cap per IP or per account)
RATELIMIT_SHARED_RATE = None
RATELIMIT_MAX_PAUSE = 900  # seconds; a longer server-imposed pause stops the crawl
RATELIMIT_RETRY_TIMES = 20  # 429s in a row for one id before it is "failed"
# Whether the API counts a 304 Not Modified against the quota; if not, a 304 gives its
# token back, so that conditional requests go as fast as the burst and concurrency allow.
RATELIMIT_COUNT_304 = True

# ---------------------------------------------------------------- storage
# sqlite:///relative.db, sqlite:////abs.db or postgresql://… [env DATABASE_URL]
DATABASE_URL = os.environ.get("DATABASE_URL", "sqlite:///ingest.db")
STORAGE_BATCH_SIZE = 1000  # most rows written in one transaction
STORAGE_LINGER = 0.05  # seconds a write waits for more outcomes to join its transaction

# ---------------------------------------------------------------- several workers
# Workers share, through Redis, scrapy-redis's queue and duplicate filter (keyed by
# the job), the rate limiter's bucket, and the work of finishing the job.
DISTRIBUTED = False
REDIS_URL = os.environ.get("REDIS_URL") or None  # [env REDIS_URL]
ADDONS = {"ingest.distributed.jobs.DistributedAddon": 0}

# ---------------------------------------------------------------- retries
# Scrapy's RetryMiddleware retries at once; ours waits, with exponential backoff
# and full jitter, never less than Retry-After. 429s are the rate limiter's.
RETRY_ENABLED = True
RETRY_TIMES = 5
RETRY_HTTP_CODES = [408, 500, 502, 503, 504, 522, 524]
RETRY_BACKOFF_BASE = 1.0  # seconds; attempt n waits up to BASE * 2**(n-1)
RETRY_BACKOFF_MAX = 60.0
RETRY_PRIORITY_ADJUST = 1  # retries go before new ids: an id in progress finishes first

# ---------------------------------------------------------------- downloading
ROBOTSTXT_OBEY = False
COOKIES_ENABLED = False
CONCURRENT_REQUESTS = 16
CONCURRENT_REQUESTS_PER_DOMAIN = 16  # = CONCURRENT_REQUESTS: the bucket, not the slot, paces
DOWNLOAD_DELAY = 0
DOWNLOAD_DELAY_JITTER = 0
DOWNLOAD_TIMEOUT = 30
# One item per response: Scrapy starts CONCURRENT_ITEMS tasks per response to
# process its items, 100 by default, so this saves 99 tasks per request.
CONCURRENT_ITEMS = 1
# Scrapy would parse the source of the callbacks again at every response to warn
# about generators that return a value; ours do not (and ruff would say).
WARN_ON_GENERATOR_RETURN_VALUE = False
# AutoThrottle stays on as latency-driven politeness: it slows the crawl when the
# server's answers slow down, and costs nothing while latency is low.
AUTOTHROTTLE_ENABLED = True
AUTOTHROTTLE_START_DELAY = 0.0
AUTOTHROTTLE_MAX_DELAY = 60.0
AUTOTHROTTLE_TARGET_CONCURRENCY = 8.0

# Every request is an API URL made from an id; none is followed from a page. So no
# depth to track, no URL length to police, no offsite links or HTML meta refresh to
# look for: those middlewares would only cost CPU at each request.
SPIDER_MIDDLEWARES = {
    "scrapy.spidermiddlewares.urllength.UrlLengthMiddleware": None,
    "scrapy.spidermiddlewares.depth.DepthMiddleware": None,
}
DOWNLOADER_MIDDLEWARES = {
    "scrapy.downloadermiddlewares.offsite.OffsiteMiddleware": None,
    "scrapy.downloadermiddlewares.redirect.MetaRefreshMiddleware": None,
    "ingest.downloadermiddlewares.skipdone.SkipDoneMiddleware": 50,
    "ingest.downloadermiddlewares.conditional.ConditionalMiddleware": 60,
    "scrapy.downloadermiddlewares.retry.RetryMiddleware": None,
    "ingest.downloadermiddlewares.retry.BackoffRetryMiddleware": 550,
    "ingest.downloadermiddlewares.outages.OutagesMiddleware": 940,
    "ingest.batch.middleware.BatchSizeMiddleware": 945,
    "ingest.ratelimit.middleware.RateLimitMiddleware": 950,
    "ingest.downloadermiddlewares.auth.ApiTokenMiddleware": 960,
    # Next to the wire, after every wait: requests are counted as they go, and every
    # answer as it comes, 429s the rate limiter requeues and 5xx retried included.
    "scrapy.downloadermiddlewares.stats.DownloaderStats": 990,
}
ITEM_PIPELINES = {
    "ingest.pipelines.ValidationPipeline": 300,
    "ingest.pipelines.StoragePipeline": 800,
}
EXTENSIONS = {
    "scrapy.extensions.telnet.TelnetConsole": None,
    "scrapy.extensions.logstats.LogStats": None,
    "ingest.progress.bar.ProgressBar": 490,
    "ingest.progress.lines.Progress": 500,
    "ingest.metrics.extension.Metrics": 505,
    "ingest.extensions.reconcile.Reconcile": 510,
    "ingest.distributed.worker.Worker": 510,
    "ingest.extensions.gcfreeze.FreezeHeap": 520,
    "ingest.extensions.quotas.KeptQuotas": 530,
}

# ---------------------------------------------------------------- JOBDIR
# Batches of ids are named by their place in the job, so that a rerun does not queue
# again what JOBDIR's queue holds (Scrapy's fingerprints for everything else).
REQUEST_FINGERPRINTER_CLASS = "ingest.batch.fingerprints.BatchFingerprinter"
# With -s JOBDIR=DIR the queue lives in SQLite: every push and pop is durable, so a
# forced stop leaves it consistent. First in, first out: ids go in order.
SCHEDULER_DISK_QUEUE = "scrapy.squeues.PickleFifoSQLiteQueue"
SCHEDULER_MEMORY_QUEUE = "scrapy.squeues.FifoMemoryQueue"

# ---------------------------------------------------------------- operations
PROGRESS_INTERVAL = 5.0  # seconds between progress lines; 0 turns them off
PROGRESS_BAR = True  # a live bar instead of progress lines, when stderr is a terminal
# Prometheus metrics at http://METRICS_BIND:METRICS_PORT/metrics; unset: no port is
# opened; 0: a free port, logged.
METRICS_PORT = None
METRICS_BIND = "127.0.0.1"
LOG_LEVEL = "INFO"
TELNETCONSOLE_ENABLED = False
# The RemoteControl extension serves an endpoint that runs Python code.
REMOTE_CONTROL_ENABLED = False
FEED_EXPORT_ENCODING = "utf-8"
# What `-o`/`-O` exports of each outcome (not the parsed copy of the payload kept for
# validation); `data` goes out as the JSON it is.
FEED_EXPORT_FIELDS = ["id", "state", "data", "reason", "url", "status", "fetched_at"]
