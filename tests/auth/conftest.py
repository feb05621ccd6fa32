"""Fixtures for the auth tests: the session cache's backends (each test's Redis tier in a namespace of its
own), and a database that counts the session-state queries."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis.asyncio

from rampart.auth.sessions_shared import SharedSessions
from rampart.lib.store import RedisStore
from tests.conftest import REDIS_URL


class CountingDb:
    """The app's database, counting session-state queries; can be told to fail the next ones."""

    def __init__(self, db: Any) -> None:
        self._db = db
        self.queries = 0
        self.fail_next = 0
        self.delay = 0.0
        self.delay_after = 0.0  # the answer is read, then takes this long to arrive
        # Monotonic: when the last query was asked for, and when its answer had been read. The database
        # read the state in between.
        self.asked_at = self.read_at = 0.0

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        self.queries += 1
        self.asked_at = time.monotonic()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_next:
            self.fail_next -= 1
            raise RuntimeError("database down")
        row = await self._db.fetchrow(sql, *args)
        self.read_at = time.monotonic()
        if self.delay_after:
            await asyncio.sleep(self.delay_after)
        return row


@dataclass
class Tiers:
    """Makes the shared tier of one test's workers: none (`memory`), or one Redis namespace (`redis`)."""

    backend: str
    client: redis.asyncio.Redis
    namespace: str = field(default_factory=lambda: f"rampart-test:sess:{uuid.uuid4().hex}:")
    made: list[SharedSessions] = field(default_factory=list)

    def make(self) -> SharedSessions | None:
        """A worker's tier, started (its writer runs); every one made here shares the namespace."""
        if self.backend == "memory":
            return None
        tier = SharedSessions(RedisStore(self.client, namespace=self.namespace))
        tier.start()
        self.made.append(tier)
        return tier

    async def keys(self) -> list[bytes]:
        return [key async for key in self.client.scan_iter(match=self.namespace + "*", count=500)]


async def tiers_of(backend: str) -> AsyncIterator[Tiers]:
    client = redis.asyncio.Redis.from_url(REDIS_URL, socket_timeout=1.0)
    tiers = Tiers(backend, client)
    try:
        yield tiers
    finally:
        for tier in tiers.made:
            await tier.stop()
        keys = await tiers.keys()
        if keys:
            await client.unlink(*keys)
        await client.aclose()


@pytest.fixture(params=["memory", "redis"])
async def tiers(request: pytest.FixtureRequest) -> AsyncIterator[Tiers]:
    """Each session-cache backend in turn: per worker only, and per worker in front of Redis."""
    async for made in tiers_of(request.param):
        yield made


@pytest.fixture
async def redis_tiers() -> AsyncIterator[Tiers]:
    """The Redis backend only, for what only it does."""
    async for made in tiers_of("redis"):
        yield made
