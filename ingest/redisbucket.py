"""The token bucket with its state in Redis: one bucket per API, shared by every worker."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any, Self

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ingest.config import ConfigError, Rate
from ingest.masking import mask_url
from ingest.ratelimit import (
    DECREASE,
    FAST_STEP,
    GENTLE_DECREASE,
    GUARD_MIN_INTERVAL,
    JITTER,
    JITTER_MAX,
    MARGIN,
    MIN_SCALE,
    SLOW_STEP,
    SPACING,
    WINDOW_MARGIN,
    Confirmation,
    Pause,
    Reservation,
)

PREFIX = "ingest:ratelimit:"
# A bucket nobody has used for this long is forgotten (longer if a window or a pause needs it).
TTL = 86_400
CONNECT_TIMEOUT = SOCKET_TIMEOUT = 5.0

# Each operation is one script, so that every worker sees the bucket change at once.
# They follow TokenBucket in ingest/ratelimit.py step by step: it is the reference.
# KEYS[1] is the bucket's state (a hash), KEYS[2] its log of sends (a sorted set scored by
# send time). ARGV: now ('' for the Redis server's clock), rates ('100/60.0,5000/3600.0'),
# burst, margin, spacing, WINDOW_MARGIN, DECREASE, FAST_STEP, SLOW_STEP, MIN_SCALE, JITTER,
# JITTER_MAX, ttl, GUARD_MIN_INTERVAL; the operation's own arguments follow from ARGV[15].
_PRELUDE = """
local state, sends = KEYS[1], KEYS[2]
-- Numbers go back as strings: Redis truncates Lua numbers to integers. 17 digits are exact.
local function num(x) return string.format('%.17g', x) end
local now = tonumber(ARGV[1])
if not now then
  -- One clock for every worker: theirs may disagree, the server's is the same for all.
  -- (Redis 3.2-4 replicate a script that read TIME by its effects only when asked to.)
  if redis.replicate_commands then redis.replicate_commands() end
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local burst, margin, spacing = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local WINDOW_MARGIN, DECREASE = tonumber(ARGV[6]), tonumber(ARGV[7])
local FAST_STEP, SLOW_STEP, MIN_SCALE = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local JITTER, JITTER_MAX, ttl = tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13])
local GUARD_MIN_INTERVAL = tonumber(ARGV[14])

local NEG = -math.huge
local b = {epoch = 0, scale = 1, ceiling = 1, changed = NEG, paused_until = NEG,
  pause_began = NEG, budget_until = NEG, budget_left = 0, tat = NEG, last_sent = NEG,
  announced_limit = 0, announced_period = 0, seq = 0, maxlen = 0}
local raw = redis.call('HGETALL', state)
for i = 1, #raw, 2 do
  local value = tonumber(raw[i + 1])
  if value then b[raw[i]] = value end
end

-- The caller's rates, not stored ones: each worker applies what it was started with.
local function rates()
  local all = {}
  for limit, period in string.gmatch(ARGV[2], '(%d+)/([^,]+)') do
    all[#all + 1] = {tonumber(limit), tonumber(period)}
  end
  if b.announced_limit > 0 then all[#all + 1] = {b.announced_limit, b.announced_period} end
  table.sort(all, function(x, y) return x[2] < y[2] or (x[2] == y[2] and x[1] < y[1]) end)
  return all
end

local function interval()
  local pace = rates()[1]
  return pace[2] / pace[1] / b.scale
end

local function guarded()
  return burst == 1 and interval() >= GUARD_MIN_INTERVAL
end

local function void_bookings()
  b.epoch = b.epoch + 1
  redis.call('ZREMRANGEBYSCORE', sends, '(' .. num(now), '+inf')
  local last = redis.call('ZRANGE', sends, -1, -1, 'WITHSCORES')
  b.tat = (tonumber(last[2]) or NEG) + interval() * (1 + margin)
end

local function save()
  local longest = 0
  for _, r in ipairs(rates()) do
    b.maxlen = math.max(b.maxlen, r[1])
    longest = math.max(longest, r[2])
  end
  local fields = {}
  for name, value in pairs(b) do
    fields[#fields + 1] = name
    fields[#fields + 1] = num(value)
  end
  redis.call('HSET', state, unpack(fields))
  -- For whoever inspects the bucket: the calls themselves use the caller's rates.
  redis.call('HSETNX', state, 'configured', ARGV[2])
  -- Kept while a window or a pause still needs them, and at least ttl after the last use.
  local keep = math.ceil(math.max(ttl, 2 * longest / b.scale, b.paused_until - now))
  redis.call('EXPIRE', state, keep)
  redis.call('EXPIRE', sends, keep)
end
"""

_RESERVE = """
local step = interval() * (1 + margin)
local at = math.max(now, b.paused_until, b.tat - (burst - 1) * step)
local count = redis.call('ZCARD', sends)
for _, r in ipairs(rates()) do
  if count >= r[1] then
    local window = r[2] / b.scale
    window = window + math.max(window * margin, margin ~= 0 and WINDOW_MARGIN or 0)
    local oldest = redis.call('ZRANGE', sends, -r[1], -r[1], 'WITHSCORES')
    at = math.max(at, tonumber(oldest[2]) + window)
  end
end
local imposed = b.paused_until
if at < b.budget_until then
  if b.budget_left > 0 then
    b.budget_left = b.budget_left - 1
  else
    at = math.max(imposed, b.budget_until)
    imposed = at
  end
end
b.tat = math.max(b.tat, at) + step
b.seq = b.seq + 1
redis.call('ZADD', sends, num(at), b.seq)
save()
-- The longest window looks back maxlen sends: older ones can never count again.
redis.call('ZREMRANGEBYRANK', sends, 0, -b.maxlen - 1)
return {num(at - now), b.epoch, num(at), guarded() and 1 or 0, num(math.max(0, imposed - now))}
"""

# ARGV[15]: the slot's epoch; ARGV[16]: its booked time, exactly as reserve returned it.
_CONFIRM = """
if tonumber(ARGV[15]) ~= b.epoch then return {'', num(now)} end
if guarded() then
  local wait = b.last_sent + interval() * (1 + spacing) - now
  if wait > 0 then return {num(wait), num(now)} end
end
b.last_sent = now
-- The windows count a send when it went: the booking moves to the actual time.
local booked = redis.call('ZRANGEBYSCORE', sends, ARGV[16], ARGV[16], 'LIMIT', 0, 1)
if booked[1] then redis.call('ZADD', sends, num(now), booked[1]) end
save()
return {'0', num(now)}
"""

# ARGV[15]: seconds; ARGV[16]: a random number in [0, 1) for the jitter.
_PAUSE = """
local seconds, rand = tonumber(ARGV[15]), tonumber(ARGV[16])
local till = now + seconds + rand * math.min(JITTER * seconds, JITTER_MAX)
if till <= b.paused_until then return {0, num(b.paused_until - now), '0'} end
local started = b.paused_until <= now
if started then b.pause_began = now end
local added = till - math.max(now, b.paused_until)
b.paused_until = till
void_bookings()
-- After the pause only one token is available: no burst on resume.
b.tat = till + (burst - 1) * interval()
save()
return {started and 1 or 0, num(till - now), num(added)}
"""

_RESTART = """
void_bookings()
b.tat = math.max(b.tat, now + interval() * (1 + margin))
save()
return 0
"""

# ARGV[15]: remaining; ARGV[16]: reset (seconds); ARGV[17]: sent_at.
_BUDGET = """
local remaining, reset, after = tonumber(ARGV[15]), tonumber(ARGV[16]), '(' .. ARGV[17]
b.budget_until = now + reset
b.budget_left = remaining - redis.call('ZCOUNT', sends, after, '+inf')
if b.budget_left < 0 then
  void_bookings()
  b.budget_left = remaining - redis.call('ZCOUNT', sends, after, '+inf')
end
save()
return 0
"""

# ARGV[15], ARGV[16]: the announced limit and period.
_ADOPT = """
local limit, period = tonumber(ARGV[15]), tonumber(ARGV[16])
if limit == b.announced_limit and period == b.announced_period then return 0 end
b.announced_limit, b.announced_period = limit, period
void_bookings()
save()
return 1
"""

# ARGV[15]: sent_at; ARGV[16]: GENTLE_DECREASE. Answers to sends from before the current
# pause are not news; a lone 429 lowers the pace a little, another within the period more.
_LIMITED = """
if tonumber(ARGV[15]) <= b.pause_began then return 0 end
local again = now - (b.limited_at or NEG) < rates()[1][2]
b.limited_at = now
b.ceiling = b.scale
b.scale = math.max(MIN_SCALE, b.scale * (again and DECREASE or tonumber(ARGV[16])))
b.changed = now
save()
return 1
"""

_SUCCEEDED = """
if b.scale >= 1 or now - b.changed < rates()[1][2] / 6 then return 0 end
local step = b.scale < 0.95 * b.ceiling and FAST_STEP or SLOW_STEP
b.scale = math.min(1, b.scale + step)
b.changed = now
save()
return 1
"""

_PER_MINUTE = """
local slowest = math.huge
for _, r in ipairs(rates()) do slowest = math.min(slowest, r[1] / r[2]) end
return num(60 * slowest * b.scale)
"""


class RedisUnavailable(ConnectionError):
    """Redis cannot be reached; the message names it by its URL, password masked."""


class RedisBackend:
    """One bucket per API in Redis: workers on any machine that share the Redis share it.

    Same behaviour as TokenBucket, decided atomically by Lua scripts on the server, with
    the server's clock: the ``delay``, ``wait`` and ``remaining`` returned are durations,
    the ``at`` values Redis timestamps for the caller to hand back as ``sent_at``.
    Every worker must be started with the same rates and burst: each call applies the
    caller's own settings to the shared state. What the server's answers teach (an
    announced quota, a slower pace after 429s) is shared by all workers.

    ``clock`` is for tests only: the scripts then take the time from it instead of
    from the Redis server, so that timelines can be asserted exactly.
    """

    def __init__(
        self,
        client: Redis,
        rates: Sequence[Rate],
        *,
        burst: int = 1,
        margin: float = MARGIN,
        spacing: float = SPACING,
        rand: Callable[[], float] = random.random,
        clock: Callable[[], float] | None = None,
        ttl: int = TTL,
        url: str | None = None,
        owns_client: bool = False,
    ) -> None:
        if not rates:
            raise ValueError("a bucket needs at least one rate")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst!r}")
        self.client, self.rates, self.burst = client, tuple(rates), burst
        self.rand, self.clock = rand, clock
        self._owns_client = owns_client
        kwargs = client.connection_pool.connection_kwargs
        self.url = mask_url(url or f"redis://{kwargs.get('host')}:{kwargs.get('port')}")
        self._settings = [
            ",".join(f"{r.limit}/{float(r.period)!r}" for r in self.rates),
            *(repr(float(x)) for x in (burst, margin, spacing, WINDOW_MARGIN, DECREASE)),
            *(repr(float(x)) for x in (FAST_STEP, SLOW_STEP, MIN_SCALE, JITTER, JITTER_MAX)),
            str(ttl),
            repr(float(GUARD_MIN_INTERVAL)),
        ]
        script = client.register_script
        self._reserve, self._confirm = script(_PRELUDE + _RESERVE), script(_PRELUDE + _CONFIRM)
        self._pause, self._budget = script(_PRELUDE + _PAUSE), script(_PRELUDE + _BUDGET)
        self._restart = script(_PRELUDE + _RESTART)
        self._adopt, self._limited = script(_PRELUDE + _ADOPT), script(_PRELUDE + _LIMITED)
        self._succeeded = script(_PRELUDE + _SUCCEEDED)
        self._per_minute = script(_PRELUDE + _PER_MINUTE)

    @classmethod
    def from_url(
        cls,
        url: str,
        rates: Sequence[Rate],
        burst: int = 1,
        rand: Callable[[], float] = random.random,
        **options: Any,
    ) -> Self:
        """Connects lazily: call ``check()`` to fail early when Redis is unreachable."""
        try:
            client = Redis.from_url(
                url, socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=SOCKET_TIMEOUT
            )
        except ValueError as exc:
            raise ConfigError(
                f"REDIS_URL is not a Redis URL ({exc}), got {mask_url(url)!r}"
            ) from exc
        return cls(client, rates, burst=burst, rand=rand, url=url, owns_client=True, **options)

    @staticmethod
    def keys(key: str) -> list[str]:
        """The bucket's state and its log of sends, in one cluster slot (the hash tag)."""
        return [f"{PREFIX}{{{key}}}:state", f"{PREFIX}{{{key}}}:sends"]

    async def _run(self, script: Any, key: str, *args: object) -> Any:
        now = "" if self.clock is None else repr(self.clock())
        try:
            return await script(keys=self.keys(key), args=[now, *self._settings, *args])
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise RedisUnavailable(f"Redis at {self.url} is unreachable: {exc}") from exc

    async def check(self) -> None:
        """Raises RedisUnavailable, naming the URL, if Redis does not answer."""
        try:
            await self.client.ping()
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise RedisUnavailable(f"Redis at {self.url} is unreachable: {exc}") from exc

    async def reserve(self, key: str) -> Reservation:
        delay, epoch, at, precise, imposed = await self._run(self._reserve, key)
        return Reservation(float(delay), int(epoch), float(at), bool(precise), float(imposed))

    async def confirm(self, key: str, slot: Reservation) -> Confirmation:
        wait, at = await self._run(self._confirm, key, slot.epoch, repr(slot.at))
        return Confirmation(float(wait) if wait not in ("", b"") else None, float(at))

    async def pause(self, key: str, seconds: float) -> Pause:
        started, remaining, added = await self._run(
            self._pause, key, repr(float(seconds)), repr(self.rand())
        )
        return Pause(bool(started), float(remaining), float(added))

    async def restart(self, key: str) -> None:
        await self._run(self._restart, key)

    async def budget(self, key: str, remaining: int, reset: float, sent_at: float) -> None:
        await self._run(self._budget, key, int(remaining), repr(float(reset)), repr(float(sent_at)))

    async def adopt(self, key: str, rate: Rate) -> bool:
        return bool(await self._run(self._adopt, key, rate.limit, repr(float(rate.period))))

    async def limited(self, key: str, sent_at: float) -> bool:
        return bool(
            await self._run(self._limited, key, repr(float(sent_at)), repr(GENTLE_DECREASE))
        )

    async def succeeded(self, key: str) -> bool:
        return bool(await self._run(self._succeeded, key))

    async def per_minute(self, key: str) -> float:
        return float(await self._run(self._per_minute, key))

    async def close(self) -> None:
        if self._owns_client:
            await self.client.aclose()
