"""Project members (API.md "Resources"): adding, validation, duplicates, removal and what a role grants,
each with the events it writes."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from rampart.app import Rampart
from tests.conftest import MakeUser, User

API = "/api/v1"


async def new_project(client: httpx.AsyncClient, owner: User, name: str = "Members") -> str:
    r = await client.post(f"{API}/projects", json={"name": name}, headers=owner.headers)
    assert r.status_code == 201, r.text
    project_id: str = r.json()["data"]["id"]
    return project_id


async def new_task(client: httpx.AsyncClient, user: User, project_id: str) -> str:
    r = await client.post(f"{API}/tasks", json={"project_id": project_id, "title": "t"}, headers=user.headers)
    assert r.status_code == 201, r.text
    task_id: str = r.json()["data"]["id"]
    return task_id


async def add(
    client: httpx.AsyncClient, by: User, project_id: str, user_id: str, role: str
) -> httpx.Response:
    return await client.post(
        f"{API}/projects/{project_id}/members", json={"user_id": user_id, "role": role}, headers=by.headers
    )


async def events_of(app: Rampart, resource_id: str) -> list[tuple[str, str, str]]:
    rows = await app.services.db.fetch(
        "SELECT type, resource_id, actor_id FROM events WHERE resource_id = $1 ORDER BY id", resource_id
    )
    return [(r["type"], r["resource_id"], str(r["actor_id"])) for r in rows]


async def member_events(app: Rampart, project_id: str) -> list[tuple[str, str]]:
    rows = await app.services.db.fetch(
        "SELECT type, actor_id FROM events"
        " WHERE resource = 'members' AND data->>'project_id' = $1 ORDER BY id",
        project_id,
    )
    return [(r["type"], str(r["actor_id"])) for r in rows]


@pytest.mark.parametrize("by", ["owner", "admin"])
@pytest.mark.parametrize("role", ["viewer", "editor"])
async def test_add_member(
    client: httpx.AsyncClient, app: Rampart, make_user: MakeUser, by: str, role: str
) -> None:
    owner, member = await make_user(), await make_user()
    actor = owner if by == "owner" else await make_user("admin")
    project_id = await new_project(client, owner)
    assert (await client.get(f"{API}/projects/{project_id}", headers=member.headers)).status_code == 404

    r = await add(client, actor, project_id, member.id, role)

    assert r.status_code == 201, r.text
    row = r.json()["data"]
    assert row["user_id"] == member.id
    assert row["role"] == role
    assert row["project_id"] == project_id
    assert r.headers["location"] == f"{API}/projects/{project_id}/members/{member.id}"
    assert await events_of(app, row["id"]) == [("members.created", row["id"], actor.id)]
    # the new member sees the project and its tasks at once
    task_id = await new_task(client, owner, project_id)
    assert (await client.get(f"{API}/projects/{project_id}", headers=member.headers)).status_code == 200
    assert (await client.get(f"{API}/tasks/{task_id}", headers=member.headers)).status_code == 200
    listed = await client.get(f"{API}/projects/{project_id}/members", headers=member.headers)
    assert [(m["user_id"], m["role"]) for m in listed.json()["data"]] == [(member.id, role)]


@pytest.mark.parametrize(
    ("role", "can_write"), [("viewer", False), ("editor", True)], ids=["viewer", "editor"]
)
async def test_member_role_decides_task_writes(
    client: httpx.AsyncClient, app: Rampart, make_user: MakeUser, role: str, can_write: bool
) -> None:
    owner, member = await make_user(), await make_user()
    project_id = await new_project(client, owner)
    task_id = await new_task(client, owner, project_id)
    assert (await add(client, owner, project_id, member.id, role)).status_code == 201

    patch = await client.patch(f"{API}/tasks/{task_id}", json={"title": "mine"}, headers=member.headers)
    create = await client.post(
        f"{API}/tasks", json={"project_id": project_id, "title": "new"}, headers=member.headers
    )
    project = await client.patch(f"{API}/projects/{project_id}", json={"name": "x"}, headers=member.headers)
    manage = await add(client, member, project_id, owner.id, "viewer")

    assert patch.status_code == (200 if can_write else 403), patch.text
    assert create.status_code == (201 if can_write else 422), create.text
    assert project.status_code == 403  # only the owner (or an admin) changes the project
    assert manage.status_code == 403  # only the owner (or an admin) manages members
    written = await app.services.db.fetch(
        "SELECT type FROM events WHERE actor_id = $1 ORDER BY id", uuid.UUID(member.id)
    )
    assert [r["type"] for r in written] == (["tasks.updated", "tasks.created"] if can_write else [])


async def test_duplicate_member_is_a_conflict(
    client: httpx.AsyncClient, app: Rampart, alice: User, bob: User
) -> None:
    project_id = await new_project(client, alice)
    assert (await add(client, alice, project_id, bob.id, "viewer")).status_code == 201
    for role in ("viewer", "editor"):
        r = await add(client, alice, project_id, bob.id, role)
        assert r.status_code == 409, r.text
        assert r.json()["code"] == "conflict"
    listed = await client.get(f"{API}/projects/{project_id}/members", headers=alice.headers)
    assert [(m["user_id"], m["role"]) for m in listed.json()["data"]] == [(bob.id, "viewer")]
    assert await member_events(app, project_id) == [("members.created", alice.id)]


async def test_the_same_user_may_be_member_of_several_projects(
    client: httpx.AsyncClient, alice: User, bob: User
) -> None:
    first, second = await new_project(client, alice), await new_project(client, alice)
    assert (await add(client, alice, first, bob.id, "viewer")).status_code == 201
    assert (await add(client, alice, second, bob.id, "editor")).status_code == 201


async def test_unknown_user_is_422(client: httpx.AsyncClient, app: Rampart, alice: User) -> None:
    project_id = await new_project(client, alice)
    r = await add(client, alice, project_id, str(uuid.uuid4()), "viewer")
    assert r.status_code == 422, r.text
    assert [(e["field"], e["code"]) for e in r.json()["errors"]] == [("user_id", "not_found")]
    assert await member_events(app, project_id) == []


INVALID: list[tuple[str, Any, set[str]]] = [
    ("role_owner", {"user_id": "{user}", "role": "owner"}, {"role"}),
    ("role_admin", {"user_id": "{user}", "role": "admin"}, {"role"}),
    ("role_capitalised", {"user_id": "{user}", "role": "Editor"}, {"role"}),
    ("role_empty", {"user_id": "{user}", "role": ""}, {"role"}),
    ("role_null", {"user_id": "{user}", "role": None}, {"role"}),
    ("role_number", {"user_id": "{user}", "role": 1}, {"role"}),
    ("role_list", {"user_id": "{user}", "role": ["viewer"]}, {"role"}),
    ("role_missing", {"user_id": "{user}"}, {"role"}),
    ("user_missing", {"role": "viewer"}, {"user_id"}),
    ("user_not_uuid", {"user_id": "bob", "role": "viewer"}, {"user_id"}),
    ("user_number", {"user_id": 7, "role": "viewer"}, {"user_id"}),
    ("user_null", {"user_id": None, "role": "viewer"}, {"user_id"}),
    ("project_in_body", {"user_id": "{user}", "role": "viewer", "project_id": "{other}"}, {"project_id"}),
    ("server_field", {"user_id": "{user}", "role": "viewer", "id": "{other}"}, {"id"}),
    ("unknown_field", {"user_id": "{user}", "role": "viewer", "admin": True}, {"admin"}),
    ("both_bad", {"user_id": "x", "role": "boss"}, {"user_id", "role"}),
    ("body_array", ["{user}", "viewer"], {""}),
]


@pytest.mark.parametrize(("body", "fields"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
async def test_member_validation(
    client: httpx.AsyncClient, app: Rampart, alice: User, bob: User, body: Any, fields: set[str]
) -> None:
    project_id = await new_project(client, alice)
    other = await new_project(client, alice)

    def fill(value: Any) -> Any:
        if isinstance(value, str):
            return value.format(user=bob.id, other=other)
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fill(v) for v in value]
        return value

    r = await client.post(f"{API}/projects/{project_id}/members", json=fill(body), headers=alice.headers)
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "validation_failed"
    assert {e["field"] for e in r.json()["errors"]} == fields
    assert await member_events(app, project_id) == []
    assert await member_events(app, other) == []
    assert (await client.get(f"{API}/projects/{project_id}", headers=bob.headers)).status_code == 404


@pytest.mark.parametrize("by", ["owner", "admin"])
async def test_remove_member_ends_access(
    client: httpx.AsyncClient, app: Rampart, make_user: MakeUser, by: str
) -> None:
    owner, member = await make_user(), await make_user()
    actor = owner if by == "owner" else await make_user("admin")
    project_id = await new_project(client, owner)
    task_id = await new_task(client, owner, project_id)
    r = await add(client, owner, project_id, member.id, "editor")
    member_row = r.json()["data"]["id"]
    assert (await client.get(f"{API}/tasks/{task_id}", headers=member.headers)).status_code == 200

    r = await client.delete(f"{API}/projects/{project_id}/members/{member.id}", headers=actor.headers)

    assert r.status_code == 204, r.text
    assert r.content == b""
    assert await events_of(app, member_row) == [
        ("members.created", member_row, owner.id),
        ("members.deleted", member_row, actor.id),
    ]
    # access is gone at once, on every route
    h = member.headers
    assert (await client.get(f"{API}/projects/{project_id}", headers=h)).status_code == 404
    assert (await client.get(f"{API}/tasks/{task_id}", headers=h)).status_code == 404
    assert (await client.patch(f"{API}/tasks/{task_id}", json={"title": "x"}, headers=h)).status_code == 404
    assert (await client.get(f"{API}/projects/{project_id}/members", headers=h)).status_code == 404
    r = await client.get(f"{API}/tasks?project_id={project_id}&include_total=true", headers=h)
    assert r.json()["data"] == []
    assert r.json()["meta"]["total"] == 0
    r = await client.post(f"{API}/tasks", json={"project_id": project_id, "title": "x"}, headers=h)
    assert r.status_code == 422
    # removing again: the membership is gone
    r = await client.delete(f"{API}/projects/{project_id}/members/{member.id}", headers=actor.headers)
    assert r.status_code == 404
    assert len(await events_of(app, member_row)) == 2
    # and it can be granted again
    assert (await add(client, owner, project_id, member.id, "viewer")).status_code == 201
    assert (await client.get(f"{API}/tasks/{task_id}", headers=h)).status_code == 200


async def test_removing_a_non_member_is_404(
    client: httpx.AsyncClient, app: Rampart, alice: User, bob: User
) -> None:
    project_id = await new_project(client, alice)
    for user_id in (bob.id, str(uuid.uuid4()), alice.id):
        r = await client.delete(f"{API}/projects/{project_id}/members/{user_id}", headers=alice.headers)
        assert r.status_code == 404, r.text
        assert r.json()["code"] == "not_found"
    assert await member_events(app, project_id) == []


async def test_membership_of_one_project_is_not_removable_through_another(
    client: httpx.AsyncClient, app: Rampart, alice: User, bob: User, make_user: MakeUser
) -> None:
    """The member key is scoped by the project in the URL: alice's project id does not reach carol's."""
    carol = await make_user()
    mine, hers = await new_project(client, alice), await new_project(client, carol)
    assert (await add(client, carol, hers, bob.id, "viewer")).status_code == 201
    r = await client.delete(f"{API}/projects/{mine}/members/{bob.id}", headers=alice.headers)
    assert r.status_code == 404
    assert (await client.get(f"{API}/projects/{hers}", headers=bob.headers)).status_code == 200
    assert await member_events(app, hers) == [("members.created", carol.id)]


async def test_member_item_routes_that_do_not_exist(
    client: httpx.AsyncClient, alice: User, bob: User
) -> None:
    project_id = await new_project(client, alice)
    assert (await add(client, alice, project_id, bob.id, "viewer")).status_code == 201
    url = f"{API}/projects/{project_id}/members/{bob.id}"
    for method in ("GET", "PATCH"):
        r = await client.request(method, url, json={"role": "editor"}, headers=alice.headers)
        assert r.status_code == 405, r.text
        assert r.headers["allow"] == "DELETE"


async def test_deleting_a_project_ends_its_memberships(
    client: httpx.AsyncClient, alice: User, bob: User
) -> None:
    project_id = await new_project(client, alice)
    assert (await add(client, alice, project_id, bob.id, "editor")).status_code == 201
    assert (await client.delete(f"{API}/projects/{project_id}", headers=alice.headers)).status_code == 204
    r = await client.get(f"{API}/projects?include_total=true", headers=bob.headers)
    assert r.json()["meta"]["total"] == 0
    assert (
        await client.get(f"{API}/projects/{project_id}/members", headers=alice.headers)
    ).status_code == 404
