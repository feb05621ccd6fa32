"""Fixtures for the lib tests: real Redis clients and a key prefix unique to each test."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio

REDIS_URL = os.environ.get("RAMPART_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

RedisFactory = Callable[[], redis.asyncio.Redis]


@pytest.fixture
async def make_redis_client() -> AsyncIterator[RedisFactory]:
    """Opens independent clients of the real test Redis (like separate workers); all closed afterwards."""
    clients: list[redis.asyncio.Redis] = []

    def factory() -> redis.asyncio.Redis:
        client = redis.asyncio.Redis.from_url(REDIS_URL)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.aclose()


@pytest.fixture
def redis_client(make_redis_client: RedisFactory) -> redis.asyncio.Redis:
    """A client of the real test Redis."""
    return make_redis_client()


@pytest.fixture
async def key_prefix(redis_client: redis.asyncio.Redis) -> AsyncIterator[str]:
    """A Redis key prefix no other test (or concurrent test run) uses; its keys are removed afterwards."""
    prefix = f"rampart-test:{uuid.uuid4().hex}:"
    yield prefix
    keys = [key async for key in redis_client.scan_iter(match=prefix + "*", count=500)]
    if keys:
        await redis_client.unlink(*keys)
