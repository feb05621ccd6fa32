"""API1:2023 Broken object level authorization.

Generated from the router: every operation whose path names an object is called by another user (Bob)
with Alice's object, and again with ids that name nothing. The two answers must be the same (status and
body, request id aside): 404 where the route is open to users, 403 where it needs a permission users do
not have. Nothing changes and no event is written. Lists, filters, the audit log and the live stream
never show Bob anything of Alice's.

The role-by-role table of the demo app (stranger, viewer, editor, owner, admin on every projects, tasks
and members route) is tests/api/test_visibility.py; this module adds every other route with an id
(sessions, admin users, webhooks, deliveries), HEAD, PUT, nested-route mismatches and the event feeds.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from rampart.app import Rampart
from tests.conftest import User
from tests.events.test_stream import StreamClient, eventually
from tests.security.scene import TARGETS, Scene, created
from tests.security.surface import API, OPERATIONS, Operation, ids, without_request_id

WITH_ID = [op for op in OPERATIONS if op.params and not op.public]
# Lists a user may read: what they return must hold nothing of another user's.
LISTS = [
    op
    for op in OPERATIONS
    if op.method == "GET" and not op.params and not op.public and not op.admin_only and not op.streaming
]


# Bodies that pass validation, so the answer is about the object and not the body (422 comes first).
BODIES: dict[str, Callable[[Scene], dict[str, Any]]] = {
    "projects.update": lambda s: {"name": "Taken by Bob"},
    "tasks.update": lambda s: {"title": "Taken by Bob", "status": "done"},
    "members.create": lambda s: {"user_id": s.bob.id, "role": "editor"},
    "users.update": lambda s: {"role": "admin"},
    "webhooks.update": lambda s: {"active": True, "url": "http://93.184.216.34/bob"},
}


def test_every_route_with_an_id_has_a_target() -> None:
    assert sorted({op.path for op in WITH_ID} - set(TARGETS)) == []
    writes = {
        op.name
        for op in WITH_ID
        if op.method in ("POST", "PATCH", "PUT") and not op.name.endswith(("impersonate", "redeliver"))
    }
    assert sorted(writes - set(BODIES)) == []


async def _events_by(app: Rampart, user: User) -> int:
    count: int = await app.services.db.fetchval(
        "SELECT count(*) FROM events WHERE actor_id = $1", uuid.UUID(user.id)
    )
    return count


async def _snapshot(client: httpx.AsyncClient, app: Rampart, scene: Scene) -> list[Any]:
    """Everything of Alice's that Bob might change, as Alice and the admin see it."""
    v, alice = scene.values, scene.alice
    project = await client.get(f"{API}/projects/{v['project']}", headers=alice.headers)
    task = await client.get(f"{API}/tasks/{v['task']}", headers=alice.headers)
    members = await client.get(f"{API}/projects/{v['project']}/members", headers=alice.headers)
    hook = await client.get(f"{API}/admin/webhooks/{v['webhook']}", headers=scene.admin.headers)
    user = await client.get(f"{API}/admin/users/{v['alice']}", headers=scene.admin.headers)
    session = await app.services.db.fetchval(
        "SELECT revoked_at IS NULL FROM sessions WHERE id = $1", uuid.UUID(v["session"])
    )
    deliveries = await app.services.db.fetchval(
        "SELECT count(*) FROM event_deliveries WHERE subscriber = $1", f"webhook:{v['webhook']}"
    )
    return [
        project.json()["data"],
        task.json()["data"],
        members.json()["data"],
        hook.json()["data"],
        user.json()["data"],
        session,
        deliveries,
    ]


@pytest.mark.parametrize("op", WITH_ID, ids=ids(WITH_ID))
async def test_another_users_object_answers_like_a_missing_one(
    client: httpx.AsyncClient, app: Rampart, scene: Scene, op: Operation
) -> None:
    bob = scene.bob
    body = BODIES[op.name](scene) if op.name in BODIES else None
    before, state = await _events_by(app, bob), await _snapshot(client, app, scene)
    real = await client.request(op.method, op.url(TARGETS[op.path](scene)), json=body, headers=bob.headers)
    ghost = await client.request(op.method, op.url(), json=body, headers=bob.headers)

    expected = 403 if op.admin_only else 404
    assert real.status_code == ghost.status_code == expected, (real.text, ghost.text)
    assert without_request_id(real.json()) == without_request_id(ghost.json())
    assert await _events_by(app, bob) == before
    assert await _snapshot(client, app, scene) == state
    if op.method == "GET":  # HEAD answers the same, without a body
        head = await client.head(op.url(TARGETS[op.path](scene)), headers=bob.headers)
        assert head.status_code == expected
        assert head.content == b""


@pytest.mark.parametrize("op", [op for op in WITH_ID if op.method == "GET"], ids=lambda op: op.path)
async def test_put_is_not_a_way_around(client: httpx.AsyncClient, scene: Scene, op: Operation) -> None:
    """There is no PUT: 405 for Alice's object and for nothing alike, before any lookup."""
    real = await client.put(op.url(TARGETS[op.path](scene)), json={"name": "x"}, headers=scene.bob.headers)
    ghost = await client.put(op.url(), json={"name": "x"}, headers=scene.bob.headers)
    assert real.status_code == ghost.status_code == 405
    assert without_request_id(real.json()) == without_request_id(ghost.json())


@pytest.mark.parametrize("op", LISTS, ids=ids(LISTS))
async def test_lists_hold_nothing_of_another_user(
    client: httpx.AsyncClient, scene: Scene, op: Operation
) -> None:
    r = await client.get(op.url(), headers=scene.bob.headers)
    assert r.status_code == 200, r.text
    for secret in scene.secrets:
        assert secret not in r.text
    # Alice's answer to the same request holds some of them, so the check above can fail.
    mine = await client.get(op.url(), headers=scene.alice.headers)
    assert any(secret in mine.text for secret in scene.secrets)


@pytest.mark.parametrize(
    "query",
    [
        "/tasks?project_id={project}",
        "/tasks?project_id[in]={project},{task}",
        "/projects?id={project}",
        "/events?resource_id={project}",
        "/events?resource_id={task}",
        "/events?actor_id={alice}",
        "/events?resource=projects&limit=100",
        "/events?after=00000000-0000-0000-0000-000000000000&limit=100",
        "/projects/{project}/members?user_id={carol}",
    ],
)
async def test_filters_naming_another_users_objects_find_nothing(
    client: httpx.AsyncClient, scene: Scene, query: str
) -> None:
    url = API + query.format(**scene.values)
    r = await client.get(url, headers=scene.bob.headers)
    assert r.status_code in (200, 404), r.text
    if r.status_code == 200:
        assert r.json()["data"] == [] or all(s not in r.text for s in scene.secrets)
    seen = await client.get(url, headers=scene.alice.headers)
    assert seen.status_code == 200
    assert seen.json()["data"] != []  # the same query finds it for Alice


async def test_nested_routes_do_not_mix_parents(
    client: httpx.AsyncClient, app: Rampart, scene: Scene
) -> None:
    """Bob's own project as the parent, Alice's member as the child: nothing found, nothing removed."""
    bob, v = scene.bob, scene.values
    own = created(await client.post(f"{API}/projects", json={"name": "Bob's"}, headers=bob.headers))
    r = await client.delete(f"{API}/projects/{own['id']}/members/{v['carol']}", headers=bob.headers)
    assert r.status_code == 404
    r = await client.get(
        f"{API}/projects/{own['id']}/members", params={"user_id": v["carol"]}, headers=bob.headers
    )
    assert r.json()["data"] == []
    r = await client.post(
        f"{API}/tasks", json={"project_id": v["project"], "title": "into Alice's"}, headers=bob.headers
    )
    assert r.status_code == 422
    assert [e["field"] for e in r.json()["errors"]] == ["project_id"]
    members = await client.get(f"{API}/projects/{v['project']}/members", headers=scene.alice.headers)
    assert [m["user_id"] for m in members.json()["data"]] == [v["carol"]]


async def test_the_live_stream_shows_bob_nothing_of_alices(
    app: Rampart, client: httpx.AsyncClient, scene: Scene
) -> None:
    """Bob follows the stream, filtered on Alice's project and unfiltered; Alice changes her task."""
    v = scene.values
    watchers = {
        "alice": StreamClient(scene.alice.headers, {"resource_id": v["task"]}),
        "bob_filtered": StreamClient(scene.bob.headers, {"resource_id": v["task"]}),
        "bob": StreamClient(scene.bob.headers),
    }
    tasks = {name: w.run(app) for name, w in watchers.items()}
    try:
        await eventually(lambda: all(w.status == 200 for w in watchers.values()))
        await asyncio.sleep(0.2)  # the streams have read the log once: what follows is live
        r = await client.patch(f"{API}/tasks/{v['task']}", json={"priority": 3}, headers=scene.alice.headers)
        assert r.status_code == 200
        await eventually(lambda: watchers["alice"].ids(v["task"]) != [])
        await asyncio.sleep(0.5)  # time for a leak to arrive, were there one
    finally:
        for name, w in watchers.items():
            w.close()
            async with asyncio.timeout(5):
                await tasks[name]
        r = await client.patch(f"{API}/tasks/{v['task']}", json={"priority": 0}, headers=scene.alice.headers)
    assert watchers["bob_filtered"].events == []
    assert all(e["resource_id"] not in (v["task"], v["project"]) for e in watchers["bob"].events)
