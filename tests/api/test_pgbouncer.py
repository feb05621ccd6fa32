"""The app through PgBouncer in transaction mode (Debian's pgbouncer, a private instance with 3 server
connections in front of the test database), with `RAMPART_DATABASE_POOL_MODE=transaction` and the direct
URL for what needs a session: the change and revocation listeners, the dispatcher's wake-ups, migrations.

Every feature that touches the database is exercised through it: CRUD and lists with cursors, the event
outbox and its delivery, sessions and their revocation, the row cache and its invalidation, timeouts
that cancel the statement, and more concurrent requests than PgBouncer has server connections.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import pytest

from rampart.app import Rampart, create_app
from rampart.clitasks import migrate_all
from tests.apps.slow import serve
from tests.conftest import MakeUser, User, make_settings, wait_for_cache
from tests.pgservers import Bouncer
from tests.support import free_port


def pooled_settings(bouncer: Bouncer, database_url: str, **overrides: Any) -> Any:
    return make_settings(
        bouncer.url,
        database_direct_url=database_url,
        database_pool_mode="transaction",
        db_pool_size=10,
        events_poll_interval=0.2,
        **overrides,
    )


@pytest.fixture(scope="module")
async def pooled(bouncer: Bouncer, database_url: str) -> AsyncIterator[tuple[Rampart, httpx.AsyncClient]]:
    app = create_app(pooled_settings(bouncer, database_url))
    await app.startup()
    await wait_for_cache(app)  # the change listener is up: it connected through the direct URL
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://pooled") as http:
        yield app, http
    await app.aclose()


@pytest.fixture
def client(pooled: tuple[Rampart, httpx.AsyncClient]) -> httpx.AsyncClient:
    return pooled[1]


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


async def direct(database_url: str, sql: str, *args: Any) -> Any:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


# ----- resources and events ----------------------------------------------------------------------------


async def test_crud_lists_and_events(client: httpx.AsyncClient, alice: User, database_url: str) -> None:
    h = alice.headers
    r = await client.post("/api/v1/projects", json={"name": "Through the bouncer"}, headers=h)
    assert r.status_code == 201, r.text
    project = r.json()["data"]["id"]
    created = []
    for i in range(3):
        r = await client.post(
            "/api/v1/tasks", json={"project_id": project, "title": f"t{i}", "priority": i}, headers=h
        )
        assert r.status_code == 201, r.text
        created.append(r.json()["data"]["id"])

    # A list walked page by page with the cursor, a filter and a sort.
    base = f"/api/v1/tasks?project_id={project}&sort=-priority&limit=2"
    first = (await client.get(base + "&include_total=true", headers=h)).json()
    assert first["meta"]["total"] == 3
    seen = [t["id"] for t in first["data"]]
    cursor = first["meta"]["next_cursor"]
    while cursor:
        page = (await client.get(f"{base}&cursor={cursor}", headers=h)).json()
        seen += [t["id"] for t in page["data"]]
        cursor = page["meta"]["next_cursor"]
    assert seen == list(reversed(created))

    r = await client.patch(
        f"/api/v1/tasks/{created[0]}", json={"status": "done"}, headers={**h, "If-Match": '"1"'}
    )
    assert (r.status_code, r.json()["data"]["version"]) == (200, 2)
    r = await client.patch(
        f"/api/v1/tasks/{created[0]}", json={"status": "todo"}, headers={**h, "If-Match": '"1"'}
    )
    assert r.status_code == 412
    assert (await client.delete(f"/api/v1/tasks/{created[1]}", headers=h)).status_code == 204
    assert (await client.get(f"/api/v1/tasks/{created[1]}", headers=h)).status_code == 404

    # Every change has its event, in the audit log...
    log = (await client.get(f"/api/v1/events?resource=tasks&actor_id={alice.id}&limit=100", headers=h)).json()
    types = [(e["type"], e["resource_id"]) for e in log["data"]]
    assert ("tasks.updated", created[0]) in types
    assert ("tasks.deleted", created[1]) in types
    # ...and the dispatcher (its claims run through the bouncer too) takes them off its queue.
    ids = [e["id"] for e in log["data"]]

    async def delivered() -> bool:
        rows = await direct(database_url, "SELECT count(*) AS n FROM event_queue WHERE id = ANY($1::uuid[])",
                            ids)  # fmt: skip
        return bool(rows[0]["n"] == 0)

    await eventually(delivered, "the dispatcher did not deliver the events through pgbouncer")


async def test_validation_and_conflicts_map_as_without_a_pooler(
    client: httpx.AsyncClient, admin: User
) -> None:
    r = await client.post("/api/v1/tasks", json={"title": "", "priority": "3"}, headers=admin.headers)
    assert r.status_code == 422
    email = f"dup-{time.monotonic_ns()}@example.test"
    body = {"email": email, "name": "Dup"}
    assert (await client.post("/api/v1/admin/users", json=body, headers=admin.headers)).status_code == 201
    assert (await client.post("/api/v1/admin/users", json=body, headers=admin.headers)).status_code == 409


# ----- sessions and the row cache (listeners on the direct URL) -----------------------------------------


async def test_logout_and_revocation_through_another_instance(
    client: httpx.AsyncClient, app: Rampart, make_user: MakeUser
) -> None:
    user = await make_user()
    assert (await client.get("/api/v1/auth/me", headers=user.headers)).status_code == 200
    assert (await client.post("/api/v1/auth/logout", headers=user.headers)).status_code == 204
    assert (await client.get("/api/v1/auth/me", headers=user.headers)).status_code == 401

    # Revoked through another instance (the session app, connected directly): the announcement reaches
    # this one's revocation listener, which connected through the direct URL.
    other = await make_user()
    assert (await client.get("/api/v1/auth/me", headers=other.headers)).status_code == 200
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://direct") as peer:
        assert (await peer.post("/api/v1/auth/logout", headers=other.headers)).status_code == 204

    async def refused() -> bool:
        return (await client.get("/api/v1/auth/me", headers=other.headers)).status_code == 401

    await eventually(refused, "a session revoked elsewhere was still accepted", timeout=2.0)


async def test_the_row_cache_serves_and_is_invalidated(
    pooled: tuple[Rampart, httpx.AsyncClient], alice: User, database_url: str
) -> None:
    app, client = pooled
    cache = app.services.cache
    assert cache is not None
    assert cache.enabled
    r = await client.post("/api/v1/projects", json={"name": "cached"}, headers=alice.headers)
    project = r.json()["data"]["id"]
    for _ in range(2):  # the first read fills the cache, the second is served from it
        hits = cache.stats.hits
        r = await client.get(f"/api/v1/projects/{project}", headers=alice.headers)
        assert r.json()["data"]["name"] == "cached"
    assert cache.stats.hits == hits + 1
    # A change behind the app's back, straight in the database: the trigger's NOTIFY must reach the
    # listener (direct URL) and evict the cached row.
    await direct(
        database_url, "UPDATE projects SET name = 'changed', version = version + 1 WHERE id = $1", project
    )

    async def fresh() -> bool:
        r = await client.get(f"/api/v1/projects/{project}", headers=alice.headers)
        return bool(r.json()["data"]["name"] == "changed")

    await eventually(fresh, "the cached row was never invalidated", timeout=2.0)


# ----- load and timeouts -----------------------------------------------------------------------------------


async def test_more_concurrent_requests_than_server_connections(
    pooled: tuple[Rampart, httpx.AsyncClient], bouncer: Bouncer, alice: User
) -> None:
    app, client = pooled
    r = await client.post("/api/v1/projects", json={"name": "busy"}, headers=alice.headers)
    project = r.json()["data"]["id"]

    async def one(i: int) -> int:
        if i % 2:
            body = {"project_id": project, "title": f"load {i}"}
            return (await client.post("/api/v1/tasks", json=body, headers=alice.headers)).status_code
        return (await client.get(f"/api/v1/tasks?project_id={project}", headers=alice.headers)).status_code

    statuses = await asyncio.gather(*(one(i) for i in range(60)))
    assert sorted(set(statuses)) == [200, 201]
    listed = await client.get(f"/api/v1/tasks?project_id={project}&limit=100", headers=alice.headers)
    assert len(listed.json()["data"]) == 30
    # The app held more connections than PgBouncer opened to the server: transactions were multiplexed.
    assert app.services.db.stats()["size"] > bouncer.pool_size
    servers = [s for s in bouncer.admin("SHOW SERVERS") if s["database"] == "rampart"]
    assert 1 <= len(servers) <= bouncer.pool_size


async def test_a_slow_request_is_cut_off_and_its_statement_cancelled(
    bouncer: Bouncer, database_url: str, alice: User
) -> None:
    settings = pooled_settings(bouncer, database_url, app="tests.apps.slow:declare", request_timeout=0.5)
    async with serve(settings) as (_, client):
        r = await client.post(
            "/api/v1/pipeline_probes", json={"mode": "sleep", "seconds": 5}, headers=alice.headers
        )
        assert r.status_code == 504, r.text

        async def cancelled() -> bool:
            rows = await direct(
                database_url, "SELECT count(*) AS n FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%'"
            )
            return bool(rows[0]["n"] == 0)

        # The cancel request went through PgBouncer to the server: pg_sleep(5) ends long before its time.
        await eventually(cancelled, "pg_sleep still runs after the 504", timeout=2.0)
        r = await client.post("/api/v1/pipeline_probes", json={"mode": "ok"}, headers=alice.headers)
        assert r.status_code == 201, r.text


# ----- what needs the settings ----------------------------------------------------------------------------


async def test_without_transaction_mode_pgbouncer_refuses_the_connection(
    bouncer: Bouncer, database_url: str, alice: User
) -> None:
    # The pool's session settings (statement_timeout) are startup parameters PgBouncer does not accept.
    app = create_app(make_settings(bouncer.url))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as client:
            r = await client.get("/api/v1/projects", headers=alice.headers)
            assert r.status_code == 503, r.text
            assert r.json()["code"] == "service_unavailable"
    finally:
        await app.aclose()


def test_migrations_run_over_the_direct_url(database_url: str) -> None:
    # The pooled URL leads nowhere: migrating can only succeed over the direct one.
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    settings = make_settings(nowhere, database_direct_url=database_url, database_pool_mode="transaction")
    migrate_all(settings)  # idempotent: the database is already migrated
    heads = asyncio.run(direct(database_url, "SELECT version_num FROM alembic_version"))
    assert heads
