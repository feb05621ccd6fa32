"""Who announces a row change: the writing worker after its commit, in batches; the table's trigger only
for other sessions (decision 0012). And a starting worker makes every other one forget."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from rampart.app import Rampart, create_app
from rampart.db.pool import Database
from rampart.resources.caching import CHANNEL, Announcer
from tests.conftest import User, make_settings, wait_for_cache


@pytest.fixture
async def heard(database_url: str) -> AsyncIterator[list[str]]:
    """Every payload on the change channel, from a listener of our own."""
    payloads: list[str] = []
    conn = await asyncpg.connect(database_url)
    await conn.add_listener(CHANNEL, lambda _c, _p, _ch, payload: payloads.append(payload))
    yield payloads
    await conn.close()


async def settle() -> None:
    await asyncio.sleep(0.3)


async def test_the_trigger_announces_other_sessions_writes_only(
    app: Rampart, client: httpx.AsyncClient, alice: User, heard: list[str], database_url: str
) -> None:
    r = await client.post("/api/v1/projects", json={"name": "p"}, headers=alice.headers)
    project = r.json()["data"]["id"]
    await settle()
    heard.clear()
    # Rampart's own session (rampart.announces=on): the trigger stays quiet, nothing is announced.
    await app.services.db.execute("UPDATE projects SET version = version + 1 WHERE id = $1", project)
    await settle()
    assert not any(project in p for p in heard)
    # Any other session: the trigger announces, inside the write.
    outside = await asyncpg.connect(database_url)
    try:
        await outside.execute("UPDATE projects SET version = version + 1 WHERE id = $1", project)
    finally:
        await outside.close()
    await settle()
    assert any(f"projects {project} 3" in p.split("\n") for p in heard)


async def test_a_write_through_the_api_is_announced_after_its_commit(
    client: httpx.AsyncClient, alice: User, heard: list[str]
) -> None:
    r = await client.post("/api/v1/projects", json={"name": "p"}, headers=alice.headers)
    project = r.json()["data"]["id"]
    r = await client.patch(f"/api/v1/projects/{project}", json={"name": "q"}, headers=alice.headers)
    assert r.status_code == 200
    await settle()
    lines = [line for p in heard for line in p.split("\n")]
    assert f"projects {project} 1" in lines
    assert f"projects {project} 2" in lines


async def test_changes_go_out_in_batches_of_bounded_payloads(database_url: str, heard: list[str]) -> None:
    db = Database(database_url)
    announcer = Announcer(db)
    keys = [uuid.uuid4() for _ in range(1000)]
    for key in keys:  # queued before the announcer runs: one batch
        announcer.announce("tasks", key, 7)
    announcer.start()
    try:
        for _ in range(50):
            lines = [line for p in heard for line in p.split("\n")]
            if len(lines) >= 1001:
                break
            await asyncio.sleep(0.05)
    finally:
        await announcer.stop()
        await db.close()
    assert lines[0] == "*"  # a starting worker: everyone forgets what a predecessor may not have announced
    assert lines[1:] == [f"tasks {key} 7" for key in keys]  # all of them, in order
    assert 1 < len(heard) < 20  # several changes per notification
    assert all(len(p.encode()) <= 8000 for p in heard)


async def test_a_starting_worker_makes_every_other_one_forget(app: Rampart, database_url: str) -> None:
    cache = app.services.cache
    assert cache is not None
    clears = cache.stats.clears
    other = create_app(make_settings(database_url))
    await other.startup()
    try:
        await wait_for_cache(other)
        for _ in range(50):
            if cache.stats.clears > clears:
                break
            await asyncio.sleep(0.05)
        assert cache.stats.clears > clears
        assert cache.enabled  # forgetting is not switching off
    finally:
        await other.aclose()
