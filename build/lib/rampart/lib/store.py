"""Key-value store behind one Protocol: a bounded in-process store and a Redis-backed one."""

from __future__ import annotations

import math
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # the client is made (and redis imported) only where Redis is configured
    import redis.asyncio

# SCAN COUNT hint and UNLINK batch size: big enough to keep round trips few, small enough that
# no single command blocks Redis noticeably.
_BATCH = 500

# Characters that are special in Redis glob patterns (MATCH); a prefix must match literally.
_GLOB_SPECIAL = re.compile(r"([\\*?\[\]])")

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

# A value, its time left and the server's clock, in one step. TIME is Redis's own clock, the one its expiry
# runs on: a deadline computed from it means the same instant to set_until, whoever sends it and however
# late it arrives.
_GET_ENTRY = """
local now = redis.call('TIME')
local value = redis.call('GET', KEYS[1])
local left = -2
if value then left = redis.call('PTTL', KEYS[1]) end
return {value or false, left, now[1], now[2]}
"""

# ARGV: value, deadline (ms of Redis's clock). KEYS: the key, then its group's member set (optional).
_SET_UNTIL = """
local now = redis.call('TIME')
local left = tonumber(ARGV[2]) - (tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000))
if left <= 0 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', left)
if KEYS[2] then
  local group_left = redis.call('PTTL', KEYS[2])
  redis.call('SADD', KEYS[2], KEYS[1])
  if group_left < left then redis.call('PEXPIRE', KEYS[2], left) end
end
return 1
"""

_DELETE_GROUP = """
local members = redis.call('SMEMBERS', KEYS[1])
for i = 1, #members, 500 do
  redis.call('UNLINK', unpack(members, i, math.min(i + 499, #members)))
end
redis.call('UNLINK', KEYS[1])
return #members
"""

# Where RedisStore keeps a group's member list, inside the namespace: keys must not start with it.
_GROUP_PREFIX = "#group:"


@dataclass(frozen=True, slots=True)
class Entry:
    """What `Store.get_entry` read: the value, its time left, and the store's clock at the read."""

    value: bytes | None  # None: absent or expired
    ttl: float | None  # seconds the value has left; None without a value or without an expiry
    clock: float  # the store's own clock (seconds), for deadlines given to set_until


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

    async def get_entry(self, key: str) -> Entry:
        """The value with its time left, and the store's clock when it was read.

        The clock is the store's own (Redis: its server time; memory: this process's monotonic clock):
        comparable only with itself, never with the caller's clock or another store's.
        """
        ...

    async def set_until(self, key: str, value: bytes, *, deadline: float, group: str | None = None) -> None:
        """Keep the value until `deadline`, an instant of the store's clock (see `get_entry`).

        Nothing is stored when the deadline has passed by the time the store applies the write, so a
        write that arrives late never keeps a value longer than its writer meant. With a group,
        `delete_group(group)` removes the key too.
        """
        ...

    async def delete_group(self, group: str) -> None:
        """Remove every key `set_until` put in the group (a key set again since may go too)."""
        ...

    async def delete(self, *keys: str) -> None: ...

    async def delete_prefix(self, prefix: str) -> None: ...

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
        # Groups of set_until, both ways, so that a key leaving the store leaves its group at once.
        self._groups: dict[str, set[str]] = {}
        self._group_of: dict[str, str] = {}

    async def get(self, key: str) -> bytes | None:
        """Return the value, or None when absent or expired."""
        entry = self._data.get(key)
        if entry is None:
            return None
        value, deadline = entry
        if deadline is not None and deadline <= time.monotonic():
            self._remove(key)
            return None
        self._data.move_to_end(key)
        return value

    async def get_entry(self, key: str) -> Entry:
        """The value, its time left and the clock (this process's monotonic clock) in one step."""
        now = time.monotonic()
        value = await self.get(key)
        deadline = self._data[key][1] if value is not None else None
        return Entry(value, None if deadline is None else deadline - now, now)

    async def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        """Store the value, evicting the least recently used entry when full."""
        if ttl is not None and ttl <= 0:
            self._remove(key)
            return
        # Monotonic, so a wall-clock jump neither expires everything nor keeps values forever.
        self._put(key, value, None if ttl is None else time.monotonic() + ttl)

    async def set_until(self, key: str, value: bytes, *, deadline: float, group: str | None = None) -> None:
        """Keep the value until `deadline` (monotonic clock, as `get_entry` reports it), in `group`."""
        if deadline <= time.monotonic():
            return
        self._put(key, value, deadline)
        if group is not None:
            self._groups.setdefault(group, set()).add(key)
            self._group_of[key] = group

    async def set_max(self, key: str, value: bytes, *, ttl: float) -> None:
        """Keep the greater of the stored value and `value`; the ttl restarts either way."""
        if ttl <= 0:
            raise ValueError("set_max needs a positive ttl")
        current = await self.get(key)
        await self.set(key, value if current is None or value > current else current, ttl=ttl)

    async def delete(self, *keys: str) -> None:
        """Remove the keys; absent keys are ignored."""
        for key in keys:
            self._remove(key)

    async def delete_group(self, group: str) -> None:
        """Remove every key of the group."""
        for key in self._groups.get(group, set()).copy():
            self._remove(key)

    async def delete_prefix(self, prefix: str) -> None:
        """Remove every key starting with `prefix` (O(n): a full scan, as with Redis)."""
        for key in [k for k in self._data if k.startswith(prefix)]:
            self._remove(key)

    async def close(self) -> None:
        """Drop all entries."""
        self._data.clear()
        self._groups.clear()
        self._group_of.clear()

    def __len__(self) -> int:
        """Number of entries held, expired ones not yet read included."""
        return len(self._data)

    def _put(self, key: str, value: bytes, deadline: float | None) -> None:
        self._leave_group(key)
        self._data[key] = (value, deadline)
        self._data.move_to_end(key)
        while len(self._data) > self._max_entries:
            self._leave_group(self._data.popitem(last=False)[0])

    def _remove(self, key: str) -> None:
        self._data.pop(key, None)
        self._leave_group(key)

    def _leave_group(self, key: str) -> None:
        group = self._group_of.pop(key, None)
        if group is not None:
            members = self._groups[group]
            members.discard(key)
            if not members:
                del self._groups[group]


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
        self._get_entry = client.register_script(_GET_ENTRY)
        self._set_until = client.register_script(_SET_UNTIL)
        self._delete_group = client.register_script(_DELETE_GROUP)

    def _key(self, key: str) -> str:
        return self._namespace + key

    async def get(self, key: str) -> bytes | None:
        """Return the value, or None when absent or expired."""
        value = await self._client.get(self._key(key))
        if isinstance(value, str):  # only if the client's pool was reconfigured after __init__
            raise TypeError("RedisStore got str from Redis: the client must use decode_responses=False")
        return value

    async def get_entry(self, key: str) -> Entry:
        """The value, its time left (PTTL) and Redis's clock (TIME), in one script."""
        value, left, seconds, micros = await self._get_entry(keys=[self._key(key)])
        clock = int(seconds) + int(micros) / 1e6
        return Entry(value, left / 1000 if value is not None and left >= 0 else None, clock)

    async def set_until(self, key: str, value: bytes, *, deadline: float, group: str | None = None) -> None:
        """Keep the value until `deadline` of Redis's clock (milliseconds, rounded down), in one script."""
        keys = [self._key(key)] if group is None else [self._key(key), self._key(_GROUP_PREFIX + group)]
        await self._set_until(keys=keys, args=[value, math.floor(deadline * 1000)])

    async def delete_group(self, group: str) -> None:
        """Remove every key of the group, and the group, in one script."""
        await self._delete_group(keys=[self._key(_GROUP_PREFIX + group)])

    async def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        """Store the value; a ttl becomes a millisecond PX expiry, rounded up so it never expires early."""
        if ttl is None:
            await self._client.set(self._key(key), value)
        elif ttl <= 0:
            await self._client.unlink(self._key(key))
        else:
            await self._client.set(self._key(key), value, px=max(1, math.ceil(ttl * 1000)))

    async def set_max(self, key: str, value: bytes, *, ttl: float) -> None:
        """Keep the greater of the stored value and `value`, atomically (a Lua script); ttl restarts."""
        if ttl <= 0:
            raise ValueError("set_max needs a positive ttl")
        await self._set_max(keys=[self._key(key)], args=[value, max(1, math.ceil(ttl * 1000))])

    async def delete(self, *keys: str) -> None:
        """Remove the keys; absent keys are ignored."""
        if keys:
            # UNLINK frees large values in the background instead of blocking the server.
            await self._client.unlink(*(self._key(k) for k in keys))

    async def delete_prefix(self, prefix: str) -> None:
        """Remove every key starting with `prefix`, with SCAN + batched UNLINK.

        KEYS would block Redis for the whole keyspace walk; SCAN works in small steps.
        """
        pattern = _GLOB_SPECIAL.sub(r"\\\1", self._key(prefix)) + "*"
        batch: list[bytes] = []
        async for key in self._client.scan_iter(match=pattern, count=_BATCH):
            batch.append(key)
            if len(batch) >= _BATCH:
                await self._client.unlink(*batch)
                batch = []
        if batch:
            await self._client.unlink(*batch)

    async def close(self) -> None:
        """Nothing to release: the client belongs to the caller (see the class docstring)."""
