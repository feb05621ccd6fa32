"""Key-value store behind one Protocol, in process or in Redis: where the read replicas keep each
caller's mark (`rampart.db.replicas`), which every worker and instance must see when Redis is configured."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Protocol, cast

if TYPE_CHECKING:  # the client is made (and redis imported) only where Redis is configured
    import redis.asyncio

# set_max in one step on the server. Bytes are compared one by one: Lua's own `<` on strings follows the
# server's collation locale, which Redis takes from the environment.
_SET_MAX = """
local function less(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
local new, current = ARGV[1], redis.call('GET', KEYS[1])
if current and less(new, current) then new = current end
redis.call('SET', KEYS[1], new, 'PX', ARGV[2])
"""


class Store(Protocol):
    """Bytes in, bytes out, with optional expiry.

    A ttl (seconds) of None keeps the value until deleted or evicted; a ttl <= 0 means the value is
    already expired, so set() removes the key.
    """

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None: ...

    async def set_max(self, key: str, value: bytes, *, ttl: float) -> None:
        """Keep the greater of the stored value and `value` (bytes compared), in one atomic step.

        The ttl (> 0) restarts either way. Writers that race never move the value back.
        """
        ...

    async def delete(self, *keys: str) -> None: ...

    async def close(self) -> None: ...


class MemoryStore:
    """Per-process store with LRU eviction beyond `max_entries`; expiry is checked on read."""

    def __init__(self, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max_entries = max_entries
        # key -> (value, monotonic deadline or None). OrderedDict order doubles as the LRU order,
        # which keeps get/set/delete O(1).
        self._data: OrderedDict[str, tuple[bytes, float | None]] = OrderedDict()

    async def get(self, key: str) -> bytes | None:
        """Return the value, or None when absent or expired."""
        entry = self._data.get(key)
        if entry is None:
            return None
        value, deadline = entry
        if deadline is not None and deadline <= time.monotonic():
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        """Store the value, evicting the least recently used entry when full."""
        if ttl is not None and ttl <= 0:
            self._data.pop(key, None)
            return
        # Monotonic, so a wall-clock jump neither expires everything nor keeps values forever.
        self._data[key] = (value, None if ttl is None else time.monotonic() + ttl)
        self._data.move_to_end(key)
        while len(self._data) > self._max_entries:
            self._data.popitem(last=False)

    async def set_max(self, key: str, value: bytes, *, ttl: float) -> None:
        """Keep the greater of the stored value and `value`; the ttl restarts either way."""
        if ttl <= 0:
            raise ValueError("set_max needs a positive ttl")
        current = await self.get(key)
        await self.set(key, value if current is None or value > current else current, ttl=ttl)

    async def delete(self, *keys: str) -> None:
        """Remove the keys; absent keys are ignored."""
        for key in keys:
            self._data.pop(key, None)

    async def close(self) -> None:
        """Drop all entries."""
        self._data.clear()

    def __len__(self) -> int:
        """Number of entries held, expired ones not yet read included."""
        return len(self._data)


class RedisStore:
    """Store in Redis, every key under `namespace`, shared by all workers and instances.

    The client must return bytes (decode_responses=False). The caller owns the client: close()
    leaves it open, because the same pool usually serves the rate limiter and other users too.
    """

    def __init__(self, client: redis.asyncio.Redis, *, namespace: str = "rampart:") -> None:
        if client.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError("RedisStore needs a client with decode_responses=False: values are bytes")
        self._client = client
        self._namespace = namespace
        self._set_max = client.register_script(_SET_MAX)

    async def get(self, key: str) -> bytes | None:
        """Return the value, or None when absent or expired."""
        return cast("bytes | None", await self._client.get(self._namespace + key))  # decode_responses=False

    async def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        """Store the value; a ttl becomes a millisecond PX expiry, rounded up so it never expires early."""
        if ttl is not None and ttl <= 0:
            await self._client.unlink(self._namespace + key)
        else:
            px = None if ttl is None else max(1, math.ceil(ttl * 1000))
            await self._client.set(self._namespace + key, value, px=px)

    async def set_max(self, key: str, value: bytes, *, ttl: float) -> None:
        """Keep the greater of the stored value and `value`, atomically (a Lua script); ttl restarts."""
        if ttl <= 0:
            raise ValueError("set_max needs a positive ttl")
        await self._set_max(keys=[self._namespace + key], args=[value, max(1, math.ceil(ttl * 1000))])

    async def delete(self, *keys: str) -> None:
        """Remove the keys; absent keys are ignored."""
        if keys:
            # UNLINK frees large values in the background instead of blocking the server.
            await self._client.unlink(*(self._namespace + k for k in keys))

    async def close(self) -> None:
        """Nothing to release: the client belongs to the caller (see the class docstring)."""
