"""GET /api/v1/events: the audit log, filtered in SQL by what the caller may see."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import MakeUser, User


async def _project(client: httpx.AsyncClient, owner: User) -> dict[str, Any]:
    r = await client.post("/api/v1/projects", json={"name": "Log"}, headers=owner.headers)
    assert r.status_code == 201, r.text
    project: dict[str, Any] = r.json()["data"]
    return project


async def _task(client: httpx.AsyncClient, owner: User, project_id: str) -> dict[str, Any]:
    r = await client.post(
        "/api/v1/tasks", json={"project_id": project_id, "title": "T"}, headers=owner.headers
    )
    assert r.status_code == 201, r.text
    task: dict[str, Any] = r.json()["data"]
    return task


async def _events(client: httpx.AsyncClient, user: User, **params: Any) -> list[dict[str, Any]]:
    r = await client.get("/api/v1/events", params=params, headers=user.headers)
    assert r.status_code == 200, r.text
    data: list[dict[str, Any]] = r.json()["data"]
    return data


async def test_owner_sees_the_history_of_a_task_stranger_sees_nothing_admin_sees_all(
    client: httpx.AsyncClient, alice: User, bob: User, admin: User
) -> None:
    project = await _project(client, alice)
    task = await _task(client, alice, project["id"])
    r = await client.patch(f"/api/v1/tasks/{task['id']}", json={"status": "done"}, headers=alice.headers)
    assert r.status_code == 200

    mine = await _events(client, alice, resource_id=task["id"])
    assert [e["type"] for e in mine] == ["tasks.created", "tasks.updated"]
    assert mine[1]["changes"] == {"status": {"from": "todo", "to": "done"}}
    assert mine[0]["actor_id"] == alice.id
    assert mine[0]["resource"] == "tasks"
    assert mine[0]["data"]["title"] == "T"
    assert mine[0]["occurred_at"].endswith("Z")
    assert await _events(client, bob, resource_id=task["id"]) == []
    assert await _events(client, bob, actor_id=alice.id) == []
    assert [e["type"] for e in await _events(client, admin, resource_id=task["id"])] == [
        "tasks.created",
        "tasks.updated",
    ]


async def test_a_deleted_object_keeps_its_history_for_those_who_could_see_it(
    client: httpx.AsyncClient, alice: User, bob: User, admin: User
) -> None:
    project = await _project(client, alice)
    task = await _task(client, alice, project["id"])
    assert (await client.delete(f"/api/v1/tasks/{task['id']}", headers=alice.headers)).status_code == 204
    assert [e["type"] for e in await _events(client, alice, resource_id=task["id"])] == [
        "tasks.created",
        "tasks.deleted",
    ]
    assert await _events(client, bob, resource_id=task["id"]) == []
    # The whole project goes: its owner still sees every event of it, the stranger none.
    assert (
        await client.delete(f"/api/v1/projects/{project['id']}", headers=alice.headers)
    ).status_code == 204
    assert [e["type"] for e in await _events(client, alice, resource_id=project["id"])] == [
        "projects.created",
        "projects.deleted",
    ]
    assert await _events(client, bob, resource_id=project["id"]) == []
    assert len(await _events(client, admin, resource_id=project["id"])) == 2


async def test_becoming_a_member_reveals_the_project_history(
    client: httpx.AsyncClient, alice: User, bob: User
) -> None:
    project = await _project(client, alice)
    task = await _task(client, alice, project["id"])
    assert await _events(client, bob, resource_id=task["id"]) == []
    r = await client.post(
        f"/api/v1/projects/{project['id']}/members",
        json={"user_id": bob.id, "role": "viewer"},
        headers=alice.headers,
    )
    assert r.status_code == 201, r.text
    assert [e["type"] for e in await _events(client, bob, resource_id=task["id"])] == ["tasks.created"]
    assert [e["type"] for e in await _events(client, bob, actor_id=alice.id, resource="projects")] == [
        "projects.created"
    ]


async def test_filters_and_the_after_cursor_page_through_the_log(
    client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    carol = await make_user()
    project = await _project(client, carol)
    tasks = [await _task(client, carol, project["id"]) for _ in range(5)]
    created = await _events(client, carol, actor_id=carol.id, type="tasks.created")
    assert [e["resource_id"] for e in created] == [t["id"] for t in tasks]
    assert await _events(client, carol, actor_id=carol.id, type="projects.created", resource="tasks") == []

    seen: list[str] = []
    after: str | None = None
    for _ in range(10):  # bounded: 5 events in pages of 2 take 3 pages
        params: dict[str, Any] = {"actor_id": carol.id, "resource": "tasks", "limit": 2}
        if after:
            params["after"] = after
        r = await client.get("/api/v1/events", params=params, headers=carol.headers)
        assert r.status_code == 200, r.text
        body = r.json()
        seen += [e["id"] for e in body["data"]]
        assert body["meta"]["limit"] == 2
        after = body["meta"]["next_cursor"]
        if after is None:
            break
    assert seen == [e["id"] for e in created]
    assert seen == sorted(seen)  # UUIDv7: id order is time order


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=abc", "limit"),
        ("after=not-an-id", "after"),
        ("actor_id=12", "actor_id"),
        ("resource=Bad-Name", "resource"),
        ("type=Tasks", "type"),
        ("status=todo", "status"),
        ("resource=tasks&resource=projects", "resource"),
        ("resource_id=a%00b", "resource_id"),  # was a 500 (PostgreSQL text holds no NUL): verify-fuzz
        ("resource_id=" + "x" * 201, "resource_id"),
    ],
)
async def test_a_bad_query_is_a_400_naming_the_parameter(
    client: httpx.AsyncClient, alice: User, query: str, param: str
) -> None:
    r = await client.get(f"/api/v1/events?{query}", headers=alice.headers)
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["code"] == "invalid_query"
    assert [e["field"] for e in body["errors"]] == [param]


async def test_the_log_needs_authentication_and_is_documented(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/events")
    assert r.status_code == 401
    spec = (await client.get("/openapi.json")).json()
    operation = spec["paths"]["/api/v1/events"]["get"]
    assert {p["name"] for p in operation["parameters"] if "name" in p} >= {
        "resource",
        "resource_id",
        "type",
        "actor_id",
        "after",
        "limit",
    }
