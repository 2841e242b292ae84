"""Buckets in Redis, shared by every worker: the bucket's own arithmetic on the server's clock.

Each operation reads the bucket's state and the Redis server's time, runs the same
:class:`TokenBucket` arithmetic as in memory, and stores the new state only if no
other worker changed it meanwhile (a compare-and-swap in ``bucket.lua``); if one
did, it runs again on the state that worker left. So every worker sees each change
at once, and there is one pause, one pace and one clock for all.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from importlib.resources import files
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, Self, TypeVar

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ingest.config.masking import mask_url
from ingest.config.values import ConfigError
from ingest.ratelimit.pacing.bucket import TokenBucket
from ingest.ratelimit.pacing.state import BucketState

if TYPE_CHECKING:
    from ingest.ratelimit.pacing.rates import Rate

P = ParamSpec("P")
T = TypeVar("T")

logger = logging.getLogger(__name__)

PREFIX = "ingest:ratelimit:"
CONNECT_TIMEOUT = SOCKET_TIMEOUT = 5.0
# A call Redis cannot take is tried again after 0.1 s, 0.2 s … then every 2 s, for a minute:
# a restart of Redis is waited out by the requests that book meanwhile.
RETRY_FOR, RETRY_BASE, RETRY_CAP = 60.0, 0.1, 2.0
SWAP = files("ingest.ratelimit.backends").joinpath("bucket.lua").read_text(encoding="utf-8")


class RedisUnavailable(ConnectionError):
    """Redis cannot be reached; the message names it by its URL, password masked."""


class RedisBackend:
    """One bucket per key in Redis: workers on any machine that share the Redis share it.

    The ``delay``, ``wait`` and ``remaining`` a bucket returns are durations, its ``at``
    values Redis timestamps, for the caller to hand back as ``sent_at``. Every worker
    must be started with the same rates and burst: each applies its own to the shared
    state. What the server's answers teach (an announced quota, a slower pace after
    429s) is in that state, so every worker learns it.

    ``clock`` is for tests only: the time then comes from it instead of from the Redis
    server, so that timelines can be asserted exactly.
    """

    def __init__(
        self,
        client: Redis,
        rates: Sequence[Rate],
        *,
        clock: Callable[[], float] | None = None,
        url: str | None = None,
        owns_client: bool = False,
        retry_for: float = RETRY_FOR,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        **options: Any,
    ) -> None:
        """``options``: those of every :class:`TokenBucket` (burst, auto, start, …);
        ``retry_for``: seconds a call is tried again while Redis cannot be reached."""
        TokenBucket(rates, **options)  # the same checks of rates and burst
        self.client, self.rates, self.options = client, tuple(rates), options
        self.clock, self.retry_for, self.sleep = clock, retry_for, sleep
        self._owns_client = owns_client
        kwargs = client.connection_pool.connection_kwargs
        self.url = mask_url(url or f"redis://{kwargs.get('host')}:{kwargs.get('port')}")
        self._swap = client.register_script(SWAP)
        # One operation at a time per bucket from this worker: its own calls never
        # compete with each other, only with other workers'.
        self._turns: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.swaps = self.conflicts = 0
        self.down = False  # Redis unreachable at the last call

    @classmethod
    def from_url(cls, url: str, rates: Sequence[Rate], **options: Any) -> Self:
        """Connects lazily: call ``check()`` to fail early when Redis is unreachable."""
        try:
            client = Redis.from_url(
                url, socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=SOCKET_TIMEOUT
            )
        except ValueError as exc:
            raise ConfigError(
                f"REDIS_URL is not a Redis URL ({exc}), got {mask_url(url)!r}"
            ) from exc
        return cls(client, rates, url=url, owns_client=True, **options)

    @staticmethod
    def key(key: str) -> str:
        """The Redis key of one bucket (a hash: its version and state)."""
        return f"{PREFIX}{{{key}}}"

    async def run(
        self,
        key: str,
        op: Callable[Concatenate[TokenBucket, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        async with self._turns[key]:
            _, version, state, now = await self._call(key, "", "", 0)
            while True:
                bucket = self._bucket(state, now)
                result = op(bucket, *args, **kwargs)
                changed = bucket.state.dumps()
                if changed == state:
                    return result  # nothing to store: a read, or a wait to keep
                # Whole seconds, rounded up: the state outlives every window and pause.
                keep = max(1, math.ceil(bucket.keep_for()))
                stored, version, state, now = await self._call(key, version, changed, keep)
                self.swaps += 1
                if stored:
                    return result
                self.conflicts += 1

    def _bucket(self, state: str, now: float) -> TokenBucket:
        loaded = BucketState.loads(state) if state else None
        return TokenBucket(self.rates, clock=lambda: now, state=loaded, **self.options)

    async def _call(
        self, key: str, version: str, state: str, keep: int
    ) -> tuple[bool, str, str, float]:
        waited, delay = 0.0, RETRY_BASE
        while True:
            try:
                stored, version, current, now = await self._swap(
                    keys=[self.key(key)], args=[version, state, keep]
                )
                break
            except (RedisConnectionError, RedisTimeoutError) as exc:
                if waited >= self.retry_for:
                    raise RedisUnavailable(f"Redis at {self.url} is unreachable: {exc}") from exc
                if not self.down:
                    self.down = True
                    logger.warning("Redis at %s is unreachable (%s): requests wait", self.url, exc)
            # A swap that went through before its answer was lost is not stored twice: its
            # version has moved on, and the operation runs again on the state it left (a
            # slot booked twice is a slot lost, never a burst).
            await self.sleep(delay)
            waited, delay = waited + delay, min(RETRY_CAP, 2 * delay)
        if self.down:
            self.down = False
            logger.info("Redis at %s answers again: requests go on", self.url)
        server_now = float(now)
        return (
            bool(stored),
            _text(version),
            _text(current) if current else "",
            self.clock() if self.clock is not None else server_now,
        )

    async def check(self) -> None:
        """Raises RedisUnavailable, naming the URL, if Redis does not answer."""
        try:
            await self.client.ping()
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise RedisUnavailable(f"Redis at {self.url} is unreachable: {exc}") from exc

    async def close(self) -> None:
        if self._owns_client:
            await self.client.aclose()


def _text(value: str | bytes | int) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
