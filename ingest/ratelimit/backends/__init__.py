"""Where buckets live: in this process, or in Redis, shared by every worker."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, Protocol, TypeVar

if TYPE_CHECKING:
    from ingest.ratelimit.pacing.bucket import TokenBucket
    from ingest.ratelimit.pacing.rates import Rate

P = ParamSpec("P")
T = TypeVar("T")


class Backend(Protocol):
    """Runs one operation of the bucket of ``key`` (one API, or one key of it) at a
    time, on that bucket's current state, and keeps what it changed."""

    async def run(
        self,
        key: str,
        op: Callable[Concatenate[TokenBucket, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T: ...

    async def close(self) -> None: ...


def open_backend(
    name: str,
    rates: Sequence[Rate],
    *,
    burst: int,
    redis_url: str | None = None,
    **auto: Any,
) -> Backend:
    """The backend a RATELIMIT_BACKEND names; Redis is imported only when asked for.
    ``auto``: ``auto=True`` and the ``start`` rate, for an unknown limit."""
    if name == "redis":
        from ingest.ratelimit.backends.redis import RedisBackend

        return RedisBackend.from_url(str(redis_url), rates, burst=burst, **auto)
    from ingest.ratelimit.backends.memory import MemoryBackend

    return MemoryBackend(rates, burst=burst, **auto)
