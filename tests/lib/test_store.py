"""Contract suite for rampart.lib.store: every test runs against MemoryStore and RedisStore."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

import pytest
import redis.asyncio

from rampart.lib.store import MemoryStore, RedisStore, Store

StoreFactory = Callable[[], Store]


@pytest.fixture(params=["memory", "redis"])
def make_store(
    request: pytest.FixtureRequest, redis_client: redis.asyncio.Redis, key_prefix: str
) -> StoreFactory:
    """Builds independent stores of one backend; Redis ones share a client, each with its own namespace."""
    numbers = itertools.count()

    def factory() -> Store:
        if request.param == "memory":
            return MemoryStore()
        return RedisStore(redis_client, namespace=f"{key_prefix}{next(numbers)}:")

    return factory


@pytest.fixture
def store(make_store: StoreFactory) -> Store:
    return make_store()


async def test_get_missing_is_none(store: Store) -> None:
    assert await store.get("missing") is None


async def test_set_max_then_get_round_trips_bytes(store: Store) -> None:
    value = bytes(range(256))
    await store.set_max("k", value, ttl=60)
    assert await store.get("k") == value


async def test_ttl_expires_the_value(store: Store) -> None:
    await store.set_max("short", b"v", ttl=0.05)
    await store.set_max("long", b"v", ttl=60)
    assert await store.get("short") == b"v"
    await asyncio.sleep(0.1)
    assert await store.get("short") is None
    assert await store.get("long") == b"v"


async def test_stores_are_isolated(make_store: StoreFactory) -> None:
    first, second = make_store(), make_store()
    await first.set_max("k", b"first", ttl=60)
    await first.set_max("p:1", b"first", ttl=60)
    await second.set_max("p:1", b"second", ttl=60)
    assert await second.get("k") is None
    assert await second.get("p:1") == b"second"
    assert await first.get("p:1") == b"first"


async def test_concurrent_writes_and_reads(store: Store) -> None:
    await asyncio.gather(*(store.set_max(f"k{i}", str(i).encode(), ttl=60) for i in range(100)))
    values = await asyncio.gather(*(store.get(f"k{i}") for i in range(100)))
    assert values == [str(i).encode() for i in range(100)]


async def test_set_max_keeps_the_greater_value(store: Store) -> None:
    await store.set_max("lsn", b"00000000000000a0", ttl=60)
    assert await store.get("lsn") == b"00000000000000a0"
    await store.set_max("lsn", b"000000000000009f", ttl=60)  # an older position never wins
    assert await store.get("lsn") == b"00000000000000a0"
    await store.set_max("lsn", b"0000000000000100", ttl=60)
    assert await store.get("lsn") == b"0000000000000100"


async def test_set_max_compares_bytes_not_text(store: Store) -> None:
    await store.set_max("k", b"\xff", ttl=60)
    await store.set_max("k", b"\x7f\xff", ttl=60)
    assert await store.get("k") == b"\xff"
    await store.set_max("p", b"ab", ttl=60)
    await store.set_max("p", b"a", ttl=60)  # a prefix is smaller
    assert await store.get("p") == b"ab"


async def test_set_max_restarts_the_ttl_even_when_it_keeps_the_value(store: Store) -> None:
    await store.set_max("k", b"9", ttl=0.05)
    await store.set_max("k", b"1", ttl=60)
    await asyncio.sleep(0.1)
    assert await store.get("k") == b"9"
    await store.set_max("gone", b"9", ttl=0.05)
    await asyncio.sleep(0.1)
    await store.set_max("gone", b"1", ttl=60)  # the expired value no longer counts
    assert await store.get("gone") == b"1"


async def test_set_max_refuses_a_non_positive_ttl(store: Store) -> None:
    with pytest.raises(ValueError, match="positive ttl"):
        await store.set_max("k", b"1", ttl=0)


async def test_concurrent_set_max_ends_with_the_greatest(store: Store) -> None:
    # Writers racing (for Redis, on separate connections of the pool): the greatest value must survive.
    values = [f"{i:016x}".encode() for i in range(50)]
    shuffled = values[1::2] + values[::2]
    await asyncio.gather(*(store.set_max("lsn", v, ttl=60) for v in shuffled))
    assert await store.get("lsn") == values[-1]


async def test_memory_store_is_bounded_and_evicts_least_recently_used() -> None:
    store = MemoryStore(max_entries=3)
    for key in ("a", "b", "c"):
        await store.set_max(key, b"v", ttl=60)
    assert await store.get("a") == b"v"  # "a" is now the most recently used
    await store.set_max("d", b"v", ttl=60)
    assert len(store) == 3
    assert await store.get("b") is None
    for key in ("a", "c", "d"):
        assert await store.get(key) == b"v"


async def test_memory_store_never_exceeds_its_bound() -> None:
    store = MemoryStore(max_entries=100)
    for i in range(1000):
        await store.set_max(str(i), b"v", ttl=60)
        assert len(store) <= 100
    assert await store.get("999") == b"v"
    assert await store.get("899") is None


def test_memory_store_refuses_a_zero_bound() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        MemoryStore(max_entries=0)


async def test_redis_store_prefixes_keys_and_sets_px(
    redis_client: redis.asyncio.Redis, key_prefix: str
) -> None:
    store = RedisStore(redis_client, namespace=key_prefix)
    await store.set_max("k", b"v", ttl=1.5)
    assert await redis_client.get(key_prefix + "k") == b"v"
    assert 1000 < await redis_client.pttl(key_prefix + "k") <= 1500
    await store.set_max("tiny", b"v", ttl=0.0001)  # rounded up to 1 ms, not 0 (an error in Redis)


async def test_redis_store_refuses_a_decoding_client() -> None:
    client = redis.asyncio.Redis(decode_responses=True)
    try:
        with pytest.raises(ValueError, match="decode_responses"):
            RedisStore(client)
    finally:
        await client.aclose()
