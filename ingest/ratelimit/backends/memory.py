"""Buckets in this process: one per key, each operation run on it directly."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Concatenate, ParamSpec, TypeVar

from ingest.ratelimit.auto import START
from ingest.ratelimit.bucket import TokenBucket

if TYPE_CHECKING:
    from ingest.ratelimit.rates import Rate

P = ParamSpec("P")
T = TypeVar("T")


class MemoryBackend:
    """One bucket per key, in this process."""

    def __init__(
        self,
        rates: Sequence[Rate],
        *,
        burst: int = 1,
        auto: bool = False,
        start: Rate = START,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.new_bucket = partial(
            TokenBucket, tuple(rates), burst=burst, auto=auto, start=start, clock=clock, rand=rand
        )
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
