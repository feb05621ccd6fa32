"""Read replicas through the HTTP API: two app instances share a primary, a streaming standby and Redis.

With the standby's replay paused, what a caller reads shows where the read ran: the standby still has
the old data, the primary the new. Lists and the audit log go to the replica; the writer reads its own
write on either instance; reads by id through the row cache stay on the primary (decision 0010).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from rampart.app import Rampart, create_app
from tests.conftest import REDIS_URL, User, make_settings, new_user, wait_for_cache
from tests.pgservers import Replication, pause_replay, resume_replay, wait_caught_up
from tests.support import free_port

Client = httpx.AsyncClient


@asynccontextmanager
async def instance(url: str, **overrides: Any) -> AsyncIterator[tuple[Rampart, Client]]:
    """One app instance (its own pools, caches and workers) and a client talking to it in-process."""
    app = create_app(make_settings(url, **overrides))
    await app.startup()
    try:
        if app.services.cache is not None:
            await wait_for_cache(app)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            yield app, client
    finally:
        await app.aclose()


def replicated(replication: Replication, **overrides: Any) -> dict[str, Any]:
    return {
        "database_replica_urls": [replication.standby_url],
        "redis_url": REDIS_URL,
        "database_replica_max_lag": 60.0,  # the paused standby stays in use: staleness is what we look at
        **overrides,
    }


@pytest.fixture(scope="module")
async def cluster(replication: Replication) -> AsyncIterator[dict[str, Client]]:
    """Instances `a` and `b` (row cache on) and `nocache` (row cache off), all with the replica."""
    async with (
        instance(replication.primary_url, **replicated(replication)) as (_, a),
        instance(replication.primary_url, **replicated(replication)) as (_, b),
        instance(replication.primary_url, **replicated(replication, cache="off")) as (_, nocache),
    ):
        yield {"a": a, "b": b, "nocache": nocache}


@pytest.fixture(scope="module")
async def people(replication: Replication) -> dict[str, User]:
    async with instance(replication.primary_url) as (app, _):
        users = {"alice": await new_user(app), "admin": await new_user(app, role="admin")}
    await wait_caught_up(replication.primary_url, replication.standby_url)
    return users


@pytest.fixture
async def paused(replication: Replication, people: dict[str, User]) -> AsyncIterator[None]:
    await wait_caught_up(replication.primary_url, replication.standby_url)
    await pause_replay(replication.standby_url)
    try:
        yield
    finally:
        await resume_replay(replication.standby_url)
        await wait_caught_up(replication.primary_url, replication.standby_url)


def ids(response: httpx.Response) -> set[str]:
    assert response.status_code == 200, response.text
    return {item["id"] for item in response.json()["data"]}


async def eventually(check: Callable[[], Any], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


def reads(metrics_text: str, target: str) -> float:
    prefix = f'rampart_db_reads_total{{target="{target}"}} '
    return sum(float(line[len(prefix) :]) for line in metrics_text.splitlines() if line.startswith(prefix))


# ----- where reads go ------------------------------------------------------------------------------------


@pytest.mark.usefixtures("paused")
async def test_lists_go_to_the_replica_and_the_writer_sees_its_write_on_another_instance(
    cluster: dict[str, Client], people: dict[str, User]
) -> None:
    a, b = cluster["a"], cluster["b"]
    alice, admin = people["alice"], people["admin"]
    r = await a.post("/api/v1/projects", json={"name": "Launch"}, headers=alice.headers)
    assert r.status_code == 201, r.text
    project = r.json()["data"]["id"]

    # The writer, on the other instance: her mark (in Redis) sends her read to the primary.
    assert project in ids(await b.get("/api/v1/projects", headers=alice.headers))
    events = await b.get(f"/api/v1/events?resource_id={project}", headers=alice.headers)
    assert [e["type"] for e in events.json()["data"]] == ["projects.created"]
    # An admin sees every project, but reads the standby, which has not replayed the insert yet.
    assert project not in ids(await b.get("/api/v1/projects", headers=admin.headers))
    assert (await b.get(f"/api/v1/events?resource_id={project}", headers=admin.headers)).json()["data"] == []
    # A read by id through the row cache reads the primary on a miss (never caches replica data).
    assert (await b.get(f"/api/v1/projects/{project}", headers=admin.headers)).status_code == 200

    metrics = (await b.get("/metrics")).text
    assert reads(metrics, "replica") >= 2
    assert reads(metrics, "primary") >= 2


async def test_others_see_the_change_once_the_replica_has_replayed_it(
    cluster: dict[str, Client], people: dict[str, User], replication: Replication
) -> None:
    a, b = cluster["a"], cluster["b"]
    await pause_replay(replication.standby_url)
    try:
        r = await a.post("/api/v1/projects", json={"name": "Later"}, headers=people["alice"].headers)
        project = r.json()["data"]["id"]
        assert project not in ids(await b.get("/api/v1/projects?limit=100", headers=people["admin"].headers))
    finally:
        await resume_replay(replication.standby_url)

    async def seen() -> bool:
        listed = ids(await b.get("/api/v1/projects?limit=100", headers=people["admin"].headers))
        return project in listed

    await eventually(seen, "the admin never saw the project after replay resumed")


@pytest.mark.usefixtures("paused")
async def test_reads_by_id_without_the_row_cache_go_to_the_replica(
    cluster: dict[str, Client], people: dict[str, User], replication: Replication
) -> None:
    a, nocache = cluster["a"], cluster["nocache"]
    alice, admin = people["alice"], people["admin"]
    await resume_replay(replication.standby_url)  # the project itself must reach the standby first
    r = await a.post("/api/v1/projects", json={"name": "Before"}, headers=alice.headers)
    project = r.json()["data"]["id"]
    await wait_caught_up(replication.primary_url, replication.standby_url)
    await pause_replay(replication.standby_url)

    r = await a.patch(f"/api/v1/projects/{project}", json={"name": "After"}, headers=alice.headers)
    assert r.status_code == 200, r.text
    stale = await nocache.get(f"/api/v1/projects/{project}", headers=admin.headers)
    assert (stale.json()["data"]["name"], stale.headers["etag"]) == ("Before", '"1"')
    fresh = await nocache.get(f"/api/v1/projects/{project}", headers=alice.headers)
    assert (fresh.json()["data"]["name"], fresh.headers["etag"]) == ("After", '"2"')


# ----- health ----------------------------------------------------------------------------------------------


async def test_readiness_reports_the_replica(cluster: dict[str, Client]) -> None:
    r = await cluster["a"].get("/health/ready")
    assert r.status_code == 200, r.text
    assert r.json()["checks"]["replica_1"] == "ok"


async def test_a_replica_that_is_down_leaves_reads_working_and_readiness_green(
    replication: Replication, people: dict[str, User]
) -> None:
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/rampart"
    async with instance(replication.primary_url, database_replica_urls=[dead]) as (_, client):
        alice = people["alice"]
        r = await client.post("/api/v1/projects", json={"name": "Solo"}, headers=alice.headers)
        assert r.status_code == 201, r.text
        assert r.json()["data"]["id"] in ids(await client.get("/api/v1/projects", headers=alice.headers))
        assert (await client.get("/api/v1/events", headers=alice.headers)).status_code == 200
        ready = await client.get("/health/ready")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["replica_1"].startswith("down")
        assert reads((await client.get("/metrics")).text, "replica") == 0
