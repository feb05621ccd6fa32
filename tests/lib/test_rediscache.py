"""The Redis query cache keeps the in-process cache's rules (tests/lib/test_rowcache.py), against a real
Redis: versions only move forward, tombstones hold, decisions die with the row version and the epoch,
pages with the list generation, a stale stamp keeps nothing, and a Redis outage never serves what a lost
change would have dropped."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio
from tests.conftest import REDIS_URL
from tests.reliability.services import PrivateRedis

from rampart.lib.rediscache import RedisQueryCache

K = uuid.uuid4()
ALICE, BOB = uuid.uuid4(), uuid.uuid4()


def row(version: int) -> bytes:
    return b'{"id":"%s","version":%d}' % (str(K).encode(), version)


@pytest.fixture
async def client() -> AsyncIterator[redis.asyncio.Redis]:
    c = redis.asyncio.from_url(REDIS_URL, socket_timeout=1.0)
    yield c
    await c.aclose()


async def started(client: redis.asyncio.Redis, namespace: str | None = None) -> RedisQueryCache:
    cache = RedisQueryCache(client, namespace=namespace or f"test:qc:{uuid.uuid4().hex}:", ttl=60)
    cache.start()
    await cache.reset()  # what the feed does once its listener is up
    assert cache.enabled
    return cache


@pytest.fixture
async def cache(client: redis.asyncio.Redis) -> AsyncIterator[RedisQueryCache]:
    c = await started(client)
    yield c
    await c.stop()


async def put(
    cache: RedisQueryCache, version: int, caller: uuid.UUID | None = None, visible: bool = True
) -> None:
    _, stamp = await cache.lookup("tasks", K, caller)
    await cache.keep(version, row(version), visible, stamp)


async def change(cache: RedisQueryCache, version: int | None, *dependents: str) -> None:
    cache.changed("tasks", K, version, dependents)
    await cache.settle()


async def test_a_row_is_served_once_kept(cache: RedisQueryCache) -> None:
    assert (await cache.lookup("tasks", K, None))[0] is None
    await put(cache, 1)
    assert (await cache.lookup("tasks", K, None))[0] == (1, row(1))


async def test_an_older_version_never_replaces_a_newer_one(cache: RedisQueryCache) -> None:
    await put(cache, 2)
    await put(cache, 1)
    assert (await cache.lookup("tasks", K, None))[0] == (2, row(2))


async def test_a_tombstone_refuses_the_version_it_replaced(cache: RedisQueryCache) -> None:
    await put(cache, 1)
    await change(cache, 2)  # version 2 was committed somewhere
    assert (await cache.lookup("tasks", K, None))[0] is None
    await put(cache, 1)  # a reader that fetched v1 too early
    assert (await cache.lookup("tasks", K, None))[0] is None
    await put(cache, 2)
    assert (await cache.lookup("tasks", K, None))[0] == (2, row(2))


async def test_a_change_keeps_the_version_it_announces(cache: RedisQueryCache) -> None:
    await put(cache, 2)  # a reader put the new version first
    await change(cache, 2)  # then the change arrives
    assert (await cache.lookup("tasks", K, None))[0] == (2, row(2))


async def test_a_created_row_leaves_no_tombstone(cache: RedisQueryCache, client: redis.asyncio.Redis) -> None:
    """A new row (version 1) needs no floor: nothing older can be fetched. Its change still moves the
    list generation on, and its own version can be kept."""
    _, before = await cache.lookup_page("tasks", "q")
    await change(cache, 1)
    assert [k async for k in client.scan_iter(match=f"{cache._ns}*row:*")] == []
    await cache.keep_page(b"[]", before)
    assert (await cache.lookup_page("tasks", "q"))[0] is None  # the page read before the create is void
    await put(cache, 1)
    assert (await cache.lookup("tasks", K, None))[0] == (1, row(1))


async def test_a_deleted_row_is_never_kept_again(cache: RedisQueryCache) -> None:
    await put(cache, 3)
    await change(cache, None)
    await put(cache, 3)
    await put(cache, 99)
    assert (await cache.lookup("tasks", K, None))[0] is None


async def test_a_miss_read_before_a_change_keeps_nothing(cache: RedisQueryCache) -> None:
    _, stamp = await cache.lookup("tasks", K, ALICE)
    await change(cache, 5, "tasks")  # the row and what decides visibility changed while the reader read
    await cache.keep(4, row(4), True, stamp)
    assert (await cache.lookup("tasks", K, ALICE))[0] is None


async def test_a_decision_is_per_caller_and_dies_with_the_epoch(cache: RedisQueryCache) -> None:
    await put(cache, 1, ALICE, visible=True)
    await put(cache, 1, BOB, visible=False)
    assert (await cache.lookup("tasks", K, ALICE))[0] == (1, row(1))
    assert (await cache.lookup("tasks", K, BOB))[0] is False  # a 404 without the database
    assert (await cache.lookup("tasks", K, uuid.uuid4()))[0] is None  # nobody else's decision is reused
    cache.changed("members", uuid.uuid4(), 1, ["tasks"])  # a membership change: tasks' epoch moves on
    await cache.settle()
    assert (await cache.lookup("tasks", K, ALICE))[0] is None
    assert (await cache.lookup("tasks", K, BOB))[0] is None
    assert (await cache.lookup("tasks", K, None))[0] == (1, row(1))  # the row itself is still good


async def test_a_page_lives_until_its_resource_changes(cache: RedisQueryCache) -> None:
    key = (ALICE, "user", None, b"status=todo")
    body, stamp = await cache.lookup_page("tasks", key)
    assert body is None
    await cache.keep_page(b'{"data":[]}', stamp)
    assert (await cache.lookup_page("tasks", key))[0] == b'{"data":[]}'
    assert (await cache.lookup_page("tasks", (BOB, "user", None, b"status=todo")))[0] is None  # per caller
    cache.changed("projects", uuid.uuid4(), 2, [])  # another resource, which tasks do not depend on here
    await cache.settle()
    assert (await cache.lookup_page("tasks", key))[0] == b'{"data":[]}'
    await change(cache, 7)
    assert (await cache.lookup_page("tasks", key))[0] is None


async def test_a_page_read_before_a_change_is_not_kept(cache: RedisQueryCache) -> None:
    key = (ALICE, "user", None, b"")
    _, stamp = await cache.lookup_page("tasks", key)
    await change(cache, 3)
    await cache.keep_page(b"stale", stamp)
    assert (await cache.lookup_page("tasks", key))[0] is None


async def test_workers_share_what_they_keep_and_a_reset_forgets_it_for_all(
    client: redis.asyncio.Redis,
) -> None:
    namespace = f"test:qc:{uuid.uuid4().hex}:"
    one, two = await started(client, namespace), await started(client, namespace)
    try:
        await put(one, 1)
        assert (await two.lookup("tasks", K, None))[0] == (1, row(1))
        await change(two, 2)
        assert (await one.lookup("tasks", K, None))[0] is None  # the writer's change, seen by every worker
        await put(one, 2)
        await two.reset()  # a worker's listener came back: changes may have been missed meanwhile
        assert (await one.lookup("tasks", K, None))[0] is None
    finally:
        await one.stop()
        await two.stop()


async def test_a_redis_outage_steps_aside_and_comes_back_without_what_was_lost() -> None:
    server = PrivateRedis()
    server.start()
    client = redis.asyncio.from_url(server.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    cache = await started(client)
    try:
        await put(cache, 1)
        server.stop()
        assert (await cache.lookup("tasks", K, None))[0] is None  # a miss, not an error
        assert not cache.enabled
        await change(cache, 2)  # lost: Redis is down
        await put(cache, 1)  # kept nowhere while stepped aside
        server.start()
        for _ in range(100):
            if cache.enabled:
                break
            await asyncio.sleep(0.05)
        assert cache.enabled, "the cache did not come back after Redis did"
        # Redis kept nothing across its restart here, but a lost change must never leave an old row
        # reachable even when the data survives: the generation moved on.
        assert (await cache.lookup("tasks", K, None))[0] is None
        assert cache.stats.clears >= 2
    finally:
        await cache.stop()
        await client.aclose()
        server.stop()


async def test_a_worker_whose_feed_is_down_neither_serves_nor_keeps(cache: RedisQueryCache) -> None:
    await put(cache, 1)
    cache.suspend()
    assert not cache.enabled
    _, stamp = await cache.lookup("tasks", K, None)
    await cache.keep(2, row(2), True, stamp)
    await cache.reset()
    assert (await cache.lookup("tasks", K, None))[0] is None  # forgotten: changes may have been missed
