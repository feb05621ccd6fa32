"""Key-value store behind one Protocol, in process or in Redis: where the read replicas keep each
caller's mark (`rampart.db.replicas`), which every worker and instance must see when Redis is configured.
Values only ever grow (`set_max`) and expire; nothing else is needed of them."""

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
    """Bytes in, bytes out, each value with an expiry."""

    async def get(self, key: str) -> bytes | None:
        """The value, or None when absent or expired."""

    async def set_max(self, key: str, value: bytes, *, ttl: float) -> None:
        """Keep the greater of the stored value and `value` (bytes compared), in one atomic step.

        The ttl (seconds, > 0) restarts either way. Writers that race never move the value back.
        """


class MemoryStore:
    """Per-process store with LRU eviction beyond `max_entries`; expiry is checked on read."""

    def __init__(self, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max_entries = max_entries
        # key -> (value, monotonic deadline). OrderedDict order doubles as the LRU order, which keeps
        # get/set_max O(1).
        self._data: OrderedDict[str, tuple[bytes, float]] = OrderedDict()

    async def get(self, key: str) -> bytes | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry[1] <= time.monotonic():
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return entry[0]

    async def set_max(self, key: str, value: bytes, *, ttl: float) -> None:
        if ttl <= 0:
            raise ValueError("set_max needs a positive ttl")
        current = await self.get(key)
        # Monotonic, so a wall-clock jump neither expires everything nor keeps values forever.
        self._data[key] = (value if current is None or value > current else current, time.monotonic() + ttl)
        self._data.move_to_end(key)
        while len(self._data) > self._max_entries:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        """Number of entries held, expired ones not yet read included."""
        return len(self._data)


class RedisStore:
    """Store in Redis, every key under `namespace`, shared by all workers and instances.

    The client must return bytes (decode_responses=False); it belongs to the caller.
    """

    def __init__(self, client: redis.asyncio.Redis, *, namespace: str = "rampart:") -> None:
        if client.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError("RedisStore needs a client with decode_responses=False: values are bytes")
        self._client = client
        self._namespace = namespace
        self._set_max = client.register_script(_SET_MAX)

    async def get(self, key: str) -> bytes | None:
        return cast("bytes | None", await self._client.get(self._namespace + key))

    async def set_max(self, key: str, value: bytes, *, ttl: float) -> None:
        """A Lua script; the ttl becomes a PX expiry in milliseconds, rounded up so it never expires early."""
        if ttl <= 0:
            raise ValueError("set_max needs a positive ttl")
        await self._set_max(keys=[self._namespace + key], args=[value, max(1, math.ceil(ttl * 1000))])
