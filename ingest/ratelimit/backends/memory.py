"""Buckets in this process: one per key, each operation run on it directly."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from ingest.ratelimit.pacing.bucket import TokenBucket

if TYPE_CHECKING:
    from ingest.ratelimit.pacing.rates import Rate

P = ParamSpec("P")
T = TypeVar("T")


class MemoryBackend:
    """One bucket per key, in this process."""

    def __init__(self, rates: Sequence[Rate], **options: Any) -> None:
        """``options``: those of every :class:`TokenBucket` (burst, auto, start, clock, …)."""
        self.new_bucket = partial(TokenBucket, tuple(rates), **options)
        self.buckets: dict[str, TokenBucket] = {}

    def bucket(self, key: str) -> TokenBucket:
        if key not in self.buckets:
            self.buckets[key] = self.new_bucket()
        return self.buckets[key]

    async def run(
        self,
        key: str,
        op: Callable[Concatenate[TokenBucket, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        return op(self.bucket(key), *args, **kwargs)

    async def close(self) -> None:
        self.buckets.clear()
