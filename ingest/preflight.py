"""Everything a crawl needs, checked before its first request."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import redis

from ingest.config import (
    ConfigError,
    check_api_url,
    id_source,
    load_schema,
    parse_flag,
    parse_positive_int,
    parse_rates,
    parse_seconds,
)
from ingest.storage import StorageError, mask_url, open_store

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

BACKENDS = ("memory", "redis")


def check_settings(settings: BaseSettings) -> None:
    """Raise :class:`ConfigError` naming the first bad setting and its value."""
    check_api_url(settings.get("API_URL"))
    if settings.getbool("RATELIMIT_ENABLED"):
        parse_rates(settings.get("RATELIMIT_RATE"))
        parse_positive_int("RATELIMIT_BURST", settings.get("RATELIMIT_BURST"))
        parse_seconds("RATELIMIT_MAX_PAUSE", settings.get("RATELIMIT_MAX_PAUSE"))
        backend = settings.get("RATELIMIT_BACKEND")
        if backend not in BACKENDS:
            raise ConfigError(f"RATELIMIT_BACKEND must be memory or redis, got {backend!r}")
    load_schema(settings.get("ITEM_SCHEMA"))
    parse_positive_int("STORAGE_BATCH_SIZE", settings.get("STORAGE_BATCH_SIZE"))
    parse_seconds("STORAGE_LINGER", settings.get("STORAGE_LINGER"))
    check_database(settings.get("DATABASE_URL"))
    distributed = parse_flag("DISTRIBUTED", settings.get("DISTRIBUTED"))
    if distributed or settings.get("RATELIMIT_BACKEND") == "redis":
        check_redis(
            settings.get("REDIS_URL"), "DISTRIBUTED" if distributed else "RATELIMIT_BACKEND=redis"
        )


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


def check_spider_args(args: dict[str, Any]) -> None:
    """The ``api`` spider's arguments: ``ids`` or ``ids_file``, and ``refresh``."""
    id_source(args)
    parse_flag("refresh", args.get("refresh"))
