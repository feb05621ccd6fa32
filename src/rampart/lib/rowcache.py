"""A per-process cache of single rows, of "may this caller see this row" decisions, and of list pages
(decision 0009). Correctness rests on four rules, none of which needs a scan or a global flush:

- Rows are versioned: an entry is only replaced by a newer version, and an invalidation leaves a
  tombstone (the lowest version still acceptable), so a reader that fetched an old row just before a
  write commits can never put it back.
- A decision is keyed by the row's version and by the resource's *epoch*, which a change to anything
  the visibility rule depends on (membership, the parent) bumps.
- A list page is keyed by its query and by who asked, and served only at the resource's *list
  generation* it was read at, which moves on at any change to one of its rows and at every epoch bump.
- Whoever feeds invalidations (the database listener) may lose them: `forget()` then drops everything,
  and `enabled` is False until the feed is back.

Every map is LRU with a fixed number of entries. `QueryCache` is what the resource managers use:
`RowCache` is its in-process backend, `rampart.lib.rediscache.RedisQueryCache` one in Redis.
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

# What a lookup finds: (version, the row's JSON) that the caller may see; False when the caller may not
# see the row (a 404 without the database); None when the database must answer.
Found = tuple[int, bytes] | bool | None

DELETED = 2**62  # the tombstone version of a deleted row: no real version is ever that high
FIRST_VERSION = 1  # the version a row is created with (the tables' server default)


def floor_after(version: int | None) -> int:
    """After a change to `version` (None: a delete), the highest version that may no longer be kept."""
    return DELETED if version is None else version - 1


@dataclass(slots=True)
class CacheStats:
    hits: int = 0
    misses: int = 0
    page_hits: int = 0
    page_misses: int = 0
    clears: int = 0


class QueryCache(Protocol):
    """The cache of rows, visibility decisions and list pages, as the resource managers use it. A lookup
    also returns a *stamp*: what was looked up, and what the cache knew before the database was asked;
    what a miss keeps with it is dropped if anything it could depend on changed since."""

    enabled: bool
    stats: CacheStats

    async def lookup(self, resource: str, key: Hashable, caller: Hashable | None) -> tuple[Found, Any]:
        """The row `key` of `resource` for `caller` (None: one who sees every row), and the stamp."""

    async def keep(self, version: int, payload: bytes, visible: bool, stamp: Any) -> None:
        """Keep the row read after `lookup` returned `stamp`, and the caller's decision about it."""

    async def lookup_page(self, resource: str, key: Hashable) -> tuple[bytes | None, Any]:
        """The list page kept for `key` (query and caller), and the stamp."""

    async def keep_page(self, body: bytes, stamp: Any) -> None:
        """Keep the page read after `lookup_page` returned `stamp`."""

    def changed(self, resource: str, key: Hashable, version: int | None, dependents: Iterable[str]) -> None:
        """Row `key` of `resource` is now at `version` (None: deleted), which changes what each of
        `dependents` lets callers see. Applied at once, or queued (see `settle`)."""

    async def settle(self) -> None:
        """Return once every change passed to `changed` before the call is applied."""

    async def reset(self) -> None:
        """The change feed is (back) on: forget everything, since changes may have been missed."""

    def suspend(self) -> None:
        """The change feed is down: serve and keep nothing until `reset`."""

    def forget(self) -> None:
        """Forget everything (a worker started: changes may have gone unannounced), at once or as soon as
        the backend can; nothing older is served meanwhile."""


def _put(entries: OrderedDict[Any, Any], slot: Any, value: Any, limit: int) -> None:
    entries[slot] = value
    entries.move_to_end(slot)
    if len(entries) > limit:
        entries.popitem(last=False)


class RowCache:
    """The in-process `QueryCache`, one per worker (a hit costs no round trip). Rows by (resource, key) as
    (version, JSON; None in a tombstone), decisions by (resource, key, version, caller, epoch), pages by
    (resource, query and caller) as (list generation, body). A stamp is (generation, epoch or list generation,
    what was looked up): `generation` moves on at every `forget()`, so nothing fetched before it is kept."""

    def __init__(
        self, *, max_rows: int = 20_000, max_decisions: int = 100_000, max_pages: int = 2_000
    ) -> None:
        self._rows: OrderedDict[tuple[str, Hashable], tuple[int, Any]] = OrderedDict()
        self._decisions: OrderedDict[tuple[Hashable, ...], bool] = OrderedDict()
        self._pages: OrderedDict[tuple[str, Hashable], tuple[int, bytes]] = OrderedDict()
        self._epochs: defaultdict[str, int] = defaultdict(int)
        self._lists: defaultdict[str, int] = defaultdict(int)  # list generation per resource
        self._max_rows = max_rows
        self._max_decisions = max_decisions
        self._max_pages = max_pages
        self._generation = 0
        self.enabled = False
        self.stats = CacheStats()

    async def lookup(self, resource: str, key: Hashable, caller: Hashable | None) -> tuple[Found, Any]:
        # No need to look at `enabled`: disabled, the cache is empty (`suspend` forgets, `keep` refuses).
        stamp = (self._generation, self._epochs[resource], resource, key, caller)
        slot = (resource, key)
        entry = self._rows.get(slot)
        if entry is None or entry[1] is None:
            self.stats.misses += 1
            return None, stamp
        self._rows.move_to_end(slot)
        self.stats.hits += 1
        if caller is None:
            return entry, stamp
        decision = (resource, key, entry[0], caller, stamp[1])
        seen = self._decisions.get(decision)
        if seen is None:
            return None, stamp
        self._decisions.move_to_end(decision)
        return (entry if seen else False), stamp

    async def keep(self, version: int, payload: bytes, visible: bool, stamp: Any) -> None:
        generation, epoch, resource, key, caller = stamp
        if not self.enabled or generation != self._generation:
            return  # forgotten since: a change may have been missed
        current = self._rows.get((resource, key))
        if current is None or current[0] < version:
            _put(self._rows, (resource, key), (version, payload), self._max_rows)
        if caller is not None and epoch == self._epochs[resource]:
            _put(self._decisions, (resource, key, version, caller, epoch), visible, self._max_decisions)

    async def lookup_page(self, resource: str, key: Hashable) -> tuple[bytes | None, Any]:
        stamp = (self._generation, self._lists[resource], resource, key)
        entry = self._pages.get((resource, key))
        if entry is None or entry[0] != stamp[1]:
            self.stats.page_misses += 1
            return None, stamp
        self._pages.move_to_end((resource, key))
        self.stats.page_hits += 1
        return entry[1], stamp

    async def keep_page(self, body: bytes, stamp: Any) -> None:
        generation, list_generation, resource, key = stamp
        if self.enabled and generation == self._generation and list_generation == self._lists[resource]:
            _put(self._pages, (resource, key), (list_generation, body), self._max_pages)

    def changed(self, resource: str, key: Hashable, version: int | None, dependents: Iterable[str]) -> None:
        self._lists[resource] += 1
        for dependent in dependents:
            self._epochs[dependent] += 1
            self._lists[dependent] += 1
        floor = floor_after(version)
        current = self._rows.get((resource, key))
        if current is not None and current[0] > floor and current[1] is not None:
            return  # already holds the new version (the writer put it)
        if current is None and floor < FIRST_VERSION:
            return  # a new row: no version of it can be older than what a reader may fetch
        tombstone = floor if current is None else max(floor, current[0])
        _put(self._rows, (resource, key), (tombstone, None), self._max_rows)

    async def settle(self) -> None:
        """Changes apply at once here."""

    async def reset(self) -> None:
        self.forget()
        self.enabled = True

    def suspend(self) -> None:
        self.enabled = False
        self.forget()

    def forget(self) -> None:
        """Drop every entry; stamps taken before keep nothing (epochs and list generations never go back)."""
        self._rows.clear()
        self._decisions.clear()
        self._pages.clear()
        self._generation += 1
        self.stats.clears += 1
