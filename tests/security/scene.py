"""The objects the security tests attack: Alice's, seen (or not) by Bob, an admin and Carol.

`TARGETS` names Alice's object for every path template that names one; a route added with an id fails
tests/security/test_api1_bola.py until it has an entry here.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from rampart.app import Rampart
from rampart.auth.sessions import open_session
from tests.conftest import User, new_user
from tests.security.surface import API


@dataclass
class Scene:
    """Alice's objects, and Bob, who must learn nothing about them."""

    alice: User
    bob: User
    admin: User
    carol: User  # a viewer of Alice's project
    values: dict[str, str]  # name -> id

    @property
    def secrets(self) -> list[str]:
        """Ids of Alice's that must never appear in anything Bob is shown."""
        keys = ("project", "task", "member", "session", "event", "alice_task_event", "alice")
        return [self.values[k] for k in keys]


def created(r: httpx.Response, status: int = 201) -> dict[str, Any]:
    assert r.status_code == status, r.text
    data: dict[str, Any] = r.json()["data"]
    return data


async def make_scene(app: Rampart, client: httpx.AsyncClient) -> Scene:
    """Alice with a project (Carol a viewer of it), a task and a second session; an inactive webhook."""
    alice, bob, carol = await new_user(app), await new_user(app), await new_user(app)
    admin = await new_user(app, role="admin")
    v: dict[str, str] = {}
    r = await client.post(f"{API}/projects", json={"name": "Alice's"}, headers=alice.headers)
    project = created(r)
    v["project"] = project["id"]
    member = created(
        await client.post(
            f"{API}/projects/{project['id']}/members",
            json={"user_id": carol.id, "role": "viewer"},
            headers=alice.headers,
        )
    )
    v["member"], v["carol"] = member["id"], carol.id
    task = created(
        await client.post(
            f"{API}/tasks", json={"project_id": project["id"], "title": "Alice's task"}, headers=alice.headers
        )
    )
    v["task"] = task["id"]
    services = app.services
    async with services.db.transaction() as conn:
        pair = await open_session(
            conn, services.tokens, user_id=uuid.UUID(alice.id), role="user", session_ttl=3600
        )
    v["session"] = str(pair.session_id)
    hook = created(
        await client.post(
            f"{API}/admin/webhooks",
            json={"url": "http://93.184.216.34/hook", "events": ["*"], "active": False},
            headers=admin.headers,
        )
    )
    v["webhook"] = hook["id"]
    # One delivery attempt on record, so the delivery log has a row to show (and to hide).
    await services.db.execute(
        "INSERT INTO webhook_attempts (id, webhook_id, event_id, status_code, error, duration_ms)"
        " SELECT $1, $2, id, 500, 'the receiver answered 500', 12 FROM events WHERE resource_id = $3",
        uuid.uuid4(),
        uuid.UUID(hook["id"]),
        project["id"],
    )
    events = await client.get(f"{API}/events", params={"resource_id": project["id"]}, headers=alice.headers)
    v["event"] = events.json()["data"][0]["id"]
    events = await client.get(f"{API}/events", params={"resource_id": task["id"]}, headers=alice.headers)
    v["alice_task_event"] = events.json()["data"][0]["id"]
    v["alice"] = alice.id
    # The admin impersonates a user of their own (not Alice: her session list stays hers alone).
    dave = await new_user(app)
    pair = created(await client.post(f"{API}/admin/users/{dave.id}/impersonate", headers=admin.headers))
    v["impersonation"] = pair["session_id"]
    return Scene(alice, bob, admin, carol, v)


# Alice's object for each path template that names one. A new route with an id fails
# test_every_route_with_an_id_has_a_target until it is added here.
TARGETS: dict[str, Callable[[Scene], dict[str, str]]] = {
    f"{API}/projects/{{id}}": lambda s: {"id": s.values["project"]},
    f"{API}/projects/{{parent_id}}/members": lambda s: {"parent_id": s.values["project"]},
    f"{API}/projects/{{parent_id}}/members/{{user_id}}": lambda s: {
        "parent_id": s.values["project"],
        "user_id": s.values["carol"],
    },
    f"{API}/tasks/{{id}}": lambda s: {"id": s.values["task"]},
    f"{API}/auth/sessions/{{id}}": lambda s: {"id": s.values["session"]},
    f"{API}/admin/users/{{id}}": lambda s: {"id": s.values["alice"]},
    f"{API}/admin/users/{{id}}/impersonate": lambda s: {"id": s.values["alice"]},
    f"{API}/admin/impersonations/{{id}}": lambda s: {"id": s.values["impersonation"]},
    f"{API}/admin/webhooks/{{id}}": lambda s: {"id": s.values["webhook"]},
    f"{API}/admin/webhooks/{{id}}/deliveries": lambda s: {"id": s.values["webhook"]},
    f"{API}/admin/webhooks/{{id}}/deliveries/{{event_id}}/redeliver": lambda s: {
        "id": s.values["webhook"],
        "event_id": s.values["event"],
    },
}
