"""The demo app's main path end to end: a project, a member, tasks, a page, an update, a delete."""

from __future__ import annotations

import httpx

from tests.conftest import User


async def test_project_task_lifecycle(client: httpx.AsyncClient, alice: User, bob: User) -> None:
    r = await client.post("/api/v1/projects", json={"name": "Apollo"}, headers=alice.headers)
    assert r.status_code == 201, r.text
    project = r.json()["data"]
    assert r.headers["location"] == f"/api/v1/projects/{project['id']}"
    assert project["owner_id"] == alice.id
    assert project["version"] == 1

    r = await client.post(
        "/api/v1/tasks",
        json={"project_id": project["id"], "title": "T1", "priority": 3},
        headers=alice.headers,
    )
    assert r.status_code == 201, r.text
    task = r.json()["data"]
    assert task["status"] == "todo"
    assert task["due_date"] is None
    assert task["created_at"].endswith("Z")

    # bob cannot see it until he is a member
    r = await client.get(f"/api/v1/tasks/{task['id']}", headers=bob.headers)
    assert r.status_code == 404
    r = await client.post(
        f"/api/v1/projects/{project['id']}/members",
        json={"user_id": bob.id, "role": "viewer"},
        headers=alice.headers,
    )
    assert r.status_code == 201, r.text
    r = await client.get(f"/api/v1/tasks/{task['id']}", headers=bob.headers)
    assert r.status_code == 200
    assert r.headers["etag"] == '"1"'
    # a viewer may not write
    r = await client.patch(f"/api/v1/tasks/{task['id']}", json={"status": "done"}, headers=bob.headers)
    assert r.status_code == 403

    r = await client.patch(
        f"/api/v1/tasks/{task['id']}", json={"status": "done"}, headers={**alice.headers, "If-Match": '"1"'}
    )
    assert r.status_code == 200
    assert r.json()["data"]["version"] == 2

    r = await client.get("/api/v1/tasks?status=done&fields=id,status", headers=bob.headers)
    assert r.status_code == 200
    assert r.json()["data"] == [{"id": task["id"], "status": "done"}]

    r = await client.delete(f"/api/v1/tasks/{task['id']}", headers=alice.headers)
    assert r.status_code == 204
    r = await client.get(f"/api/v1/tasks/{task['id']}", headers=alice.headers)
    assert r.status_code == 404
