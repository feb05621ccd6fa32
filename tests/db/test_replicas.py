"""The read router against a real streaming replica: reads go to the replica, a writer reads its own
writes (also through another instance sharing Redis), and a replica that lags, is not a standby or goes
down is skipped without a failed read.

Replay is paused on the standby to make "the replica is behind" a fact rather than a race: while paused
the standby receives WAL but shows the data as it was.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from tests.conftest import REDIS_URL
from tests.pgservers import Replication, pause_replay, resume_replay, wait_caught_up
from tests.support import free_port

from rampart.db.pool import Database
from rampart.db.replicas import Replicas
from rampart.lib.store import MemoryStore, RedisStore, Store

MakeReplicas = Callable[..., Replicas]


@pytest.fixture
async def primary(replication: Replication) -> AsyncIterator[Database]:
    db = Database(replication.primary_url, max_size=4)
    yield db
    await db.close()


@pytest.fixture
async def make_replicas(primary: Database, replication: Replication) -> AsyncIterator[MakeReplicas]:
    made: list[Replicas] = []

    def make(urls: list[str] | None = None, *, marks: Store | None = None, max_lag: float = 60.0) -> Replicas:
        replicas = Replicas(
            primary,
            urls if urls is not None else [replication.standby_url],
            marks=marks or MemoryStore(),
            max_lag=max_lag,
            make_pool=lambda dsn: Database(dsn, max_size=4, connect_timeout=2.0),
        )
        made.append(replicas)
        return replicas

    yield make
    for replicas in made:
        await replicas.close()


@pytest.fixture
async def table(primary: Database, replication: Replication) -> AsyncIterator[str]:
    """A table holding the value 1, present on the standby too."""
    name = f"replica_test_{uuid.uuid4().hex[:10]}"
    await primary.execute(f"CREATE TABLE {name} (v int PRIMARY KEY)")
    await primary.execute(f"INSERT INTO {name} VALUES (1)")
    await wait_caught_up(replication.primary_url, replication.standby_url)
    yield name
    await primary.execute(f"DROP TABLE {name}")


@pytest.fixture
async def paused(replication: Replication, table: str) -> AsyncIterator[None]:
    """The standby stops replaying for the test once `table` is there (and always resumes afterwards)."""
    await pause_replay(replication.standby_url)
    try:
        yield
    finally:
        await resume_replay(replication.standby_url)
        await wait_caught_up(replication.primary_url, replication.standby_url)


async def values(replicas: Replicas, subject: str | None, table: str) -> list[int]:
    return [r["v"] for r in await replicas.fetch(subject, f"SELECT v FROM {table} ORDER BY v")]


@pytest.fixture
async def redis_namespace() -> AsyncIterator[str]:
    namespace = f"rampart-test:{uuid.uuid4().hex}:"
    yield namespace
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    keys = [key async for key in client.scan_iter(match=namespace + "*")]
    if keys:
        await client.unlink(*keys)
    await client.aclose()


# ----- where reads go ------------------------------------------------------------------------------------


@pytest.mark.usefixtures("paused")
async def test_reads_go_to_the_replica_and_the_writer_reads_its_write(
    make_replicas: MakeReplicas, primary: Database, table: str
) -> None:
    replicas = make_replicas()
    await primary.execute(f"INSERT INTO {table} VALUES (2)")
    await replicas.wrote("alice")

    # The standby has not replayed the insert: anyone reading there still sees the old table.
    assert await values(replicas, None, table) == [1]
    assert await values(replicas, "bob", table) == [1]
    assert replicas.counts == {"replica": 2, "primary": 0}
    # The writer's mark is past the standby's position: their read goes to the primary.
    assert await values(replicas, "alice", table) == [1, 2]
    assert replicas.counts == {"replica": 2, "primary": 1}


async def test_the_writer_goes_back_to_the_replica_once_it_has_replayed_the_write(
    make_replicas: MakeReplicas, primary: Database, table: str, replication: Replication
) -> None:
    replicas = make_replicas()
    await pause_replay(replication.standby_url)
    try:
        await primary.execute(f"INSERT INTO {table} VALUES (2)")
        await replicas.wrote("alice")
        assert await values(replicas, "alice", table) == [1, 2]
        assert replicas.counts["primary"] == 1
    finally:
        await resume_replay(replication.standby_url)
    await wait_caught_up(replication.primary_url, replication.standby_url)
    deadline = time.monotonic() + 10
    while replicas.counts["replica"] == 0:  # within a probe interval (20 ms) of the standby catching up
        assert time.monotonic() < deadline, "the writer's reads never went back to the replica"
        assert await values(replicas, "alice", table) == [1, 2]
        await asyncio.sleep(0.01)


@pytest.mark.usefixtures("paused")
async def test_a_mark_left_through_one_instance_holds_on_another(
    make_replicas: MakeReplicas, primary: Database, table: str, redis_namespace: str
) -> None:
    # Two instances (separate routers and Redis connections) sharing only Redis.
    clients = [redis.asyncio.Redis.from_url(REDIS_URL) for _ in range(2)]
    try:
        first = make_replicas(marks=RedisStore(clients[0], namespace=redis_namespace))
        second = make_replicas(marks=RedisStore(clients[1], namespace=redis_namespace))
        await primary.execute(f"INSERT INTO {table} VALUES (2)")
        await first.wrote("alice")
        assert await values(second, "alice", table) == [1, 2]
        assert await values(second, "bob", table) == [1]
        assert second.counts == {"replica": 1, "primary": 1}
    finally:
        for client in clients:
            await client.aclose()


@pytest.mark.usefixtures("paused")
async def test_reads_inside_a_transaction_use_the_transaction(
    make_replicas: MakeReplicas, primary: Database, table: str
) -> None:
    replicas = make_replicas()
    async with primary.transaction() as conn:
        await conn.execute(f"INSERT INTO {table} VALUES (2)")
        # Not committed yet: only the transaction's own connection can see it.
        assert await values(replicas, None, table) == [1, 2]
    assert replicas.counts == {"replica": 0, "primary": 1}


# ----- replicas that must not serve ----------------------------------------------------------------------


@pytest.mark.usefixtures("paused")
async def test_a_replica_behind_the_lag_bound_is_skipped(
    make_replicas: MakeReplicas, primary: Database, table: str
) -> None:
    replicas = make_replicas(max_lag=0.2)
    await primary.execute(f"INSERT INTO {table} VALUES (2)")
    deadline = time.monotonic() + 10
    while not (await replicas.report())["replica_1"].startswith("lagging"):
        assert time.monotonic() < deadline, "the paused standby was never reported as lagging"
        await asyncio.sleep(0.05)
    assert await values(replicas, None, table) == [1, 2]  # from the primary, not the stale standby
    assert replicas.counts == {"replica": 0, "primary": 1}


async def test_the_primary_given_as_a_replica_is_not_used(
    make_replicas: MakeReplicas, replication: Replication, table: str
) -> None:
    replicas = make_replicas([replication.primary_url])
    assert await replicas.report() == {"replica_1": "not a standby"}
    assert await values(replicas, None, table) == [1]
    assert replicas.counts == {"replica": 0, "primary": 1}


async def test_an_unreachable_replica_leaves_reads_to_the_primary(
    make_replicas: MakeReplicas, replication: Replication, table: str
) -> None:
    replicas = make_replicas(
        [f"postgresql://postgres@127.0.0.1:{free_port()}/rampart", replication.standby_url]
    )
    for _ in range(4):  # round robin: every other read would try the dead one first
        assert await values(replicas, None, table) == [1]
    assert replicas.counts == {"replica": 4, "primary": 0}
    report = await replicas.report()
    assert report["replica_1"].startswith("down")
    assert report["replica_2"] == "ok"


async def test_a_replica_that_goes_down_is_skipped(
    make_replicas: MakeReplicas, replication: Replication, table: str
) -> None:
    node = await asyncio.to_thread(replication.add_standby)
    url = node.url(replication.database)
    await wait_caught_up(replication.primary_url, url)
    replicas = make_replicas([url])
    assert await values(replicas, None, table) == [1]
    assert replicas.counts == {"replica": 1, "primary": 0}
    await asyncio.to_thread(node.stop, "immediate")  # the server dies; the pool still holds a connection
    for _ in range(3):
        assert await values(replicas, None, table) == [1]
    assert replicas.counts == {"replica": 1, "primary": 3}
    assert (await replicas.report())["replica_1"].startswith("down")


async def test_the_marks_store_down_sends_every_read_to_the_primary(
    make_replicas: MakeReplicas, table: str
) -> None:
    # No retries: redis-py's default would spend seconds on each refused call.
    client = redis.asyncio.Redis(port=free_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    try:
        replicas = make_replicas(marks=RedisStore(client))
        await replicas.wrote("alice")  # logged, not raised: the write it follows has committed
        assert await values(replicas, "alice", table) == [1]
        assert await values(replicas, None, table) == [1]  # no mark needed: the replica may serve
        assert replicas.counts == {"replica": 1, "primary": 1}
    finally:
        await client.aclose()
