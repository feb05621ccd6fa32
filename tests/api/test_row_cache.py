"""The row and page caches over HTTP, with two app instances on one database standing for two workers.

What is promised (docs/decisions/0009-row-cache.md): the writer's own worker reads its write at once;
other workers (and other instances) see it once the database's change notification arrives, which is
bounded here at 1 s; nobody is ever served a row they may not see; direct SQL writes are seen too.
Every test runs with each backend: per-worker memory, and Redis shared by both "workers".
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from rampart.app import Rampart, create_app
from rampart.errors import NotFound
from tests.conftest import REDIS_URL, User, context_of, make_settings, wait_for_cache

BOUND = 1.0  # seconds: the staleness bound we hold other workers to
BACKENDS = {"memory": {"cache": "memory"}, "redis": {"cache": "redis", "redis_url": REDIS_URL}}


@pytest.fixture(scope="module", params=list(BACKENDS))
def backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    return BACKENDS[request.param]


@pytest.fixture(scope="module")
async def app(database_url: str, backend: dict[str, Any]) -> AsyncIterator[Rampart]:
    """The first worker, with the cache backend under test."""
    application = create_app(make_settings(database_url, **backend))
    await application.startup()
    await wait_for_cache(application)
    yield application
    await application.aclose()


@pytest.fixture(scope="module")
async def client(app: Rampart) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://w1") as http:
        yield http


@pytest.fixture
async def second(
    database_url: str, backend: dict[str, Any]
) -> AsyncIterator[tuple[Rampart, httpx.AsyncClient]]:
    """Another worker: its own process state (pool, caches), the same database (and Redis)."""
    app = create_app(make_settings(database_url, **backend))
    await app.startup()
    await wait_for_cache(app)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://w2") as http:
        yield app, http
    await app.aclose()


async def outside_sql(database_url: str, sql: str, *args: Any) -> None:
    """A write by another program (its own session): Rampart hears of it from the table's trigger."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(sql, *args)
    finally:
        await conn.close()


async def eventually(check: Callable[[], Awaitable[bool]], *, within: float = BOUND) -> float:
    """Poll `check` until it holds; return how long it took (fails past `within`)."""
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < within, f"not true within {within} s"
        await asyncio.sleep(0.01)
    return time.monotonic() - started


async def project_with_task(client: httpx.AsyncClient, owner: User) -> tuple[str, dict[str, Any]]:
    r = await client.post("/api/v1/projects", json={"name": "cached"}, headers=owner.headers)
    project = r.json()["data"]["id"]
    r = await client.post("/api/v1/tasks", json={"project_id": project, "title": "t"}, headers=owner.headers)
    assert r.status_code == 201, r.text
    return project, r.json()["data"]


async def test_a_repeated_read_is_served_from_the_cache(
    client: httpx.AsyncClient, app: Rampart, alice: User
) -> None:
    _, task = await project_with_task(client, alice)
    cache = app.services.cache
    assert cache is not None
    assert cache.enabled
    first = await client.get(f"/api/v1/tasks/{task['id']}", headers=alice.headers)
    hits = cache.stats.hits
    again = await client.get(f"/api/v1/tasks/{task['id']}", headers=alice.headers)
    assert cache.stats.hits == hits + 1
    assert again.json() == first.json()
    assert again.headers["etag"] == '"1"'
    not_modified = await client.get(
        f"/api/v1/tasks/{task['id']}", headers={**alice.headers, "If-None-Match": '"1"'}
    )
    assert not_modified.status_code == 304


async def test_a_row_read_into_the_cache_is_the_json_the_api_writes_elsewhere(
    client: httpx.AsyncClient, app: Rampart, alice: User
) -> None:
    """A miss keeps the JSON PostgreSQL wrote for the row: it must be byte for byte what the service writes
    with orjson everywhere else (escapes, key order, no spaces), for text that tests escaping."""
    project, _ = await project_with_task(client, alice)
    title = 'q"uote\\back\x01ctl\ttab\u2028sep \U0001f600 </script> caf\u00e9\x7f'
    r = await client.post(
        "/api/v1/tasks", json={"project_id": project, "title": title}, headers=alice.headers
    )
    assert r.status_code == 201, r.text
    created = r.json()["data"]
    url = f"/api/v1/tasks/{created['id']}"
    cache = app.services.cache
    assert cache is not None
    missed = cache.stats.misses
    first, again = (
        (await client.get(url, headers=alice.headers)),
        (await client.get(url, headers=alice.headers)),
    )
    assert cache.stats.misses > missed  # it was read from the database
    assert first.json()["data"] == created
    assert first.json()["data"]["title"] == title
    assert first.content == again.content == orjson.dumps({"data": orjson.loads(first.content)["data"]})


async def test_a_cached_row_is_never_served_to_someone_who_may_not_see_it(
    client: httpx.AsyncClient, app: Rampart, alice: User, bob: User, admin: User
) -> None:
    _, task = await project_with_task(client, alice)
    url = f"/api/v1/tasks/{task['id']}"
    for _ in range(3):  # alice's reads fill the cache; bob's must still be refused every time
        assert (await client.get(url, headers=alice.headers)).status_code == 200
        assert (await client.get(url, headers=bob.headers)).status_code == 404
    assert (await client.get(url, headers=admin.headers)).status_code == 200


async def test_misses_of_one_step_are_one_statement_and_each_caller_gets_their_own_answer(
    client: httpx.AsyncClient,
    alice: User,
    bob: User,
    admin: User,
    second: tuple[Rampart, httpx.AsyncClient],
    backend: dict[str, Any],
) -> None:
    """A cold worker's misses asked for together go out as one statement (rampart.db.batch), whose
    visibility verdict is each caller's own: the owner sees the rows, a stranger gets 404 for the same
    rows in the same statement, an admin sees them, and an id that does not exist is a 404."""
    tasks = [(await project_with_task(client, alice))[1] for _ in range(3)]
    cold, _ = second
    manager = cold.services.managers["tasks"]
    asks = [(user, uuid.UUID(t["id"])) for t in tasks for user in (alice, bob, admin)]
    asks.append((alice, uuid.uuid4()))
    before = dataclasses.replace(manager.misses.stats)
    answers = await asyncio.gather(
        *(manager.get_json(context_of(cold, user), key) for user, key in asks), return_exceptions=True
    )
    if backend["cache"] == "memory":  # with Redis each lookup's answer arrives in its own time
        # One statement per shape: the users' (a visibility rule bound to the caller), the admin's (none).
        after = manager.misses.stats
        assert (after.statements, after.rows, after.alone) == (
            before.statements + 2,
            before.rows + len(asks),
            before.alone,
        ), after
    by_id = {t["id"]: t for t in tasks}
    for (user, key), answer in zip(asks, answers, strict=True):
        if user is bob or str(key) not in by_id:
            assert isinstance(answer, NotFound), (user.email, answer)
        else:
            assert not isinstance(answer, BaseException), answer
            assert orjson.loads(answer[1]) == by_id[str(key)]
    # What was kept is each caller's verdict: bob is still refused from the cache, alice still served.
    url = f"/api/v1/tasks/{tasks[0]['id']}"
    assert (await second[1].get(url, headers=bob.headers)).status_code == 404
    assert (await second[1].get(url, headers=alice.headers)).json()["data"] == tasks[0]


async def test_the_writers_worker_reads_its_write_at_once_and_another_within_the_bound(
    client: httpx.AsyncClient, alice: User, second: tuple[Rampart, httpx.AsyncClient]
) -> None:
    _, other = second
    _, task = await project_with_task(client, alice)
    url = f"/api/v1/tasks/{task['id']}"
    for http in (client, other):  # both workers hold version 1
        assert (await http.get(url, headers=alice.headers)).json()["data"]["version"] == 1
    r = await client.patch(url, json={"title": "changed"}, headers=alice.headers)
    assert r.status_code == 200
    assert (await client.get(url, headers=alice.headers)).json()["data"]["title"] == "changed"

    async def other_sees_it() -> bool:
        return (await other.get(url, headers=alice.headers)).json()["data"]["version"] == 2

    await eventually(other_sees_it)


async def test_losing_membership_ends_access_on_every_worker(
    client: httpx.AsyncClient, alice: User, bob: User, second: tuple[Rampart, httpx.AsyncClient]
) -> None:
    _, other = second
    project, task = await project_with_task(client, alice)
    url = f"/api/v1/tasks/{task['id']}"
    r = await client.post(
        f"/api/v1/projects/{project}/members",
        json={"user_id": bob.id, "role": "viewer"},
        headers=alice.headers,
    )
    assert r.status_code == 201

    async def other_lets_bob_in() -> bool:
        return (await other.get(url, headers=bob.headers)).status_code == 200

    await eventually(other_lets_bob_in)  # a cached "no" from before the membership must not linger
    assert (await client.get(url, headers=bob.headers)).status_code == 200
    r = await client.delete(f"/api/v1/projects/{project}/members/{bob.id}", headers=alice.headers)
    assert r.status_code == 204
    assert (await client.get(url, headers=bob.headers)).status_code == 404  # the writer's worker: at once

    async def other_shuts_bob_out() -> bool:
        return (await other.get(url, headers=bob.headers)).status_code == 404

    await eventually(other_shuts_bob_out)


async def test_a_direct_sql_write_is_seen_too(
    client: httpx.AsyncClient, alice: User, database_url: str
) -> None:
    _, task = await project_with_task(client, alice)
    url = f"/api/v1/tasks/{task['id']}"
    assert (await client.get(url, headers=alice.headers)).json()["data"]["title"] == "t"
    await outside_sql(
        database_url, "UPDATE tasks SET title = 'by sql', version = version + 1 WHERE id = $1", task["id"]
    )

    async def seen() -> bool:
        return (await client.get(url, headers=alice.headers)).json()["data"]["title"] == "by sql"

    await eventually(seen)
    await outside_sql(database_url, "DELETE FROM tasks WHERE id = $1", task["id"])

    async def gone() -> bool:
        return (await client.get(url, headers=alice.headers)).status_code == 404

    await eventually(gone)


async def test_a_row_changed_by_a_foreign_key_action_is_not_served_stale(
    client: httpx.AsyncClient, alice: User, make_user: Any, database_url: str
) -> None:
    """Deleting a user sets `assignee_id` to NULL in their tasks (ON DELETE SET NULL) without a new
    version: the cached copy of such a task must not be served."""
    bob = await make_user()
    r = await client.post("/api/v1/projects", json={"name": "fk"}, headers=alice.headers)
    project = r.json()["data"]["id"]
    r = await client.post(
        "/api/v1/tasks",
        json={"project_id": project, "title": "t", "assignee_id": bob.id},
        headers=alice.headers,
    )
    url = f"/api/v1/tasks/{r.json()['data']['id']}"
    assert (await client.get(url, headers=alice.headers)).json()["data"]["assignee_id"] == bob.id
    assert (await client.get(url, headers=alice.headers)).json()["data"]["assignee_id"] == bob.id  # cached
    await outside_sql(database_url, "DELETE FROM users WHERE id = $1", uuid.UUID(bob.id))

    async def unassigned() -> bool:
        return (await client.get(url, headers=alice.headers)).json()["data"]["assignee_id"] is None

    await eventually(unassigned)


async def test_a_lost_feed_disables_the_cache_until_it_is_back(
    client: httpx.AsyncClient, alice: User, second: tuple[Rampart, httpx.AsyncClient]
) -> None:
    other_app, other = second
    cache = other_app.services.cache
    assert cache is not None
    _, task = await project_with_task(client, alice)
    url = f"/api/v1/tasks/{task['id']}"
    await other.get(url, headers=alice.headers)
    # Cut every listener connection (both workers'): notifications sent meanwhile would be lost.
    await other_app.services.db.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE application_name = 'rampart-listener' AND datname = current_database()"
    )

    async def disabled() -> bool:
        return not cache.enabled

    await eventually(disabled, within=2.0)
    clears = cache.stats.clears
    r = await client.patch(url, json={"title": "while down"}, headers=alice.headers)
    assert r.status_code == 200
    assert (await other.get(url, headers=alice.headers)).json()["data"]["title"] == "while down"

    async def enabled() -> bool:
        return cache.enabled

    await eventually(enabled, within=5.0)  # the listener reconnects by itself
    assert cache.stats.clears > clears  # and everything held before is forgotten
    assert (await other.get(url, headers=alice.headers)).json()["data"]["title"] == "while down"


async def test_concurrent_writers_and_readers_on_two_workers_converge(
    client: httpx.AsyncClient, app: Rampart, alice: User, second: tuple[Rampart, httpx.AsyncClient]
) -> None:
    _, other = second
    _, task = await project_with_task(client, alice)
    url = f"/api/v1/tasks/{task['id']}"
    seen: dict[str, list[int]] = {"w1": [], "w2": []}

    async def writer(name: str, http: httpx.AsyncClient, n: int) -> None:
        for i in range(n):
            r = await http.patch(url, json={"title": f"{name}-{i}"}, headers=alice.headers)
            assert r.status_code == 200

    async def reader(name: str, http: httpx.AsyncClient, n: int) -> None:
        for _ in range(n):
            r = await http.get(url, headers=alice.headers)
            assert r.status_code == 200
            seen[name].append(r.json()["data"]["version"])

    await asyncio.gather(
        writer("w1", client, 10), writer("w2", other, 10), reader("w1", client, 40), reader("w2", other, 40)
    )
    final = await app.services.db.fetchval("SELECT version FROM tasks WHERE id = $1", task["id"])
    assert final == 21  # 1 + 20 updates, none lost
    assert all(1 <= v <= 21 for values in seen.values() for v in values)

    async def both_final() -> bool:
        versions = [
            (await h.get(url, headers=alice.headers)).json()["data"]["version"] for h in (client, other)
        ]
        return versions == [21, 21]

    await eventually(both_final)


async def test_reads_are_not_cached_while_a_resource_table_lacks_its_trigger(database_url: str) -> None:
    """The library test app's tables were created by hand, without `rampart migrate`'s change triggers."""
    import asyncpg

    from tests.apps.library import CREATE_TABLES

    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(CREATE_TABLES)
    finally:
        await conn.close()
    app = create_app(make_settings(database_url, app="tests.apps.library:declare"))
    await app.startup()
    try:
        listener = app.services.background[0]
        started = time.monotonic()
        while not getattr(listener, "connected", False):
            assert time.monotonic() - started < 5, "the listener did not connect"
            await asyncio.sleep(0.02)
        assert app.services.cache is not None
        assert not app.services.cache.enabled
    finally:
        await app.aclose()


# ----- list pages ------------------------------------------------------------------------------------
def tasks_of(project: str) -> str:
    return f"/api/v1/tasks?project_id={project}&sort=title"


def titles(r: httpx.Response) -> list[str]:
    assert r.status_code == 200, r.text
    return [t["title"] for t in r.json()["data"]]


async def test_a_repeated_list_is_served_from_the_page_cache(
    client: httpx.AsyncClient, app: Rampart, alice: User
) -> None:
    project, _ = await project_with_task(client, alice)
    cache = app.services.cache
    assert cache is not None
    first = await client.get(tasks_of(project), headers=alice.headers)
    hits = cache.stats.page_hits
    again = await client.get(tasks_of(project), headers=alice.headers)
    assert cache.stats.page_hits == hits + 1  # the notifications of our own writes did not drop it
    assert again.json() == first.json()
    hits = cache.stats.page_hits
    other_query = await client.get(tasks_of(project) + "&limit=5", headers=alice.headers)
    assert cache.stats.page_hits == hits  # another query is another page
    assert other_query.json()["data"] == first.json()["data"]


async def test_a_cached_page_is_never_served_to_another_caller(
    client: httpx.AsyncClient, alice: User, bob: User, admin: User
) -> None:
    project, _ = await project_with_task(client, alice)
    for _ in range(3):  # alice's reads fill the cache; bob's answer must stay his own
        assert titles(await client.get(tasks_of(project), headers=alice.headers)) == ["t"]
        assert titles(await client.get(tasks_of(project), headers=bob.headers)) == []
    assert titles(await client.get(tasks_of(project), headers=admin.headers)) == ["t"]


async def test_a_write_changes_the_page_on_the_writers_worker_at_once_and_elsewhere_within_the_bound(
    client: httpx.AsyncClient, alice: User, second: tuple[Rampart, httpx.AsyncClient]
) -> None:
    _, other = second
    project, task = await project_with_task(client, alice)
    for http in (client, other):  # both workers hold the page
        assert titles(await http.get(tasks_of(project), headers=alice.headers)) == ["t"]
    r = await client.patch(f"/api/v1/tasks/{task['id']}", json={"title": "u"}, headers=alice.headers)
    assert r.status_code == 200
    r = await client.post("/api/v1/tasks", json={"project_id": project, "title": "v"}, headers=alice.headers)
    assert r.status_code == 201
    assert titles(await client.get(tasks_of(project), headers=alice.headers)) == ["u", "v"]

    async def other_sees_them() -> bool:
        return titles(await other.get(tasks_of(project), headers=alice.headers)) == ["u", "v"]

    await eventually(other_sees_them)
    r = await other.delete(f"/api/v1/tasks/{task['id']}", headers=alice.headers)
    assert r.status_code == 204
    assert titles(await other.get(tasks_of(project), headers=alice.headers)) == ["v"]

    async def first_sees_the_delete() -> bool:
        return titles(await client.get(tasks_of(project), headers=alice.headers)) == ["v"]

    await eventually(first_sees_the_delete)


async def test_a_membership_change_changes_the_pages_of_who_gains_or_loses_access(
    client: httpx.AsyncClient, alice: User, bob: User, second: tuple[Rampart, httpx.AsyncClient]
) -> None:
    _, other = second
    project, _ = await project_with_task(client, alice)
    for http in (client, other):  # a cached empty page for bob on both workers
        assert titles(await http.get(tasks_of(project), headers=bob.headers)) == []
    r = await client.post(
        f"/api/v1/projects/{project}/members",
        json={"user_id": bob.id, "role": "viewer"},
        headers=alice.headers,
    )
    assert r.status_code == 201
    assert titles(await client.get(tasks_of(project), headers=bob.headers)) == ["t"]

    async def other_lets_bob_see() -> bool:
        return titles(await other.get(tasks_of(project), headers=bob.headers)) == ["t"]

    await eventually(other_lets_bob_see)
    r = await other.delete(f"/api/v1/projects/{project}/members/{bob.id}", headers=alice.headers)
    assert r.status_code == 204
    assert titles(await other.get(tasks_of(project), headers=bob.headers)) == []

    async def first_shuts_bob_out() -> bool:
        return titles(await client.get(tasks_of(project), headers=bob.headers)) == []

    await eventually(first_shuts_bob_out)


async def test_a_direct_sql_write_changes_the_page_too(
    client: httpx.AsyncClient, alice: User, database_url: str
) -> None:
    project, task = await project_with_task(client, alice)
    assert titles(await client.get(tasks_of(project), headers=alice.headers)) == ["t"]
    await outside_sql(
        database_url, "UPDATE tasks SET title = 'by sql', version = version + 1 WHERE id = $1", task["id"]
    )

    async def seen() -> bool:
        return titles(await client.get(tasks_of(project), headers=alice.headers)) == ["by sql"]

    await eventually(seen)


async def test_concurrent_writers_and_list_readers_on_two_workers_converge(
    client: httpx.AsyncClient, app: Rampart, alice: User, second: tuple[Rampart, httpx.AsyncClient]
) -> None:
    _, other = second
    project, _ = await project_with_task(client, alice)
    created: list[str] = []
    pages: list[list[str]] = []

    async def writer(name: str, http: httpx.AsyncClient, n: int) -> None:
        for i in range(n):
            body = {"project_id": project, "title": f"{name}-{i:02d}"}
            r = await http.post("/api/v1/tasks", json=body, headers=alice.headers)
            assert r.status_code == 201
            created.append(r.json()["data"]["title"])

    async def reader(http: httpx.AsyncClient, n: int) -> None:
        for _ in range(n):
            pages.append(titles(await http.get(tasks_of(project) + "&limit=100", headers=alice.headers)))

    await asyncio.gather(
        writer("w1", client, 10), writer("w2", other, 10), reader(client, 30), reader(other, 30)
    )
    stored = await app.services.db.fetch("SELECT title FROM tasks WHERE project_id = $1", project)
    expected = sorted(["t", *created])
    assert sorted(r["title"] for r in stored) == expected  # every acknowledged create is stored
    # Every page a reader got was a real state: sorted, and only ever rows that were created.
    assert all(page == sorted(page) and set(page) <= set(expected) for page in pages)

    async def both_final() -> bool:
        got = [
            titles(await h.get(tasks_of(project) + "&limit=100", headers=alice.headers))
            for h in (client, other)
        ]
        return got == [expected, expected]

    await eventually(both_final)
