"""A per-process cache of single rows, of "may this caller see this row" decisions, and of list pages.

Correctness rests on three rules, none of which needs a scan or a global flush:

- Rows are versioned. An entry is only ever replaced by a newer version, and an invalidation leaves a
  tombstone (the lowest version still acceptable), so a reader that fetched an old row just before a
  write commits can never put it back.
- A visibility decision is keyed by the row's version and by the resource's *epoch*. A change to the row
  makes its old decisions unreachable; a change to anything the visibility rule depends on (membership,
  the parent) bumps the epoch, which makes every decision of that resource unreachable at once.
- Whoever feeds invalidations (the database listener) may lose them: `clear()` then drops everything,
  and `enabled` is False until the feed is back, so nothing is served that might have been missed.
- A list page is keyed by its query and by who asked (the caller decides visibility), and stamped with
  the resource's *list generation*, which moves on at any change to one of its rows and at every epoch
  bump: a page is only served if nothing it could depend on has changed since it was read. Pages of
  other resources, rows and decisions are untouched.

Memory is bounded: every map is LRU with a fixed number of entries.

`QueryCache` is what the resource managers use: `RowCache` is its in-process backend, and
`rampart.lib.rediscache.RedisQueryCache` one shared by every worker and instance, with the same rules.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
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
    invalidations: int = 0
    epochs: int = 0
    clears: int = 0
    by_result: dict[str, int] = field(default_factory=dict)


class QueryCache(Protocol):
    """The cache of rows, visibility decisions and list pages, as the resource managers use it.

    A lookup also returns a *stamp*: what the cache knew before the database was asked. Whatever is kept
    after a miss is kept with that stamp, and dropped if anything it could depend on changed since.
    """

    enabled: bool
    stats: CacheStats

    async def lookup(self, resource: str, key: Hashable, caller: Hashable | None) -> tuple[Found, Any]:
        """The row `key` of `resource` for `caller` (None: one who sees every row), and the stamp."""
        ...

    async def keep(
        self,
        resource: str,
        key: Hashable,
        version: int,
        payload: bytes,
        caller: Hashable | None,
        visible: bool,
        stamp: Any,
    ) -> None:
        """Keep a row read after `lookup` returned `stamp`, and the caller's decision about it."""
        ...

    async def lookup_page(self, resource: str, key: Hashable) -> tuple[bytes | None, Any]:
        """The list page kept for `key` (query and caller), and the stamp."""
        ...

    async def keep_page(self, resource: str, key: Hashable, body: bytes, stamp: Any) -> None: ...

    def changed(self, resource: str, key: Hashable, version: int | None, dependents: Iterable[str]) -> None:
        """Row `key` of `resource` is now at `version` (None: deleted), which changes what each of
        `dependents` lets callers see. Applied at once, or queued (see `settle`)."""
        ...

    async def settle(self) -> None:
        """Return once every change passed to `changed` before the call is applied."""
        ...

    async def reset(self) -> None:
        """The change feed is (back) on: forget everything, since changes may have been missed."""
        ...

    def suspend(self) -> None:
        """The change feed is down: serve and keep nothing until `reset`."""
        ...

    def forget(self) -> None:
        """Forget everything (a worker started: changes may have gone unannounced), at once or as soon as
        the backend can; nothing older is served meanwhile."""
        ...


class RowCache:
    """Rows by (resource, key) and visibility decisions by (resource, key, version, caller, epoch).

    The in-process `QueryCache`: one per worker, fed by the worker's own writes and the database's
    notifications; nothing is shared, so a hit costs no round trip.
    """

    def __init__(
        self, *, max_rows: int = 20_000, max_decisions: int = 100_000, max_pages: int = 2_000
    ) -> None:
        self._rows: OrderedDict[tuple[str, Hashable], tuple[int, Any]] = OrderedDict()
        self._decisions: OrderedDict[tuple[Hashable, ...], bool] = OrderedDict()
        self._pages: OrderedDict[tuple[str, Hashable], tuple[int, Any]] = OrderedDict()
        self._epochs: dict[str, int] = {}
        self._lists: dict[str, int] = {}  # list generation per resource
        self._max_rows = max_rows
        self._max_decisions = max_decisions
        self._max_pages = max_pages
        self.enabled = False
        self.generation = 0  # moves on at every clear(): a fetch started before it must not be kept
        self.stats = CacheStats()

    # ----- rows ------------------------------------------------------------------------------------
    def row(self, resource: str, key: Hashable) -> tuple[int, Any] | None:
        """The cached (version, row), or None (absent, or only a tombstone)."""
        if not self.enabled:
            return None
        entry = self._rows.get((resource, key))
        if entry is None or entry[1] is None:
            self.stats.misses += 1
            return None
        self._rows.move_to_end((resource, key))
        self.stats.hits += 1
        return entry[0], entry[1]

    def put_row(self, resource: str, key: Hashable, version: int, row: Any, *, generation: int) -> None:
        """Keep `row` unless the cache already holds (or has been told of) the same or a newer version.

        `generation` is the value read before the row was fetched: after a clear() in between, an
        invalidation may have been missed, so the row is not kept.
        """
        if not self.enabled or generation != self.generation:
            return
        slot = (resource, key)
        current = self._rows.get(slot)
        if current is not None and current[0] >= version:
            return
        self._rows[slot] = (version, row)
        self._rows.move_to_end(slot)
        if len(self._rows) > self._max_rows:
            self._rows.popitem(last=False)

    def invalidate(self, resource: str, key: Hashable, version: int | None) -> None:
        """A change to a row: only versions above `version` may be cached from now on (None: deleted)."""
        self.stats.invalidations += 1
        self._lists[resource] = self._lists.get(resource, 0) + 1
        floor = floor_after(version)
        slot = (resource, key)
        current = self._rows.get(slot)
        if current is not None and current[0] > floor and current[1] is not None:
            return  # already holds the new version (the writer put it)
        if current is None and floor < FIRST_VERSION:
            return  # a new row: no version of it can be older than what a reader may fetch
        self._rows[slot] = (max(floor, current[0]) if current else floor, None)
        self._rows.move_to_end(slot)
        if len(self._rows) > self._max_rows:
            self._rows.popitem(last=False)

    # ----- visibility decisions -------------------------------------------------------------------
    def epoch(self, resource: str) -> int:
        return self._epochs.get(resource, 0)

    def bump(self, resource: str) -> None:
        """Something the visibility of `resource` depends on changed: forget its decisions."""
        self._epochs[resource] = self._epochs.get(resource, 0) + 1
        self._lists[resource] = self._lists.get(resource, 0) + 1
        self.stats.epochs += 1

    def decision(self, resource: str, key: Hashable, version: int, caller: Hashable) -> bool | None:
        if not self.enabled:
            return None
        slot = (resource, key, version, caller, self._epochs.get(resource, 0))
        found = self._decisions.get(slot)
        if found is not None:
            self._decisions.move_to_end(slot)
        return found

    def put_decision(
        self, resource: str, key: Hashable, version: int, caller: Hashable, epoch: int, visible: bool
    ) -> None:
        """Record a decision made under `epoch` (read before the query: a bump meanwhile voids it)."""
        if not self.enabled or epoch != self._epochs.get(resource, 0):
            return
        self._decisions[(resource, key, version, caller, epoch)] = visible
        if len(self._decisions) > self._max_decisions:
            self._decisions.popitem(last=False)

    # ----- list pages -----------------------------------------------------------------------------
    def list_generation(self, resource: str) -> int:
        """Read before fetching a page; give it back to `put_page`."""
        return self._lists.get(resource, 0)

    def page(self, resource: str, key: Hashable) -> Any:
        """The cached page for `key` (query and caller), or None."""
        if not self.enabled:
            return None
        slot = (resource, key)
        entry = self._pages.get(slot)
        if entry is None or entry[0] != self._lists.get(resource, 0):
            self.stats.page_misses += 1
            return None
        self._pages.move_to_end(slot)
        self.stats.page_hits += 1
        return entry[1]

    def put_page(
        self, resource: str, key: Hashable, page: Any, *, list_generation: int, generation: int
    ) -> None:
        """Keep `page` if nothing changed since `list_generation` (and the cache was not cleared)."""
        if (
            not self.enabled
            or generation != self.generation
            or list_generation != self._lists.get(resource, 0)
        ):
            return
        slot = (resource, key)
        self._pages[slot] = (list_generation, page)
        self._pages.move_to_end(slot)
        if len(self._pages) > self._max_pages:
            self._pages.popitem(last=False)

    # ----- QueryCache -----------------------------------------------------------------------------
    async def lookup(self, resource: str, key: Hashable, caller: Hashable | None) -> tuple[Found, Any]:
        stamp = (self.generation, self._epochs.get(resource, 0))
        entry = self.row(resource, key)
        if entry is None:
            return None, stamp
        seen = True if caller is None else self.decision(resource, key, entry[0], caller)
        if seen is None:
            return None, stamp
        return (entry if seen else False), stamp

    async def keep(
        self,
        resource: str,
        key: Hashable,
        version: int,
        payload: bytes,
        caller: Hashable | None,
        visible: bool,
        stamp: Any,
    ) -> None:
        generation, epoch = stamp
        self.put_row(resource, key, version, payload, generation=generation)
        if caller is not None and generation == self.generation:
            self.put_decision(resource, key, version, caller, epoch, visible)

    async def lookup_page(self, resource: str, key: Hashable) -> tuple[bytes | None, Any]:
        stamp = (self.generation, self._lists.get(resource, 0))
        return self.page(resource, key), stamp

    async def keep_page(self, resource: str, key: Hashable, body: bytes, stamp: Any) -> None:
        generation, list_generation = stamp
        self.put_page(resource, key, body, list_generation=list_generation, generation=generation)

    def changed(self, resource: str, key: Hashable, version: int | None, dependents: Iterable[str]) -> None:
        self.invalidate(resource, key, version)
        for dependent in dependents:
            self.bump(dependent)

    async def settle(self) -> None:
        """Changes apply at once here."""

    async def reset(self) -> None:
        self.clear()
        self.enabled = True

    def suspend(self) -> None:
        self.enabled = False
        self.clear()

    def forget(self) -> None:
        self.clear()

    # ----- the feed -------------------------------------------------------------------------------
    def clear(self) -> None:
        """Forget everything (the invalidation feed was interrupted). Epochs move on, never back."""
        self._rows.clear()
        self._decisions.clear()
        self._pages.clear()
        self.generation += 1
        for resource in self._epochs:
            self._epochs[resource] += 1
        for resource in self._lists:
            self._lists[resource] += 1
        self.stats.clears += 1

    def __len__(self) -> int:
        return len(self._rows)
