"""Redis gone for a while (a restart, a failover): calls retried through it, told once."""

from __future__ import annotations

import logging
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ingest.config.masking import mask_url

logger = logging.getLogger(__name__)

# What a Redis that is down (or restarting) raises, once a call's retries are spent.
DOWN = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)
# Each call is tried again after 0.1 s, 0.2 s … then every 2 s, for about a minute: a
# restart, even one that loads a large append-only file, is waited out call by call.
RETRIES, BACKOFF_BASE, BACKOFF_CAP = 35, 0.1, 2.0
AGAIN = 5.0  # seconds before a worker's loop tries again, when a call's retries were spent
# The sync client (scrapy-redis's queue) fails fast instead: it runs in the reactor's thread.
SYNC_PARAMS: dict[str, Any] = {"socket_timeout": 5, "socket_connect_timeout": 2}


def retrying_client(url: str) -> aioredis.Redis:
    """An asyncio client whose calls are retried while Redis is unavailable."""
    return aioredis.Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=2,
        socket_timeout=10,
        retry=Retry(ExponentialBackoff(cap=BACKOFF_CAP, base=BACKOFF_BASE), RETRIES),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )


class Outage:
    """Tells, once each, when Redis stops answering one part of a worker and when it answers
    again: ``what`` names the part (the queue, the coordination)."""

    def __init__(self, what: str, url: str = "") -> None:
        self.what, self.url = what, mask_url(url) if url else "Redis"
        self.down = False

    def began(self, error: BaseException) -> None:
        if not self.down:
            self.down = True
            logger.warning(
                "%s unavailable to %s (%s): waiting for it, nothing is marked meanwhile",
                self.url, self.what, error,
            )  # fmt: skip

    def ended(self) -> None:
        if self.down:
            self.down = False
            logger.info("%s answers %s again", self.url, self.what)
