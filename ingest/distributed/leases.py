"""A lease in Redis: one worker at a time holds it, for a few seconds unless it renews it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ingest.distributed.unavailable import DOWN

if TYPE_CHECKING:
    import redis.asyncio as aioredis

logger = logging.getLogger(__name__)

# KEYS[1]: the lease; ARGV[1]: the taker (a worker's id); ARGV[2]: a lease's length (ms).
# The taker holds it now: {1}. Another does: {0, holder, milliseconds left}. Whatever set
# the key's expiry (an earlier version's heartbeat kept it for days), a lease held by
# another never has more than a lease's length left: a holder that dies frees it in time.
TAKE = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1}
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {1}
end
local left = redis.call('PTTL', KEYS[1])
if left < 0 or left > tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  left = tonumber(ARGV[2])
end
return {0, holder, left}
"""

# Renews the lease only if the worker still holds it: one that ran out, even if free now,
# is not taken again (another worker may have held it meanwhile).
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# Frees the lease only if the worker still holds it.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


@dataclass(frozen=True, slots=True)
class Holder:
    """Another worker holding the lease, as the last try to take it saw: who, and for how
    many seconds more unless it renews it."""

    worker: str
    left: float


class Lease:
    """A Redis key that names the worker holding it and expires ``seconds`` after it was
    last taken: the holder renews it by taking it again; if it dies, another worker takes
    it once it has run out. Taking, renewing and freeing are one round trip each."""

    def __init__(self, client: aioredis.Redis, key: str, worker: str, seconds: float) -> None:
        self.client, self.key, self.worker, self.seconds = client, key, worker, seconds
        self._take = client.register_script(TAKE)
        self._renew = client.register_script(RENEW)
        self._release = client.register_script(RELEASE)
        self.other: Holder | None = None  # who held it at the last try, if not this worker
        self.held = False  # this worker held it at the last try

    async def take(self) -> bool:
        """Hold the lease (again, for ``seconds`` from now); False while another holds it."""
        result = await self._take(keys=[self.key], args=[self.worker, int(self.seconds * 1000)])
        self.held = bool(int(result[0]))
        if self.held:
            self.other = None
            return True
        holder = result[1].decode() if isinstance(result[1], bytes) else str(result[1])
        self.other = Holder(holder, int(result[2]) / 1000)
        return False

    async def renew(self) -> bool:
        """Hold the lease for ``seconds`` more, if this worker has held it without a break
        since it took it; False if it ran out meanwhile (then :attr:`held` turns False)."""
        result = await self._renew(keys=[self.key], args=[self.worker, int(self.seconds * 1000)])
        self.held = bool(int(result))
        return self.held

    async def release(self) -> None:
        """Free the lease, if this worker still holds it."""
        self.held = False
        await self._release(keys=[self.key], args=[self.worker])

    @asynccontextmanager
    async def kept(
        self, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    ) -> AsyncIterator[None]:
        """Renewed every third of its length while the block runs, then freed: a block that
        takes longer than a lease keeps it, one whose worker dies loses it in time. Should a
        renewal come too late (the lease ran out, whether another worker took it meanwhile
        or not), :attr:`held` turns False and stays so: the block ends its turn."""

        async def keep() -> None:
            while self.held:
                await sleep(self.seconds / 3)
                try:
                    await self.renew()
                except Exception:
                    logger.warning("Renewing the lease %s failed", self.key, exc_info=True)

        renewing = asyncio.ensure_future(keep())
        try:
            yield
        finally:
            renewing.cancel()
            with suppress(asyncio.CancelledError):
                await renewing
            with suppress(*DOWN):  # unfreed, it runs out
                await self.release()
