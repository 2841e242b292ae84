"""Everything a crawl needs, checked before its first request."""

from __future__ import annotations

import errno
import logging
import socket
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

import redis

from ingest.answers import check_path
from ingest.api import check_api_url
from ingest.batches import BatchSpec
from ingest.config import (
    ConfigError,
    load_schema,
    parse_bool_setting,
    parse_flag,
    parse_int,
    parse_number,
    parse_seconds,
)
from ingest.ids import id_source
from ingest.keys import load_keys
from ingest.masking import mask_url
from ingest.pagination import check_listing_url, parse_pagination, parse_since
from ingest.ratelimit.rates import parse_rate_setting, parse_rates
from ingest.storage import open_store
from ingest.storage.base import StorageError

if TYPE_CHECKING:
    from collections.abc import Callable

    from scrapy.settings import BaseSettings

BACKENDS = ("memory", "redis")
CONNECT_TIMEOUT = 10.0


class ApiUnreachable(ConfigError):
    """The API's host cannot be resolved or connected to; nothing was sent."""


def _log_level(name: str, value: Any) -> object:
    if isinstance(value, int) or str(value) in logging.getLevelNamesMapping():
        return value
    raise ConfigError(f"{name} must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {value!r}")


def _status_codes(name: str, value: Any) -> object:
    codes = value if isinstance(value, list | tuple) else str(value).split(",")
    for code in codes:
        try:
            valid = 100 <= int(str(code).strip()) <= 599
        except ValueError:
            valid = False
        if not valid:
            raise ConfigError(f"{name} must list HTTP statuses like 500,503, got {value!r}")
    return value


def _port(name: str, value: Any) -> object:
    if str(value).strip() == "":
        return None
    port = parse_int(name, value, least=0)
    if port > 65535:
        raise ConfigError(f"{name} must be a TCP port from 0 to 65535, got {value!r}")
    return port


# Every setting the project reads, and Scrapy's that users commonly pass: a bad value
# fails here, in one line, rather than as a traceback or a silently odd crawl.
CHECKS: dict[str, Callable[[str, Any], object]] = {
    "CONCURRENT_REQUESTS": partial(parse_int, least=1),
    "CONCURRENT_REQUESTS_PER_DOMAIN": partial(parse_int, least=1),
    "CONCURRENT_ITEMS": partial(parse_int, least=1),
    "DOWNLOAD_TIMEOUT": partial(parse_seconds, positive=True),
    "DOWNLOAD_DELAY": parse_seconds,
    "DOWNLOAD_MAXSIZE": partial(parse_int, least=0),
    "RETRY_ENABLED": parse_bool_setting,
    "RETRY_TIMES": partial(parse_int, least=0),
    "RETRY_HTTP_CODES": _status_codes,
    "RETRY_BACKOFF_BASE": parse_seconds,
    "RETRY_BACKOFF_MAX": parse_seconds,
    "RETRY_PRIORITY_ADJUST": parse_int,
    "RATELIMIT_ENABLED": parse_bool_setting,
    "RATELIMIT_RETRY_TIMES": partial(parse_int, least=0),
    "RATELIMIT_MAX_PAUSE": parse_seconds,
    "AUTOTHROTTLE_ENABLED": parse_bool_setting,
    "AUTOTHROTTLE_START_DELAY": parse_seconds,
    "AUTOTHROTTLE_MAX_DELAY": parse_seconds,
    "AUTOTHROTTLE_TARGET_CONCURRENCY": parse_number,
    "STORAGE_BATCH_SIZE": partial(parse_int, least=1),
    "STORAGE_LINGER": parse_seconds,
    "PROGRESS_INTERVAL": parse_seconds,
    "PROGRESS_BAR": parse_bool_setting,
    "METRICS_PORT": _port,
    "DISTRIBUTED": parse_bool_setting,
    "COOKIES_ENABLED": parse_bool_setting,
    "ROBOTSTXT_OBEY": parse_bool_setting,
    "HTTPCACHE_ENABLED": parse_bool_setting,
    "LOG_ENABLED": parse_bool_setting,
    "LOG_LEVEL": _log_level,
}


def check_settings(settings: BaseSettings, api_url: str | None = None) -> None:
    """Raise :class:`ConfigError` naming the first bad setting and its value. ``api_url``:
    the URL the crawl starts from, if not API_URL's (a listing's)."""
    for name, check in CHECKS.items():
        if settings.get(name) is not None:
            check(name, settings.get(name))
    check_api_url(settings.get("API_URL"))
    BatchSpec.from_settings(settings)
    load_keys(settings)
    if settings.getbool("RATELIMIT_ENABLED"):
        parse_rate_setting(settings.get("RATELIMIT_RATE"))
        start = settings.get("RATELIMIT_START")
        if len(parse_rates(start, "RATELIMIT_START")) != 1:
            raise ConfigError(f"RATELIMIT_START must be one rate like 60/60, got {start!r}")
        if settings.get("RATELIMIT_SHARED_RATE") is not None:
            parse_rates(settings.get("RATELIMIT_SHARED_RATE"), "RATELIMIT_SHARED_RATE")
        parse_int("RATELIMIT_BURST", settings.get("RATELIMIT_BURST"), least=1)
        backend = settings.get("RATELIMIT_BACKEND")
        if backend not in BACKENDS:
            raise ConfigError(f"RATELIMIT_BACKEND must be memory or redis, got {backend!r}")
    load_schema(settings.get("ITEM_SCHEMA"))
    if settings.get("METRICS_PORT") not in (None, ""):
        check_metrics_endpoint(settings.getint("METRICS_PORT"), settings.get("METRICS_BIND"))
    check_database(settings.get("DATABASE_URL"))
    distributed = settings.getbool("DISTRIBUTED")
    if distributed or settings.get("RATELIMIT_BACKEND") == "redis":
        check_redis(
            settings.get("REDIS_URL"), "DISTRIBUTED" if distributed else "RATELIMIT_BACKEND=redis"
        )
    check_path("API_BATCH_ITEMS", settings.get("API_BATCH_ITEMS"))
    parse_bool_setting("RATELIMIT_COUNT_304", settings.get("RATELIMIT_COUNT_304"))
    check_reachable(api_url or settings.get("API_URL"))


def check_redis(url: Any, needed_by: str) -> None:
    """Redis answers at REDIS_URL, so that workers fail now rather than mid-crawl."""
    if not url:
        raise ConfigError(
            f"{needed_by} needs REDIS_URL (e.g. redis://127.0.0.1:6379/0), got {url!r}"
        )
    try:
        client = redis.Redis.from_url(str(url), socket_connect_timeout=5, socket_timeout=5)
    except ValueError as exc:
        raise ConfigError(f"REDIS_URL is not a Redis URL: {mask_url(str(url))!r} ({exc})") from exc
    try:
        client.ping()
    except redis.RedisError as exc:
        raise ConfigError(f"cannot connect to REDIS_URL {mask_url(str(url))}: {exc}") from exc
    finally:
        client.close()


def check_metrics_endpoint(port: int, bind: Any) -> None:
    """The metrics endpoint can listen on METRICS_BIND:METRICS_PORT (tried, then closed)."""
    try:
        infos = socket.getaddrinfo(str(bind), port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise ConfigError(
            f"METRICS_BIND must be an address of this machine, got {bind!r} ({reason})"
        ) from exc
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                what = f"METRICS_PORT: port {port!r} is in use on {bind}"
            else:
                what = f"METRICS_BIND: cannot listen on {bind!r}"
            raise ConfigError(f"{what} ({exc.strerror})") from exc


def check_database(url: Any) -> None:
    """Open the database once (creating the tables), so a bad URL fails now."""
    try:
        store = open_store(str(url or ""))
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    try:
        store.connect()
    except StorageError as exc:
        raise ConfigError(str(exc)) from exc
    finally:
        store.close()


def check_reachable(template: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """The API's host resolves and accepts a connection (through the proxy, if one
    applies), so that an unreachable API stops the crawl before any id is tried.
    Nothing is sent: no quota is spent."""
    parts = urlsplit(template.replace("{id}", "0"))
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    what = f"API_URL {parts.scheme}://{parts.netloc}"
    proxy = getproxies().get(parts.scheme)
    if proxy and not proxy_bypass(host):
        proxied = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = proxied.hostname or "", proxied.port or 80
        what += f" (through the proxy {mask_url(proxy)})"
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except socket.gaierror as exc:
        raise ApiUnreachable(f"{what}: cannot resolve {host!r}: {exc.strerror}") from exc
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ApiUnreachable(f"{what}: cannot connect to {host}:{port}: {reason}") from exc


def check_spider_args(args: dict[str, Any]) -> None:
    """The ``api`` spider's arguments: ``ids`` or ``ids_file``, and ``refresh``."""
    id_source(args)
    parse_flag("refresh", args.get("refresh"))


def check_list_args(args: dict[str, Any], settings: BaseSettings) -> str:
    """The ``list`` spider's arguments; returns the listing's URL."""
    if parse_bool_setting("DISTRIBUTED", settings.get("DISTRIBUTED")):
        raise ConfigError(
            "DISTRIBUTED=True: the list spider walks a listing in one process (several "
            "processes can share the rate limit with RATELIMIT_BACKEND=redis)"
        )
    url = check_listing_url(args.get("url"))
    parse_pagination(args.get("pagination"))
    check_path("items", args.get("items"))
    parse_since(args.get("since"))
    parse_flag("refresh", args.get("refresh"))
    parse_flag("details", args.get("details"))
    unknown = sorted(set(args) - {"url", "pagination", "items", "since", "refresh", "details"})
    if unknown:
        raise ConfigError(f"the list spider takes no argument {unknown[0]!r}")
    return url
