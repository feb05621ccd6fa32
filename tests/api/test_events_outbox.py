"""Events: every change through the API writes exactly one `events` row in its own transaction (no change
without its event, no event without its change), and the in-process bus hears it after commit."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from rampart.app import Rampart
from tests.conftest import MakeUser, User


async def events_where(app: Rampart, condition: str, *args: Any) -> list[dict[str, Any]]:
    rows = await app.services.db.fetch(
        "SELECT id, type, resource, resource_id, actor_id, data, changes, request_id, occurred_at"
        f" FROM events WHERE {condition} ORDER BY id",
        *args,
    )
    out = []
    for row in rows:
        item = dict(row)
        item["data"] = orjson.loads(item["data"])
        item["changes"] = orjson.loads(item["changes"])
        out.append(item)
    return out


async def events_of(app: Rampart, resource_id: str) -> list[dict[str, Any]]:
    return await events_where(app, "resource_id = $1", resource_id)


def rid() -> str:
    return f"evt-test-{uuid.uuid4().hex}"


async def new_project(client: httpx.AsyncClient, owner: User, name: str = "P") -> dict[str, Any]:
    r = await client.post("/api/v1/projects", json={"name": name}, headers=owner.headers)
    assert r.status_code == 201, r.text
    project: dict[str, Any] = r.json()["data"]
    return project


async def new_task(client: httpx.AsyncClient, owner: User, project_id: str, **fields: Any) -> dict[str, Any]:
    body = {"project_id": project_id, "title": "T", **fields}
    r = await client.post("/api/v1/tasks", json=body, headers=owner.headers)
    assert r.status_code == 201, r.text
    task: dict[str, Any] = r.json()["data"]
    return task


# ----- one event per change, in the change's transaction ---------------------------------------------
async def test_create_update_delete_each_write_one_event(
    client: httpx.AsyncClient, app: Rampart, alice: User
) -> None:
    project = await new_project(client, alice)
    [created] = await events_of(app, project["id"])
    assert created["type"] == "projects.created"
    assert created["resource"] == "projects"
    assert str(created["actor_id"]) == alice.id
    assert created["data"]["name"] == "P"
    assert created["data"]["id"] == project["id"]
    assert created["changes"] == {}

    request_id = rid()
    r = await client.post(
        "/api/v1/tasks",
        json={"project_id": project["id"], "title": "Write tests"},
        headers={**alice.headers, "X-Request-ID": request_id},
    )
    assert r.status_code == 201
    task = r.json()["data"]
    [task_created] = await events_of(app, task["id"])
    assert task_created["type"] == "tasks.created"
    assert task_created["request_id"] == request_id == r.headers["x-request-id"]
    assert task_created["data"] == task  # the event carries the item exactly as the API returned it

    request_id = rid()
    r = await client.patch(
        f"/api/v1/tasks/{task['id']}",
        json={"status": "done"},
        headers={**alice.headers, "X-Request-ID": request_id},
    )
    assert r.status_code == 200
    events = await events_of(app, task["id"])
    assert [e["type"] for e in events] == ["tasks.created", "tasks.updated"]
    assert events[1]["request_id"] == request_id
    assert events[1]["data"]["version"] == 2
    assert events[1]["data"]["status"] == "done"

    r = await client.delete(f"/api/v1/tasks/{task['id']}", headers=alice.headers)
    assert r.status_code == 204
    events = await events_of(app, task["id"])
    assert [e["type"] for e in events] == ["tasks.created", "tasks.updated", "tasks.deleted"]
    assert events[2]["data"]["id"] == task["id"]
    assert events[2]["changes"] == {}
    assert str(events[2]["actor_id"]) == alice.id

    r = await client.patch(f"/api/v1/projects/{project['id']}", json={"name": "Q"}, headers=alice.headers)
    assert r.status_code == 200
    r = await client.delete(f"/api/v1/projects/{project['id']}", headers=alice.headers)
    assert r.status_code == 204
    assert [e["type"] for e in await events_of(app, project["id"])] == [
        "projects.created",
        "projects.updated",
        "projects.deleted",
    ]


async def test_member_changes_write_events(
    client: httpx.AsyncClient, app: Rampart, alice: User, bob: User
) -> None:
    project = await new_project(client, alice)
    members_url = f"/api/v1/projects/{project['id']}/members"
    r = await client.post(members_url, json={"user_id": bob.id, "role": "viewer"}, headers=alice.headers)
    assert r.status_code == 201, r.text
    r = await client.delete(f"{members_url}/{bob.id}", headers=alice.headers)
    assert r.status_code == 204
    events = await events_where(app, "resource = 'members' AND data->>'project_id' = $1", project["id"])
    assert [e["type"] for e in events] == ["members.created", "members.deleted"]
    assert all(e["data"]["user_id"] == bob.id for e in events)


async def test_admin_user_changes_write_events(client: httpx.AsyncClient, app: Rampart, admin: User) -> None:
    email = f"ev-{uuid.uuid4().hex[:10]}@example.test"
    r = await client.post("/api/v1/admin/users", json={"email": email, "name": "E"}, headers=admin.headers)
    assert r.status_code == 201, r.text
    user = r.json()["data"]
    r = await client.patch(f"/api/v1/admin/users/{user['id']}", json={"role": "admin"}, headers=admin.headers)
    assert r.status_code == 200, r.text
    events = await events_of(app, user["id"])
    assert [e["type"] for e in events] == ["users.created", "users.updated"]
    assert events[1]["changes"] == {"role": {"from": "user", "to": "admin"}}
    assert str(events[1]["actor_id"]) == admin.id


async def test_changes_hold_only_the_changed_fields(
    client: httpx.AsyncClient, app: Rampart, alice: User
) -> None:
    project = await new_project(client, alice)
    task = await new_task(client, alice, project["id"], title="Same", priority=1)
    r = await client.patch(
        f"/api/v1/tasks/{task['id']}",
        json={"title": "Same", "priority": 4, "status": "in_progress", "due_date": "2026-12-01"},
        headers=alice.headers,
    )
    assert r.status_code == 200, r.text
    updated = (await events_of(app, task["id"]))[-1]
    assert updated["type"] == "tasks.updated"
    assert updated["changes"] == {
        "priority": {"from": 1, "to": 4},
        "status": {"from": "todo", "to": "in_progress"},
        "due_date": {"from": None, "to": "2026-12-01"},
    }


async def test_an_update_that_changes_nothing_writes_no_event(
    client: httpx.AsyncClient, app: Rampart, alice: User
) -> None:
    project = await new_project(client, alice)
    task = await new_task(client, alice, project["id"], priority=2)
    r = await client.patch(
        f"/api/v1/tasks/{task['id']}", json={"priority": 2, "status": "todo"}, headers=alice.headers
    )
    assert r.status_code == 200
    assert r.json()["data"]["version"] == 1
    assert [e["type"] for e in await events_of(app, task["id"])] == ["tasks.created"]


# ----- a failed change leaves no event ----------------------------------------------------------------
async def test_a_unique_conflict_writes_no_event(
    client: httpx.AsyncClient, app: Rampart, alice: User, bob: User
) -> None:
    project = await new_project(client, alice)
    members_url = f"/api/v1/projects/{project['id']}/members"
    r = await client.post(members_url, json={"user_id": bob.id, "role": "viewer"}, headers=alice.headers)
    assert r.status_code == 201
    r = await client.post(members_url, json={"user_id": bob.id, "role": "editor"}, headers=alice.headers)
    assert r.status_code == 409, r.text
    events = await events_where(app, "resource = 'members' AND data->>'project_id' = $1", project["id"])
    assert [e["type"] for e in events] == ["members.created"]


@pytest.mark.parametrize(
    ("method", "body", "status"),
    [
        ("PATCH", {"priority": 9}, 422),
        ("PATCH", {"status": "done", "owner_id": str(uuid.uuid4())}, 422),
        ("PATCH", "{not json", 400),
    ],
)
async def test_rejected_requests_write_no_event(
    client: httpx.AsyncClient, app: Rampart, alice: User, method: str, body: Any, status: int
) -> None:
    project = await new_project(client, alice)
    task = await new_task(client, alice, project["id"])
    content = body.encode() if isinstance(body, str) else orjson.dumps(body)
    r = await client.request(
        method,
        f"/api/v1/tasks/{task['id']}",
        content=content,
        headers={**alice.headers, "Content-Type": "application/json"},
    )
    assert r.status_code == status, r.text
    assert [e["type"] for e in await events_of(app, task["id"])] == ["tasks.created"]


async def test_a_forbidden_write_writes_no_event(
    client: httpx.AsyncClient, app: Rampart, alice: User, bob: User
) -> None:
    project = await new_project(client, alice)
    task = await new_task(client, alice, project["id"])
    r = await client.post(
        f"/api/v1/projects/{project['id']}/members",
        json={"user_id": bob.id, "role": "viewer"},
        headers=alice.headers,
    )
    assert r.status_code == 201
    r = await client.patch(f"/api/v1/tasks/{task['id']}", json={"status": "done"}, headers=bob.headers)
    assert r.status_code == 403
    r = await client.delete(f"/api/v1/tasks/{task['id']}", headers=bob.headers)
    assert r.status_code == 403
    assert [e["type"] for e in await events_of(app, task["id"])] == ["tasks.created"]


async def test_an_update_event_names_only_what_changed_and_carries_the_row_as_returned(
    client: httpx.AsyncClient, app: Rampart, alice: User
) -> None:
    # A hook-free update is one statement that computes the diff in SQL: it must agree with the API.
    project = await new_project(client, alice)
    task = await new_task(client, alice, project["id"], priority=3)
    body = {"status": "done", "priority": 3, "due_date": "2027-01-31"}
    r = await client.patch(f"/api/v1/tasks/{task['id']}", json=body, headers=alice.headers)
    assert r.status_code == 200
    updated = r.json()["data"]
    [_, event] = await events_of(app, task["id"])
    assert event["data"] == updated
    assert event["changes"] == {
        "status": {"from": "todo", "to": "done"},
        "due_date": {"from": None, "to": "2027-01-31"},
    }
    # Nothing changes: no new version, no event.
    r = await client.patch(f"/api/v1/tasks/{task['id']}", json=body, headers=alice.headers)
    assert r.status_code == 200
    assert r.json()["data"]["version"] == updated["version"]
    assert len(await events_of(app, task["id"])) == 2


async def test_a_failure_after_the_event_insert_leaves_neither_change_nor_event(
    client: httpx.AsyncClient, app: Rampart, alice: User
) -> None:
    # The database refuses the event row itself (a trigger raising for this test's names only), after the
    # change was written in the same statement or transaction: neither may remain.
    db = app.services.db
    if db.citus:
        # Citus allows no trigger on the distributed `events`: a constraint refuses the row there instead.
        await db.execute(
            "ALTER TABLE events ADD CONSTRAINT doomed_event CHECK"
            " (coalesce(data->>'name', data->>'title', '') NOT LIKE 'doomed-%') NOT VALID"
        )
    else:
        await db.execute(
            "CREATE FUNCTION doomed_event() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " IF NEW.data->>'name' LIKE 'doomed-%' OR NEW.data->>'title' LIKE 'doomed-%' THEN"
            " RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$"
        )
        await db.execute(
            "CREATE TRIGGER doomed_event BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION doomed_event()"
        )
    try:
        name = f"doomed-{uuid.uuid4().hex}"
        r = await client.post("/api/v1/projects", json={"name": name}, headers=alice.headers)
        assert r.status_code == 500
        assert r.headers["content-type"] == "application/problem+json"
        assert "refused" not in r.text  # the database's message stays in the log
        project = await new_project(client, alice)
        task = await new_task(client, alice, project["id"])
        title = f"doomed-{uuid.uuid4().hex}"
        r = await client.patch(f"/api/v1/tasks/{task['id']}", json={"title": title}, headers=alice.headers)
        assert r.status_code == 500
    finally:
        if db.citus:
            await db.execute("ALTER TABLE events DROP CONSTRAINT doomed_event")
        else:
            await db.execute("DROP TRIGGER doomed_event ON events")
            await db.execute("DROP FUNCTION doomed_event()")
    assert await db.fetchval("SELECT count(*) FROM projects WHERE name = $1", name) == 0
    assert await events_where(app, "data->>'name' = $1", name) == []
    r = await client.get(f"/api/v1/tasks/{task['id']}", headers=alice.headers)
    assert r.status_code == 200, r.text
    assert r.json()["data"]["title"] == task["title"]
    assert r.json()["data"]["version"] == task["version"]
    assert await events_where(app, "data->>'title' = $1", title) == []


# ----- the bus ----------------------------------------------------------------------------------------
@pytest.fixture
def subscribe(app: Rampart) -> Iterator[Any]:
    unsubscribers: list[Any] = []

    def on(pattern: str, handler: Any) -> None:
        unsubscribers.append(app.services.bus.on(pattern, handler))

    yield on
    for unsubscribe in unsubscribers:
        unsubscribe()


async def test_the_bus_hears_events_after_commit_with_the_request_id(
    client: httpx.AsyncClient, app: Rampart, alice: User, subscribe: Any, database_url: str
) -> None:
    project = await new_project(client, alice)
    heard: list[tuple[dict[str, Any], bool, bool]] = []

    async def handler(event: Mapping[str, Any]) -> None:
        # Another connection sees the row and its event only if the transaction has committed.
        conn = await asyncpg.connect(database_url)
        try:
            row_visible = await conn.fetchval(
                f"SELECT count(*) FROM {event['resource']} WHERE id = $1", uuid.UUID(event["resource_id"])
            )
            event_visible = await conn.fetchval(
                "SELECT count(*) FROM events WHERE id = $1", uuid.UUID(event["id"])
            )
        finally:
            await conn.close()
        heard.append((dict(event), row_visible == 1, event_visible == 1))

    subscribe("tasks.*", handler)
    request_id = rid()
    r = await client.post(
        "/api/v1/tasks",
        json={"project_id": project["id"], "title": "heard"},
        headers={**alice.headers, "X-Request-ID": request_id},
    )
    assert r.status_code == 201
    task = r.json()["data"]
    await new_project(client, alice)  # a projects.* event: not for this handler

    assert len(heard) == 1
    event, row_visible, event_visible = heard[0]
    assert row_visible
    assert event_visible
    assert {"id", "type", "resource", "resource_id", "actor_id", "occurred_at", "data", "changes"} <= set(
        event
    )
    assert event["type"] == "tasks.created"
    assert event["resource_id"] == task["id"]
    assert event["request_id"] == request_id
    assert event["actor_id"] == alice.id
    [stored] = await events_of(app, task["id"])
    assert event["id"] == str(stored["id"])


async def test_the_bus_hears_updates_and_deletes(
    client: httpx.AsyncClient, alice: User, subscribe: Any
) -> None:
    project = await new_project(client, alice)
    task = await new_task(client, alice, project["id"])
    heard: list[Mapping[str, Any]] = []
    subscribe("tasks.*", heard.append)
    await client.patch(f"/api/v1/tasks/{task['id']}", json={"priority": 5}, headers=alice.headers)
    await client.delete(f"/api/v1/tasks/{task['id']}", headers=alice.headers)
    assert [e["type"] for e in heard] == ["tasks.updated", "tasks.deleted"]
    assert heard[0]["changes"] == {"priority": {"from": 0, "to": 5}}


async def test_the_bus_hears_nothing_for_a_failed_change(
    client: httpx.AsyncClient, alice: User, bob: User, subscribe: Any
) -> None:
    project = await new_project(client, alice)
    members_url = f"/api/v1/projects/{project['id']}/members"
    r = await client.post(members_url, json={"user_id": bob.id, "role": "viewer"}, headers=alice.headers)
    assert r.status_code == 201
    heard: list[Mapping[str, Any]] = []
    subscribe("*", heard.append)
    r = await client.post(members_url, json={"user_id": bob.id, "role": "viewer"}, headers=alice.headers)
    assert r.status_code == 409
    assert heard == []


async def test_a_failing_handler_does_not_fail_the_request_and_is_logged(
    client: httpx.AsyncClient,
    app: Rampart,
    alice: User,
    subscribe: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    project = await new_project(client, alice)
    later: list[Mapping[str, Any]] = []

    def broken(event: Mapping[str, Any]) -> None:
        raise RuntimeError("subscriber exploded")

    subscribe("tasks.*", broken)
    subscribe("tasks.created", later.append)  # registered after the broken one: still runs
    request_id = rid()
    with caplog.at_level(logging.ERROR, logger="rampart.bus"):
        r = await client.post(
            "/api/v1/tasks",
            json={"project_id": project["id"], "title": "survives"},
            headers={**alice.headers, "X-Request-ID": request_id},
        )
    assert r.status_code == 201, r.text
    task = r.json()["data"]
    assert len(later) == 1
    # The change and its event are committed regardless of the subscriber.
    assert [e["type"] for e in await events_of(app, task["id"])] == ["tasks.created"]
    records = [rec for rec in caplog.records if rec.name == "rampart.bus"]
    assert len(records) == 1
    record = records[0]
    assert getattr(record, "request_id", None) == request_id
    assert request_id in record.getMessage()
    assert record.exc_info is not None
    assert "subscriber exploded" in str(record.exc_info[1])


async def test_many_users_events_are_attributed_to_their_actor(
    client: httpx.AsyncClient, app: Rampart, make_user: MakeUser
) -> None:
    users = [await make_user() for _ in range(3)]
    for user in users:
        project = await new_project(client, user)
        [event] = await events_of(app, project["id"])
        assert str(event["actor_id"]) == user.id


async def test_deleting_a_project_writes_a_deleted_event_for_each_cascaded_row(
    client: httpx.AsyncClient, app: Rampart, alice: User, bob: User
) -> None:
    project = await new_project(client, alice)
    tasks = [await new_task(client, alice, project["id"], title=f"T{i}") for i in range(2)]
    r = await client.post(
        f"/api/v1/projects/{project['id']}/members",
        json={"user_id": bob.id, "role": "viewer"},
        headers=alice.headers,
    )
    assert r.status_code == 201
    member = r.json()["data"]

    r = await client.delete(f"/api/v1/projects/{project['id']}", headers=alice.headers)
    assert r.status_code == 204

    ids = [project["id"], member["id"], *(t["id"] for t in tasks)]
    deleted = await events_where(app, "resource_id = ANY($1::text[]) AND type LIKE '%.deleted'", ids)
    assert sorted((e["type"], e["resource_id"]) for e in deleted) == sorted(
        [("projects.deleted", project["id"]), ("members.deleted", member["id"])]
        + [("tasks.deleted", t["id"]) for t in tasks]
    )
    assert {e["actor_id"] for e in deleted} == {uuid.UUID(alice.id)}
    assert {e["data"]["title"] for e in deleted if e["type"] == "tasks.deleted"} == {"T0", "T1"}
    assert (
        await app.services.db.fetchval("SELECT count(*) FROM tasks WHERE project_id = $1", project["id"]) == 0
    )
