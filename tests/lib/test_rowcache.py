"""The row cache's rules: versions only move forward, tombstones hold, decisions die with the row version,
the epoch or a clear(), and nothing is served or kept while the feed is off."""

from __future__ import annotations

import uuid

import pytest

from rampart.lib.rowcache import RowCache

K = uuid.uuid4()


@pytest.fixture
def cache() -> RowCache:
    c = RowCache(max_rows=100, max_decisions=100)
    c.enabled = True
    return c


def row(version: int) -> dict[str, object]:
    return {"id": str(K), "version": version}


def test_a_row_is_served_once_put(cache: RowCache) -> None:
    cache.put_row("tasks", K, 1, row(1), generation=cache.generation)
    assert cache.row("tasks", K) == (1, row(1))


def test_an_older_version_never_replaces_a_newer_one(cache: RowCache) -> None:
    cache.put_row("tasks", K, 2, row(2), generation=cache.generation)
    cache.put_row("tasks", K, 1, row(1), generation=cache.generation)
    assert cache.row("tasks", K) == (2, row(2))


def test_a_tombstone_refuses_the_version_it_replaced(cache: RowCache) -> None:
    cache.put_row("tasks", K, 1, row(1), generation=cache.generation)
    cache.invalidate("tasks", K, 2)  # version 2 was committed somewhere
    assert cache.row("tasks", K) is None
    cache.put_row("tasks", K, 1, row(1), generation=cache.generation)  # a reader that fetched v1 too early
    assert cache.row("tasks", K) is None
    cache.put_row("tasks", K, 2, row(2), generation=cache.generation)
    assert cache.row("tasks", K) == (2, row(2))


def test_an_invalidation_keeps_the_version_it_announces(cache: RowCache) -> None:
    cache.put_row("tasks", K, 2, row(2), generation=cache.generation)  # the writer put it first
    cache.invalidate("tasks", K, 2)  # then the notification of the same change arrives
    assert cache.row("tasks", K) == (2, row(2))


def test_creates_do_not_evict_cached_rows(cache: RowCache) -> None:
    """A created row (version 1) leaves no tombstone: nothing older can be fetched, and a burst of creates
    would otherwise push the rows readers use out of the bounded map."""
    cache.put_row("tasks", K, 4, row(4), generation=cache.generation)
    for _ in range(500):  # five times the cache's bound
        cache.invalidate("tasks", uuid.uuid4(), 1)
    assert cache.row("tasks", K) == (4, row(4))
    assert len(cache) == 1


def test_a_new_rows_own_version_can_be_kept(cache: RowCache) -> None:
    new = uuid.uuid4()
    cache.invalidate("tasks", new, 1)
    cache.put_row("tasks", new, 1, row(1), generation=cache.generation)
    assert cache.row("tasks", new) == (1, row(1))


def test_a_deleted_row_is_never_cached_again(cache: RowCache) -> None:
    cache.put_row("tasks", K, 3, row(3), generation=cache.generation)
    cache.invalidate("tasks", K, None)
    cache.put_row("tasks", K, 3, row(3), generation=cache.generation)
    cache.put_row("tasks", K, 99, row(99), generation=cache.generation)
    assert cache.row("tasks", K) is None


def test_decisions_belong_to_a_row_version_and_an_epoch(cache: RowCache) -> None:
    user = uuid.uuid4()
    cache.put_decision("tasks", K, 1, user, cache.epoch("tasks"), True)
    assert cache.decision("tasks", K, 1, user) is True
    assert cache.decision("tasks", K, 2, user) is None  # another version: unknown
    assert cache.decision("tasks", K, 1, uuid.uuid4()) is None  # another caller: unknown
    cache.bump("tasks")
    assert cache.decision("tasks", K, 1, user) is None


def test_a_decision_made_before_a_bump_is_not_kept(cache: RowCache) -> None:
    user = uuid.uuid4()
    epoch = cache.epoch("tasks")
    cache.bump("tasks")  # membership changed while the query ran
    cache.put_decision("tasks", K, 1, user, epoch, True)
    assert cache.decision("tasks", K, 1, user) is None


def test_a_row_fetched_before_a_clear_is_not_kept(cache: RowCache) -> None:
    generation = cache.generation
    cache.clear()  # the feed dropped: an invalidation may have been missed meanwhile
    cache.put_row("tasks", K, 1, row(1), generation=generation)
    assert cache.row("tasks", K) is None


def test_nothing_is_served_or_kept_while_disabled(cache: RowCache) -> None:
    cache.put_row("tasks", K, 1, row(1), generation=cache.generation)
    cache.enabled = False
    assert cache.row("tasks", K) is None
    cache.put_row("tasks", K, 2, row(2), generation=cache.generation)
    cache.enabled = True
    assert cache.row("tasks", K) == (1, row(1))


def test_memory_is_bounded() -> None:
    cache = RowCache(max_rows=10, max_decisions=10)
    cache.enabled = True
    for _ in range(50):
        key = uuid.uuid4()
        cache.put_row("tasks", key, 1, row(1), generation=cache.generation)
        cache.put_decision("tasks", key, 1, "u", 0, True)
    assert len(cache) == 10
    assert len(cache._decisions) == 10


# ----- list pages -------------------------------------------------------------------------------------
def put_page(cache: RowCache, key: object, page: object, *, list_generation: int | None = None) -> None:
    lg = cache.list_generation("tasks") if list_generation is None else list_generation
    cache.put_page("tasks", key, page, list_generation=lg, generation=cache.generation)


def test_a_page_is_served_until_a_row_of_its_resource_changes(cache: RowCache) -> None:
    put_page(cache, "q", ["a"])
    assert cache.page("tasks", "q") == ["a"]
    cache.invalidate("projects", uuid.uuid4(), 2)  # another resource: the page stays
    assert cache.page("tasks", "q") == ["a"]
    cache.invalidate("tasks", uuid.uuid4(), 2)
    assert cache.page("tasks", "q") is None


def test_a_page_dies_with_an_epoch_bump_of_its_resource(cache: RowCache) -> None:
    put_page(cache, "q", ["a"])
    cache.bump("tasks")
    assert cache.page("tasks", "q") is None


def test_a_page_read_before_a_change_is_not_kept(cache: RowCache) -> None:
    before = cache.list_generation("tasks")
    cache.invalidate("tasks", K, 3)  # a change lands while the page is being fetched
    put_page(cache, "q", ["stale"], list_generation=before)
    assert cache.page("tasks", "q") is None


def test_pages_are_dropped_by_a_clear_and_bounded() -> None:
    cache = RowCache(max_rows=10, max_decisions=10, max_pages=5)
    cache.enabled = True
    for i in range(20):
        put_page(cache, i, [i])
    assert [cache.page("tasks", i) for i in range(15, 20)] == [[15], [16], [17], [18], [19]]
    assert cache.page("tasks", 0) is None
    cache.clear()
    assert cache.page("tasks", 19) is None
