"""The database as the record of what is done, driven from a thread of its own."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from ingest.storage import Record, Store, open_store

T = TypeVar("T")


class Ledger:
    """A store whose blocking calls run one at a time in a dedicated thread.

    The reactor only awaits: a slow disk or a distant database never stalls it.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-db")

    @classmethod
    def from_url(cls, url: str) -> Ledger:
        return cls(open_store(url))

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def open(self) -> None:
        await self._run(self.store.connect)

    async def write(self, records: Sequence[Record]) -> None:
        await self._run(self.store.write, records)

    async def states(self, ids: Sequence[str]) -> dict[str, tuple[str, float]]:
        return await self._run(self.store.states, ids)

    async def counts(self) -> dict[str, int]:
        return await self._run(self.store.counts)

    async def close(self) -> None:
        try:
            await self._run(self.store.close)
        finally:
            self._executor.shutdown(wait=False)
