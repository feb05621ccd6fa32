"""The row cache's rules: versions only move forward, tombstones hold, decisions die with the row version,
the epoch or a forget(), and nothing is served or kept while the feed is off."""

from __future__ import annotations

import uuid
from collections.abc import Hashable

import pytest

from rampart.lib.rowcache import RowCache

K = uuid.uuid4()
USER = uuid.uuid4()


@pytest.fixture
async def cache() -> RowCache:
    c = RowCache(max_rows=100, max_decisions=100)
    await c.reset()
    return c


def row(version: int) -> bytes:
    return b'{"version":%d}' % version


async def put(cache: RowCache, version: int, key: Hashable = K, caller: Hashable | None = None) -> None:
    _, stamp = await cache.lookup("tasks", key, caller)
    await cache.keep(version, row(version), True, stamp)


async def found(cache: RowCache, key: Hashable = K, caller: Hashable | None = None) -> object:
    return (await cache.lookup("tasks", key, caller))[0]


async def test_a_row_is_served_once_put(cache: RowCache) -> None:
    await put(cache, 1)
    assert await found(cache) == (1, row(1))


async def test_an_older_version_never_replaces_a_newer_one(cache: RowCache) -> None:
    await put(cache, 2)
    await put(cache, 1)
    assert await found(cache) == (2, row(2))


async def test_a_tombstone_refuses_the_version_it_replaced(cache: RowCache) -> None:
    await put(cache, 1)
    cache.changed("tasks", K, 2, ())  # version 2 was committed somewhere
    assert await found(cache) is None
    await put(cache, 1)  # a reader that fetched v1 too early
    assert await found(cache) is None
    await put(cache, 2)
    assert await found(cache) == (2, row(2))


async def test_an_invalidation_keeps_the_version_it_announces(cache: RowCache) -> None:
    await put(cache, 2)  # the writer put it first
    cache.changed("tasks", K, 2, ())  # then the notification of the same change arrives
    assert await found(cache) == (2, row(2))


async def test_creates_do_not_evict_cached_rows(cache: RowCache) -> None:
    """A created row (version 1) leaves no tombstone: nothing older can be fetched, and a burst of creates
    would otherwise push the rows readers use out of the bounded map."""
    await put(cache, 4)
    for _ in range(500):  # five times the cache's bound
        cache.changed("tasks", uuid.uuid4(), 1, ())
    assert await found(cache) == (4, row(4))
    assert len(cache._rows) == 1


async def test_a_new_rows_own_version_can_be_kept(cache: RowCache) -> None:
    new = uuid.uuid4()
    cache.changed("tasks", new, 1, ())
    await put(cache, 1, new)
    assert await found(cache, new) == (1, row(1))


async def test_a_deleted_row_is_never_cached_again(cache: RowCache) -> None:
    await put(cache, 3)
    cache.changed("tasks", K, None, ())
    await put(cache, 3)
    await put(cache, 99)
    assert await found(cache) is None


async def test_decisions_belong_to_a_row_version_a_caller_and_an_epoch(cache: RowCache) -> None:
    await put(cache, 1, caller=USER)
    assert await found(cache, caller=USER) == (1, row(1))
    assert await found(cache, caller=uuid.uuid4()) is None  # another caller: unknown
    _, stamp = await cache.lookup("tasks", K, None)
    await cache.keep(2, row(2), True, stamp)
    assert await found(cache, caller=USER) is None  # another version: unknown
    await put(cache, 2, caller=USER)
    cache.changed("members", uuid.uuid4(), 1, ["tasks"])  # what tasks' visibility reads changed
    assert await found(cache, caller=USER) is None
    assert await found(cache) == (2, row(2))  # the row itself is still good


async def test_a_decision_made_before_a_bump_is_not_kept(cache: RowCache) -> None:
    await put(cache, 1)
    _, stamp = await cache.lookup("tasks", K, USER)
    cache.changed("members", uuid.uuid4(), 1, ["tasks"])  # membership changed while the query ran
    await cache.keep(1, row(1), True, stamp)
    assert await found(cache, caller=USER) is None


async def test_a_caller_who_may_not_see_the_row_gets_false(cache: RowCache) -> None:
    _, stamp = await cache.lookup("tasks", K, USER)
    await cache.keep(1, row(1), False, stamp)
    assert await found(cache, caller=USER) is False


async def test_a_row_fetched_before_a_forget_is_not_kept(cache: RowCache) -> None:
    _, stamp = await cache.lookup("tasks", K, None)
    cache.forget()  # a worker started: a change may have gone unannounced meanwhile
    await cache.keep(1, row(1), True, stamp)
    assert await found(cache) is None


async def test_nothing_is_served_or_kept_while_suspended(cache: RowCache) -> None:
    await put(cache, 1)
    cache.suspend()
    assert await found(cache) is None
    await put(cache, 2)
    await cache.reset()
    assert await found(cache) is None  # forgotten: changes may have been missed
    assert cache.stats.clears == 3


async def test_memory_is_bounded() -> None:
    cache = RowCache(max_rows=10, max_decisions=10)
    await cache.reset()
    for _ in range(50):
        await put(cache, 1, uuid.uuid4(), "u")
    assert len(cache._rows) == 10
    assert len(cache._decisions) == 10


# ----- list pages -------------------------------------------------------------------------------------
async def put_page(cache: RowCache, key: Hashable, page: bytes, stamp: object = None) -> None:
    if stamp is None:
        _, stamp = await cache.lookup_page("tasks", key)
    await cache.keep_page(page, stamp)


async def page(cache: RowCache, key: Hashable) -> bytes | None:
    return (await cache.lookup_page("tasks", key))[0]


async def test_a_page_is_served_until_a_row_of_its_resource_changes(cache: RowCache) -> None:
    await put_page(cache, "q", b"a")
    assert await page(cache, "q") == b"a"
    cache.changed("projects", uuid.uuid4(), 2, ())  # another resource: the page stays
    assert await page(cache, "q") == b"a"
    cache.changed("tasks", uuid.uuid4(), 2, ())
    assert await page(cache, "q") is None


async def test_a_page_dies_with_an_epoch_bump_of_its_resource(cache: RowCache) -> None:
    await put_page(cache, "q", b"a")
    cache.changed("members", uuid.uuid4(), 2, ["tasks"])
    assert await page(cache, "q") is None


async def test_a_page_read_before_a_change_is_not_kept(cache: RowCache) -> None:
    _, before = await cache.lookup_page("tasks", "q")
    cache.changed("tasks", K, 3, ())  # a change lands while the page is being fetched
    await put_page(cache, "q", b"stale", before)
    assert await page(cache, "q") is None


async def test_pages_are_dropped_by_a_forget_and_bounded() -> None:
    cache = RowCache(max_rows=10, max_decisions=10, max_pages=5)
    await cache.reset()
    for i in range(20):
        await put_page(cache, i, b"%d" % i)
    assert [await page(cache, i) for i in range(15, 20)] == [b"15", b"16", b"17", b"18", b"19"]
    assert await page(cache, 0) is None
    cache.forget()
    assert await page(cache, 19) is None
    assert (cache.stats.page_hits, cache.stats.page_misses) == (5, 22)  # 20 reads before keeping
