"""The job's settings, read and checked once: what every component is handed instead of settings.

``Job.from_settings`` is the one place a setting of the project is read; it raises
:class:`~ingest.config.values.ConfigError` naming the first bad one and its value.
``Job.of(crawler)`` builds it once per crawler, from the settings as the crawl has
them (add-ons and the spider's own applied), and hands the same object to everyone.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from ingest.batch.spec import BatchSpec
from ingest.config.keys import Key, load_keys
from ingest.config.values import (
    ConfigError,
    check_path,
    load_schema,
    parse_bool_setting,
    parse_int,
    parse_number,
    parse_seconds,
)
from ingest.fetching.urls import check_api_url, origin_of
from ingest.ratelimit.pacing.rates import Rate, parse_rate_setting, parse_rates

if TYPE_CHECKING:
    from collections.abc import Callable

    from scrapy.crawler import Crawler
    from scrapy.settings import BaseSettings

BACKENDS = ("memory", "redis")

_OF_CRAWLER: weakref.WeakKeyDictionary[Crawler, Job] = weakref.WeakKeyDictionary()


def log_level(settings: BaseSettings) -> Any:
    """``LOG_LEVEL``: a level's name or number."""
    value = settings.get("LOG_LEVEL")
    if isinstance(value, int) or str(value) in logging.getLevelNamesMapping():
        return value
    raise ConfigError(f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {value!r}")


def log_target(settings: BaseSettings) -> tuple[str | None, str]:
    """``LOG_FILE`` (None: stderr) and ``LOG_ENCODING``: where a line for the job's log goes,
    read even when another setting is bad (its error line goes there too)."""
    return settings.get("LOG_FILE") or None, str(settings.get("LOG_ENCODING") or "utf-8")


def _status_codes(name: str, value: Any) -> frozenset[int]:
    codes = value if isinstance(value, list | tuple) else str(value).split(",")
    found = set()
    for code in codes:
        try:
            status = int(str(code).strip())
        except ValueError:
            status = 0
        if not 100 <= status <= 599:
            raise ConfigError(f"{name} must list HTTP statuses like 500,503, got {value!r}")
        found.add(status)
    return frozenset(found)


def _port(name: str, value: Any) -> int | None:
    if value is None or str(value).strip() == "":
        return None
    port = parse_int(name, value, least=0)
    if port > 65535:
        raise ConfigError(f"{name} must be a TCP port from 0 to 65535, got {value!r}")
    return port


# Scrapy's settings that users commonly pass and that no section below reads: a bad
# value fails here, in one line, rather than as a traceback or a silently odd crawl.
SCRAPY_CHECKS: dict[str, Callable[[str, Any], object]] = {
    "CONCURRENT_REQUESTS": partial(parse_int, least=1),
    "CONCURRENT_REQUESTS_PER_DOMAIN": partial(parse_int, least=1),
    "CONCURRENT_ITEMS": partial(parse_int, least=1),
    "DOWNLOAD_DELAY": parse_seconds,
    "DOWNLOAD_MAXSIZE": partial(parse_int, least=0),
    "AUTOTHROTTLE_ENABLED": parse_bool_setting,
    "AUTOTHROTTLE_START_DELAY": parse_seconds,
    "AUTOTHROTTLE_MAX_DELAY": parse_seconds,
    "AUTOTHROTTLE_TARGET_CONCURRENCY": parse_number,
    "COOKIES_ENABLED": parse_bool_setting,
    "ROBOTSTXT_OBEY": parse_bool_setting,
    "HTTPCACHE_ENABLED": parse_bool_setting,
    "LOG_ENABLED": parse_bool_setting,
}


def is_distributed(settings: BaseSettings) -> bool:
    """``DISTRIBUTED``: also what the add-on reads, before the crawl's settings are final."""
    return parse_bool_setting("DISTRIBUTED", settings.get("DISTRIBUTED"))


@dataclass(frozen=True, slots=True)
class Pacing:
    """``RATELIMIT_*``: the rate limiter's settings."""

    enabled: bool
    rates: tuple[Rate, ...]  # those known; none with auto alone
    auto: bool
    start: Rate  # with auto: the pace to start from
    burst: int
    backend: str
    shared: tuple[Rate, ...]  # RATELIMIT_SHARED_RATE: all keys together
    max_pause: float
    retry_times: int
    count_304: bool

    @classmethod
    def from_settings(cls, settings: BaseSettings) -> Pacing:
        get = settings.get
        enabled = parse_bool_setting("RATELIMIT_ENABLED", get("RATELIMIT_ENABLED"))
        setting = parse_rate_setting(get("RATELIMIT_RATE"))
        start = get("RATELIMIT_START")
        starts = parse_rates(start, "RATELIMIT_START")
        if len(starts) != 1:
            raise ConfigError(f"RATELIMIT_START must be one rate like 60/60, got {start!r}")
        shared = get("RATELIMIT_SHARED_RATE")
        backend = get("RATELIMIT_BACKEND")
        if backend not in BACKENDS:
            raise ConfigError(f"RATELIMIT_BACKEND must be memory or redis, got {backend!r}")
        return cls(
            enabled=enabled,
            rates=setting.rates,
            auto=setting.auto,
            start=starts[0],
            burst=parse_int("RATELIMIT_BURST", get("RATELIMIT_BURST"), least=1),
            backend=str(backend),
            shared=parse_rates(shared, "RATELIMIT_SHARED_RATE") if shared is not None else (),
            max_pause=parse_seconds("RATELIMIT_MAX_PAUSE", get("RATELIMIT_MAX_PAUSE")),
            retry_times=parse_int("RATELIMIT_RETRY_TIMES", get("RATELIMIT_RETRY_TIMES"), least=0),
            count_304=parse_bool_setting("RATELIMIT_COUNT_304", get("RATELIMIT_COUNT_304")),
        )

    def describe(self) -> str:
        """``auto,5000/3600`` or ``100/60``: the setting as it was read."""
        return ",".join(["auto"] * self.auto + [str(rate) for rate in self.rates])


@dataclass(frozen=True, slots=True)
class Retrying:
    """``RETRY_*``: retries of failed requests, after a backoff."""

    enabled: bool
    times: int
    codes: frozenset[int]
    exceptions: tuple[str, ...]  # import paths, as Scrapy lists them
    base: float
    cap: float
    priority_adjust: int

    @classmethod
    def from_settings(cls, settings: BaseSettings) -> Retrying:
        def read(name: str, parse: Callable[[str, Any], Any]) -> Any:
            return parse(name, settings.get(name))

        return cls(
            enabled=read("RETRY_ENABLED", parse_bool_setting),
            times=read("RETRY_TIMES", partial(parse_int, least=0)),
            codes=read("RETRY_HTTP_CODES", _status_codes),
            exceptions=tuple(settings.getlist("RETRY_EXCEPTIONS")),
            base=read("RETRY_BACKOFF_BASE", parse_seconds),
            cap=read("RETRY_BACKOFF_MAX", parse_seconds),
            priority_adjust=read("RETRY_PRIORITY_ADJUST", parse_int),
        )


@dataclass(frozen=True, slots=True)
class Storing:
    """``DATABASE_URL`` and ``STORAGE_*``; ``JOBDIR``, where the last summary is kept."""

    database_url: str
    batch_size: int
    linger: float
    jobdir: str | None

    @classmethod
    def from_settings(cls, settings: BaseSettings) -> Storing:
        get = settings.get
        return cls(
            database_url=str(get("DATABASE_URL") or ""),
            batch_size=parse_int("STORAGE_BATCH_SIZE", get("STORAGE_BATCH_SIZE"), least=1),
            linger=parse_seconds("STORAGE_LINGER", get("STORAGE_LINGER")),
            jobdir=get("JOBDIR") or None,
        )


@dataclass(frozen=True, slots=True)
class Reporting:
    """What the crawl shows: progress lines or bar, the log, the metrics endpoint."""

    progress_interval: float
    progress_bar: bool
    log_level: Any
    log_file: str | None
    log_encoding: str
    metrics_port: int | None  # None: no endpoint
    metrics_bind: str

    @classmethod
    def from_settings(cls, settings: BaseSettings) -> Reporting:
        get = settings.get
        log_file, encoding = log_target(settings)
        return cls(
            progress_interval=parse_seconds("PROGRESS_INTERVAL", get("PROGRESS_INTERVAL")),
            progress_bar=parse_bool_setting("PROGRESS_BAR", get("PROGRESS_BAR")),
            log_level=log_level(settings),
            log_file=log_file,
            log_encoding=encoding,
            metrics_port=_port("METRICS_PORT", get("METRICS_PORT")),
            metrics_bind=str(get("METRICS_BIND")),
        )


@dataclass(frozen=True)
class Job:
    """Every setting of the project, read and checked."""

    api_url: str  # the URL template, with {id}
    origin: str  # the API it names: what a rate limit is keyed by
    batching: BatchSpec | None  # None: one id a request
    batch_size: int
    items_path: tuple[str, ...] | None  # API_BATCH_ITEMS
    item_id: str  # API_ITEM_ID
    keys: tuple[Key, ...]
    schema: dict[str, Any]
    pacing: Pacing
    retrying: Retrying
    storing: Storing
    reporting: Reporting
    distributed: bool
    redis_url: str | None
    download_timeout: float

    @classmethod
    def from_settings(cls, settings: BaseSettings) -> Job:
        """Raises :class:`ConfigError` naming the first bad setting and its value."""
        for name, check in SCRAPY_CHECKS.items():
            if settings.get(name) is not None:
                check(name, settings.get(name))
        api_url = check_api_url(settings.get("API_URL"))
        items = check_path("API_BATCH_ITEMS", settings.get("API_BATCH_ITEMS"))
        id_field = item_id(settings)
        batching = BatchSpec.from_settings(
            settings, api_url=api_url, items=items, id_field=id_field
        )
        return cls(
            api_url=api_url,
            origin=origin_of(api_url),
            batching=batching,
            batch_size=batching.size if batching is not None else 1,
            items_path=items,
            item_id=id_field,
            keys=load_keys(settings),
            schema=load_schema(settings.get("ITEM_SCHEMA")),
            pacing=Pacing.from_settings(settings),
            retrying=Retrying.from_settings(settings),
            storing=Storing.from_settings(settings),
            reporting=Reporting.from_settings(settings),
            distributed=is_distributed(settings),
            redis_url=settings.get("REDIS_URL") or None,
            download_timeout=parse_seconds(
                "DOWNLOAD_TIMEOUT", settings.get("DOWNLOAD_TIMEOUT"), positive=True
            ),
        )

    @classmethod
    def of(cls, crawler: Crawler) -> Job:
        """The crawler's job: built once, from the settings as the crawl has them. The spider
        is made before the add-ons change the settings (DISTRIBUTED's backend): until they
        are frozen, each call reads them anew."""
        job = _OF_CRAWLER.get(crawler)
        if job is None:
            job = cls.from_settings(crawler.settings)
            if crawler.settings.frozen:
                _OF_CRAWLER[crawler] = job
        return job

    @property
    def redis_needed_by(self) -> str | None:
        """What needs Redis, if anything: named as an error message names it."""
        if self.distributed:
            return "DISTRIBUTED"
        if self.pacing.enabled and self.pacing.backend == "redis":
            return "RATELIMIT_BACKEND=redis"
        return None


def item_id(settings: BaseSettings) -> str:
    """``API_ITEM_ID``: the field of each item naming its id."""
    id_field = str(settings.get("API_ITEM_ID") or "")
    if not id_field.strip():
        raise ConfigError(
            f"API_ITEM_ID must name the field holding each item's id, got {id_field!r}"
        )
    return id_field
