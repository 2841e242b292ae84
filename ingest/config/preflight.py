"""Everything a crawl needs, checked before its first request."""

from __future__ import annotations

import errno
import socket
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

import redis

from ingest.config.masking import mask_url
from ingest.config.values import ConfigError, check_path, parse_flag
from ingest.fetching.ids import id_source
from ingest.job import Job
from ingest.listing.pagination import check_listing_url, parse_pagination, parse_since
from ingest.storage import open_store
from ingest.storage.base import StorageError

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

CONNECT_TIMEOUT = 10.0


class ApiUnreachable(ConfigError):
    """The API's host cannot be resolved or connected to; nothing was sent."""


def check_settings(settings: BaseSettings, api_url: str | None = None) -> Job:
    """The job's settings read (:class:`ConfigError` names the first bad one and its
    value), then what they name checked: the metrics port free, the database open, Redis
    answering, the API reachable. ``api_url``: the URL the crawl starts from, if not
    API_URL's (a listing's)."""
    job = Job.from_settings(settings)
    reporting = job.reporting
    if reporting.metrics_port is not None:
        check_metrics_endpoint(reporting.metrics_port, reporting.metrics_bind)
    check_database(job.storing.database_url)
    if (needed_by := job.redis_needed_by) is not None:
        check_redis(job.redis_url, needed_by)
    check_reachable(api_url or job.api_url)
    return job


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


def check_list_args(args: dict[str, Any]) -> str:
    """The ``list`` spider's arguments; returns the listing's URL."""
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
