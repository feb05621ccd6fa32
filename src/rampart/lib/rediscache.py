"""The query cache in Redis: rows, visibility decisions and list pages shared by every worker and instance.

The rules of the in-process `RowCache` (rampart.lib.rowcache), each check with the write it allows in
one Lua script, so that they are atomic. Everything is keyed by a global generation too: `reset` moves it
on, which forgets everything at once (the old keys expire).

Keys (under the namespace, `{g}` the global generation):
    gen                              the global generation (no expiry)
    {g}:epoch:{resource}             visibility epoch          } counters: expire a day after their last
    {g}:list:{resource}              list generation           } change, far beyond any entry's ttl
    {g}:row:{resource}:{key}         "{version}:{json}", or "{floor}:" (a tombstone)
    {g}:dec:{resource}:{key}:{version}:{caller}:{epoch}   "1" / "0"
    {g}:page:{resource}:{list generation}:{digest of the query and caller}

Changes (`changed`) are applied by a background task in pipelined batches; the writer awaits `settle()`
before answering, so its next read, on any worker, sees the change. When Redis fails, the cache steps
aside (every read goes to the database) until it answers, and after a lost change until `gen` moved on.

Redis must not evict the counters: use `maxmemory-policy volatile-lru` (or `noeviction`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
from collections.abc import Hashable, Iterable
from typing import TYPE_CHECKING, Any

from rampart.lib.aio import cancel_and_wait
from rampart.lib.rowcache import FIRST_VERSION, CacheStats, Found, floor_after

if TYPE_CHECKING:
    import redis.asyncio
    from redis.commands.core import AsyncScript

log = logging.getLogger("rampart.cache")

_COUNTER_TTL_MS = 86_400_000  # a day: counters outlive every entry stamped with their value

# Begins every script (ARGV: ns, resource, row key or page digest, ...); keys built inside: not for Cluster.
_PRELUDE = """
local ns, res = ARGV[1], ARGV[2]
local g = redis.call('GET', ns .. 'gen') or '0'
local p = ns .. g .. ':'
local row_key = p .. 'row:' .. res .. ':' .. ARGV[3]
local function version_of(value)  -- and whether it is a row, not a tombstone
  return tonumber(string.match(value, '^%d+')), string.sub(value, -1) ~= ':'
end
local function decision_key(version, epoch)  -- in the row scripts (ARGV[4]: the caller)
  return p .. 'dec:' .. res .. ':' .. ARGV[3] .. ':' .. version .. ':' .. ARGV[4] .. ':' .. epoch
end
"""

# ARGV: ns, resource, key, caller ('' = sees every row) -> {g, epoch, row or tombstone or nil, decision}
_LOOKUP = """
local epoch = redis.call('GET', p .. 'epoch:' .. res) or '0'
local row = redis.call('GET', row_key)
local seen = false
if row and ARGV[4] ~= '' then
  seen = redis.call('GET', decision_key(string.match(row, '^%d+'), epoch))
end
return {g, epoch, row or false, seen or false}
"""

# ARGV: ns, resource, key, caller, g, epoch, ttl ms (the lookup's stamp), version, payload, visible ('1'/'0')
_KEEP = """
if g ~= ARGV[5] then return end
local current = redis.call('GET', row_key)
if not current or version_of(current) < tonumber(ARGV[8]) then
  redis.call('SET', row_key, ARGV[8] .. ':' .. ARGV[9], 'PX', ARGV[7])
end
if ARGV[4] ~= '' and (redis.call('GET', p .. 'epoch:' .. res) or '0') == ARGV[6] then
  redis.call('SET', decision_key(ARGV[8], ARGV[6]), ARGV[10], 'PX', ARGV[7])
end
"""

# ARGV: ns, resource, digest -> {g, list generation, page or nil}
_LOOKUP_PAGE = """
local lg = redis.call('GET', p .. 'list:' .. res) or '0'
return {g, lg, redis.call('GET', p .. 'page:' .. res .. ':' .. lg .. ':' .. ARGV[3]) or false}
"""

# ARGV: ns, resource, digest, g, list generation, ttl ms (the lookup's stamp), body
_KEEP_PAGE = """
if g == ARGV[4] and (redis.call('GET', p .. 'list:' .. res) or '0') == ARGV[5] then
  redis.call('SET', p .. 'page:' .. res .. ':' .. ARGV[5] .. ':' .. ARGV[3], ARGV[7], 'PX', ARGV[6])
end
"""

# ARGV: ns, resource, key, floor (versions above it may be kept), ttl ms, dependents... No tombstone for a
# row already at its new version, nor for a new row (nothing older than it can be fetched).
_CHANGED = f"""
local function move_on(counter)
  redis.call('INCR', counter)
  redis.call('PEXPIRE', counter, {_COUNTER_TTL_MS})
end
local floor, current = tonumber(ARGV[4]), redis.call('GET', row_key)
local version, live = -1, false
if current then
  version, live = version_of(current)
end
if not (live and version > floor) and (current or floor >= {FIRST_VERSION}) then
  redis.call('SET', row_key, string.format('%d', math.max(floor, version)) .. ':', 'PX', ARGV[5])
end
move_on(p .. 'list:' .. res)
for i = 6, #ARGV do
  move_on(p .. 'epoch:' .. ARGV[i])
  move_on(p .. 'list:' .. ARGV[i])
end
"""


class RedisQueryCache:
    """A `QueryCache` in Redis (see the module docstring). `start()`/`stop()` run its change writer."""

    def __init__(
        self, client: redis.asyncio.Redis, *, namespace: str = "rampart:qc:", ttl: float = 600.0
    ) -> None:
        if client.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError("RedisQueryCache needs a client with decode_responses=False: rows are bytes")
        self._client = client
        self._ns = namespace
        self._ttl_ms = str(max(1, math.ceil(ttl * 1000)))
        self._lookup = client.register_script(_PRELUDE + _LOOKUP)
        self._keep = client.register_script(_PRELUDE + _KEEP)
        self._lookup_page = client.register_script(_PRELUDE + _LOOKUP_PAGE)
        self._keep_page = client.register_script(_PRELUDE + _KEEP_PAGE)
        self._changed = client.register_script(_PRELUDE + _CHANGED)
        self._feed_up = False  # the worker's notification listener is connected
        self._down = False  # Redis failed: step aside until it answers again
        self._lost = False  # a change may not have reached Redis: what it holds is not to be trusted
        self.enabled = False
        self.stats = CacheStats()
        self._changes: list[list[str]] = []
        self._applied = asyncio.Event()  # set once the changes queued until now are applied
        self._pending = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._write_changes(), name="rampart-qcache")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        self._applied.set()
        self._changes = []

    async def lookup(self, resource: str, key: Hashable, caller: Hashable | None) -> tuple[Found, Any]:
        args = [self._ns, resource, str(key), "" if caller is None else str(caller)]
        try:
            g, epoch, row, seen = await self._lookup(args=args)
        except Exception:
            self._failed("a lookup", lost=False)
            return None, None
        stamp = [*args, g, epoch, self._ttl_ms]
        version, _, payload = (row or b"").partition(b":")
        if not payload or (caller is not None and seen is None):  # no row (or a tombstone), no decision
            self.stats.misses += 1
            return None, stamp
        self.stats.hits += 1
        if seen == b"0":  # None without a caller
            return False, stamp
        return (int(version), payload), stamp

    async def keep(self, version: int, payload: bytes, visible: bool, stamp: Any) -> None:
        await self._keep_with(self._keep, "a row", stamp, str(version), payload, "1" if visible else "0")

    async def lookup_page(self, resource: str, key: Hashable) -> tuple[bytes | None, Any]:
        # The page's key (its query and who asked) at a fixed size.
        args = [self._ns, resource, hashlib.blake2b(repr(key).encode(), digest_size=20).hexdigest()]
        try:
            g, list_generation, body = await self._lookup_page(args=args)
        except Exception:
            self._failed("a page lookup", lost=False)
            return None, None
        if body is None:
            self.stats.page_misses += 1
        else:
            self.stats.page_hits += 1
        return body, [*args, g, list_generation, self._ttl_ms]

    async def keep_page(self, body: bytes, stamp: Any) -> None:
        await self._keep_with(self._keep_page, "a page", stamp, body)

    async def _keep_with(self, script: AsyncScript, what: str, stamp: Any, *values: bytes | str) -> None:
        """Run a keep script: the lookup's stamp is the first of its arguments."""
        if stamp is not None and self.enabled:
            try:
                await script(args=[*stamp, *values])
            except Exception:
                self._failed(f"keeping {what}", lost=False)

    def changed(self, resource: str, key: Hashable, version: int | None, dependents: Iterable[str]) -> None:
        args = [self._ns, resource, str(key), str(floor_after(version)), self._ttl_ms, *dependents]
        self._changes.append(args)
        self._pending.set()

    async def settle(self) -> None:
        if not self._changes or self._task is None:
            return
        self._pending.set()
        await self._applied.wait()

    async def _write_changes(self) -> None:
        while True:
            self._pending.clear()
            batch, self._changes = self._changes, []
            applied, self._applied = self._applied, asyncio.Event()
            try:
                if self._lost and self._feed_up:
                    await self._new_generation()  # covers this batch too: everything is forgotten
                elif batch:
                    pipe = self._client.pipeline(transaction=False)
                    for args in batch:
                        await self._changed(args=args, client=pipe)
                    await pipe.execute()
                elif self._down:
                    await self._client.ping()
                self._down = False
                self.enabled = self._feed_up and not self._lost
            except Exception:
                self._failed("applying changes", lost=bool(batch))
            finally:
                applied.set()
            await (asyncio.sleep(1.0) if self._down else self._pending.wait())  # down: try again in a second

    async def _new_generation(self) -> None:
        await self._client.incr(self._ns + "gen")
        self._lost = self._down = False
        self.enabled = self._feed_up
        self.stats.clears += 1

    def _failed(self, what: str, *, lost: bool) -> None:
        if not self._down:
            log.warning(
                "query cache: Redis failed during %s; reads go to the database until it is back", what
            )
        self._down = True
        self._lost = self._lost or lost
        self.enabled = False
        self._pending.set()

    async def reset(self) -> None:
        self._feed_up = True
        self._changes = []
        try:
            await self._new_generation()
        except Exception:
            self._failed("a reset", lost=True)

    def suspend(self) -> None:
        self._feed_up = False
        self.enabled = False

    def forget(self) -> None:
        """Step aside until the global generation moved on (the change writer does it next)."""
        self._lost = True
        self.enabled = False
        self._pending.set()
