"""GCRA rate limiting behind one Protocol: per-process memory and shared, atomic Redis backends.

GCRA keeps one number per key, the theoretical arrival time (TAT) of the next request. Each allowed request
pushes it forward by the emission interval T = period / count; a request is refused when that would put
the TAT more than count * T ahead of now. That allows a burst of exactly `count`, then one every T.

Both backends compute in integer microseconds with the same formulas, so they decide identically:
float seconds would drift by rounding over a burst and could refuse its last request, and Lua
(Redis) numbers are doubles, exact for integers only up to 2**53 (epoch microseconds fit).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # the client is made (and redis imported) only where Redis is configured
    import redis.asyncio

from rampart.lib.rates import Rate

_US = 1_000_000

# How many least-recently-used keys one hit inspects for a TAT in the past (as good as absent: dropping
# it changes no decision). A small constant keeps hit() O(1); stale keys drain as fast as new ones come.
_SWEEP = 2


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one hit, with what the RateLimit-* and Retry-After headers need."""

    allowed: bool
    limit: int  # rate.count
    remaining: int  # requests still allowed right now (>= 0)
    reset_after: float  # seconds until the bucket is fully replenished (for RateLimit-Reset)
    retry_after: float  # seconds until the next request would be allowed (0.0 when allowed)


class RateLimiter(Protocol):
    """Counts a request against `key` and says whether it may proceed."""

    async def hit(self, key: str, rate: Rate) -> Decision: ...

    async def close(self) -> None: ...


def _interval_us(rate: Rate) -> int:
    # Rounded up to a whole microsecond: the effective period grows by at most `count` µs.
    return max(1, math.ceil(rate.period * _US / rate.count))


def _decide(stored_tat: int | None, now: int, interval: int, count: int) -> tuple[Decision, int | None]:
    """Pure GCRA step: (decision, TAT to store or None when refused). Mirrored by _GCRA_LUA."""
    window = interval * count
    tat = now if stored_tat is None else max(stored_tat, now)
    new_tat = tat + interval
    if new_tat - now > window:
        return Decision(False, count, 0, (tat - now) / _US, (new_tat - window - now) / _US), None
    return Decision(True, count, (window - (new_tat - now)) // interval, (new_tat - now) / _US, 0.0), new_tat


class MemoryRateLimiter:
    """Per-process limiter: limits are not shared between workers. Memory stays bounded by
    dropping keys whose TAT has passed and, beyond `max_keys`, the least recently used ones."""

    def __init__(self, max_keys: int = 100_000, *, clock: Callable[[], float] = time.monotonic) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self._max_keys = max_keys
        # A monotonic clock by default: a wall-clock step back would otherwise lock callers out.
        self._clock = clock
        self._tats: OrderedDict[str, int] = OrderedDict()

    async def hit(self, key: str, rate: Rate) -> Decision:
        # No await in here, so concurrent hits on one event loop cannot interleave.
        now = round(self._clock() * _US)
        decision, new_tat = _decide(self._tats.get(key), now, _interval_us(rate), rate.count)
        if new_tat is not None:
            self._tats[key] = new_tat
        self._tats.move_to_end(key)  # there either way: a refusal means a stored TAT
        for _ in range(_SWEEP):
            oldest = next(iter(self._tats.items()), None)
            if oldest is None or oldest[1] > now:
                break
            del self._tats[oldest[0]]
        # Forgetting a live key forgives its callers; acceptable as the price of bounded memory.
        while len(self._tats) > self._max_keys:
            self._tats.popitem(last=False)
        return decision

    async def close(self) -> None:
        self._tats.clear()


# Redis TIME is the clock so every worker and instance agrees on "now" whatever their own clocks
# say. Scripts are replicated by effects (Redis >= 5), so the non-deterministic TIME is allowed.
_GCRA_LUA = """
local interval, count = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = interval * count
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or 0), now)
local new_tat = tat + interval
if new_tat - now > window then
  return {0, 0, tat - now, new_tat - window - now}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000))
return {1, math.floor((window - (new_tat - now)) / interval), new_tat - now, 0}
"""


class RedisRateLimiter:
    """Limiter shared by every process using the same Redis and prefix; each hit is one atomic script."""

    def __init__(self, client: redis.asyncio.Redis, *, prefix: str = "rampart:rl:") -> None:
        self._prefix = prefix
        self._script = client.register_script(_GCRA_LUA)

    async def hit(self, key: str, rate: Rate) -> Decision:
        result = await self._script(keys=[self._prefix + key], args=[_interval_us(rate), rate.count])
        allowed, remaining, reset_us, retry_us = (int(v) for v in result)
        return Decision(bool(allowed), rate.count, remaining, reset_us / _US, retry_us / _US)

    async def close(self) -> None:
        """Nothing to release: the client belongs to the caller."""
