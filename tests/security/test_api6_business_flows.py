"""API6:2023 Unrestricted access to sensitive business flows.

The demo app sells nothing and has no flow whose volume is itself the harm (purchases, votes, invites
by email). The flows that matter are the ones around accounts: starting a sign-in, exchanging a code,
refreshing tokens (guessing or replaying them), and an admin acting as someone else. Here:

- generated from the router, every public route that starts or completes a sign-in or hands out tokens
  is in the stricter `auth` rate class, limited per client IP whatever token or account is tried;
- impersonation cannot be hidden: the target sees the session in their own session list, with the admin
  who opened it, the audit log names the admin, and so does every event written through the session.

Cited, not repeated: a spent refresh token presented again revokes the whole session
(tests/api/test_auth_refresh.py); bulk creation is limited per user across client addresses
(tests/api/test_rate_limit.py); the impersonation event (tests/api/test_admin_users.py).
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from rampart.app import Rampart, create_app
from tests.conftest import make_settings, new_user
from tests.events.test_stream import StreamClient, eventually
from tests.security.surface import API, OPERATIONS, Operation, ids

AUTH_CLASS = [op for op in OPERATIONS if op.rate_class == "auth"]
BUDGET = 3


def test_every_public_token_route_is_in_the_strict_class() -> None:
    """Public routes are the ones without a user to limit; only the key set is not about tokens."""
    public = {op.id for op in OPERATIONS if op.public}
    assert {op.id for op in AUTH_CLASS} == public - {"GET /.well-known/jwks.json"}
    assert AUTH_CLASS


@pytest.fixture(scope="module")
async def strict_app(database_url: str) -> AsyncIterator[Rampart]:
    application = create_app(make_settings(database_url, rate_limit_auth=f"{BUDGET}/minute"))
    yield application
    await application.aclose()


def _client(app: Rampart, ip: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(ip, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def _ip() -> str:
    return f"10.{secrets.randbelow(256)}.{secrets.randbelow(256)}.{1 + secrets.randbelow(254)}"


@pytest.mark.parametrize("op", AUTH_CLASS, ids=ids(AUTH_CLASS))
async def test_sign_in_and_token_routes_are_limited_per_client_ip(strict_app: Rampart, op: Operation) -> None:
    """A fresh guess each time (a new refresh token, a new code and state) changes nothing."""
    attacker, bystander = _ip(), _ip()
    async with _client(strict_app, attacker) as http:
        statuses = []
        for _ in range(BUDGET + 2):
            guess = secrets.token_urlsafe(32)
            r = await http.request(
                op.method,
                op.url(),
                params={"code": guess, "state": guess} if op.method == "GET" else None,
                json={"refresh_token": guess} if op.method == "POST" else None,
            )
            statuses.append(r.status_code)
    assert 429 not in statuses[:BUDGET], statuses
    assert statuses[BUDGET:] == [429, 429]
    assert int(r.headers["retry-after"]) >= 1
    async with _client(strict_app, bystander) as http:  # another address is not affected
        r = await http.request(
            op.method, op.url(), json={"refresh_token": "x"} if op.method == "POST" else None
        )
        assert r.status_code != 429


async def test_impersonation_is_visible_to_the_person_impersonated(
    client: httpx.AsyncClient, app: Rampart
) -> None:
    admin, target = await new_user(app, role="admin"), await new_user(app)
    r = await client.post(f"{API}/admin/users/{target.id}/impersonate", headers=admin.headers)
    assert r.status_code == 201
    r = await client.get(f"{API}/auth/sessions", headers=target.headers)
    flags = sorted(s["impersonated"] for s in r.json()["data"])
    assert flags == [False, True]  # their own session, and the admin's
    log = await client.get(
        f"{API}/events",
        params={"resource_id": target.id, "type": "users.impersonated"},
        headers=admin.headers,
    )
    assert [(e["type"], e["actor_id"]) for e in log.json()["data"]] == [("users.impersonated", admin.id)]


async def test_every_event_of_an_impersonated_request_names_the_impersonator(
    client: httpx.AsyncClient, app: Rampart
) -> None:
    """Issue 13, finding 4: what an admin did as someone else was attributed to that someone alone.
    Every write path (the one-statement create and update, the transactional nested create and delete)
    now records `impersonator_id` beside `actor_id`, in the table, the audit log and the live stream;
    a request of the user's own session records null. Webhook payloads: tests/events/test_webhooks.py."""
    admin, target, member = await new_user(app, role="admin"), await new_user(app), await new_user(app)
    stream = StreamClient(admin.headers)
    running = stream.run(app)
    try:
        await eventually(lambda: stream.status == 200)
        await asyncio.sleep(0.2)  # connected and listening
        r = await client.post(f"{API}/admin/users/{target.id}/impersonate", headers=admin.headers)
        assert r.status_code == 201, r.text
        acting = {"Authorization": f"Bearer {r.json()['data']['access_token']}"}

        def ok(response: httpx.Response) -> dict[str, Any]:
            assert response.status_code in (200, 201, 204), response.text
            return response.json()["data"] if response.content else {}

        project = ok(await client.post(f"{API}/projects", json={"name": "As Tim"}, headers=acting))
        ok(await client.patch(f"{API}/projects/{project['id']}", json={"name": "Renamed"}, headers=acting))
        task = ok(
            await client.post(
                f"{API}/tasks", json={"project_id": project["id"], "title": "T"}, headers=acting
            )
        )
        membership = ok(
            await client.post(
                f"{API}/projects/{project['id']}/members",
                json={"user_id": member.id, "role": "viewer"},
                headers=acting,
            )
        )
        ok(await client.delete(f"{API}/tasks/{task['id']}", headers=acting))
        ok(
            await client.patch(
                f"{API}/projects/{project['id']}", json={"name": "Mine"}, headers=target.headers
            )
        )

        # (type, object, impersonator): everything done as the target, then the target's own change.
        expected = [
            ("projects.created", project["id"], admin.id),
            ("projects.updated", project["id"], admin.id),
            ("tasks.created", task["id"], admin.id),
            ("members.created", membership["id"], admin.id),
            ("tasks.deleted", task["id"], admin.id),
            ("projects.updated", project["id"], None),
        ]
        log: list[dict[str, Any]] = []
        for resource_id in (project["id"], task["id"], membership["id"]):
            r = await client.get(f"{API}/events", params={"resource_id": resource_id}, headers=admin.headers)
            log += r.json()["data"]
        await eventually(lambda: len([e for e in stream.events if e["actor_id"] == target.id]) >= 6)
    finally:
        stream.close()
        async with asyncio.timeout(5):
            await running
    live = [e for e in stream.events if e["actor_id"] == target.id]
    for events in (log, live):
        seen = [(e["type"], e["resource_id"], e["impersonator_id"]) for e in events]
        assert sorted(seen, key=str) == sorted(expected, key=str)
        assert {e["actor_id"] for e in events} == {target.id}
    stored = await app.services.db.fetch(
        "SELECT type, impersonator_id FROM events WHERE actor_id = $1", uuid.UUID(target.id)
    )
    rows = [(r["type"], str(r["impersonator_id"]) if r["impersonator_id"] else None) for r in stored]
    assert sorted(rows, key=str) == sorted([(t, imp) for t, _, imp in expected], key=str)
    # The impersonation itself is the admin's own act, not an impersonated one.
    r = await client.get(
        f"{API}/events",
        params={"resource_id": target.id, "type": "users.impersonated"},
        headers=admin.headers,
    )
    [opened] = r.json()["data"]
    assert (opened["actor_id"], opened["impersonator_id"]) == (admin.id, None)
