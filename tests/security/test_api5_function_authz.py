"""API5:2023 Broken function level authorization.

Generated from the router: every route under /api/v1/admin needs a permission the `user` role lacks, and
every such route (admin users, impersonation, webhooks, deliveries, redelivery) refuses anonymous
callers with 401 and users with 403, with a body that would have worked, writing nothing. An admin
gets through, so the permission is the only difference. With custom roles, each role reaches exactly
the routes its permissions name.

Cited, not repeated: the role claim of a token is not trusted, and a demoted admin loses the rights
within 1 s (tests/api/test_auth_tokens.py); the admin users table by caller (test_admin_users.py).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from rampart.access.system import system_actor
from rampart.app import Rampart, create_app
from rampart.clitasks import migrate_all
from rampart.config import DEFAULT_ROLE_PERMISSIONS
from rampart.resources.manager import Context
from tests.conftest import User, _admin, _db_url, make_settings, new_user
from tests.security.scene import TARGETS, Scene, created
from tests.security.surface import ADMIN_ONLY, API, OPERATIONS, Operation, ids

ADMIN_PATHS = [op for op in OPERATIONS if op.path.startswith(f"{API}/admin")]


def test_every_admin_route_needs_a_permission_users_lack() -> None:
    assert ADMIN_PATHS
    assert [op.id for op in ADMIN_PATHS if not op.admin_only] == []


def _body(op: Operation) -> dict[str, Any] | None:
    """A body the operation would accept from an admin: a missing check would let it through."""
    return {
        "users.create": {"email": f"x{uuid.uuid4().hex[:12]}@example.test", "name": "X", "role": "admin"},
        "users.update": {"role": "admin"},
        "webhooks.create": {"url": "http://93.184.216.34/fn", "events": ["*"], "active": False},
        "webhooks.update": {"description": "changed"},
    }.get(op.name)


async def _fresh_targets(
    op: Operation, scene: Scene, client: httpx.AsyncClient, app: Rampart
) -> dict[str, str]:
    """Targets an admin may change or delete without disturbing the other tests of the module."""
    values = dict(TARGETS[op.path](scene)) if op.params else {}
    if op.name in ("users.impersonate", "users.end_impersonation"):
        # A user of its own: Alice may have been made an admin by the update case, and admins cannot be
        # impersonated; and a session of its own to end.
        target = await new_user(app)
        values["id"] = target.id
        if op.name == "users.end_impersonation":
            r = await client.post(f"{API}/admin/users/{target.id}/impersonate", headers=scene.admin.headers)
            values["id"] = created(r)["session_id"]
    if "webhooks" in op.path and op.params:
        hook = created(
            await client.post(
                f"{API}/admin/webhooks",
                json={"url": "http://93.184.216.34/t", "events": ["*"], "active": False},
                headers=scene.admin.headers,
            )
        )
        values["id"] = hook["id"]
    return values


async def _footprint(app: Rampart) -> tuple[int, int, int, int]:
    db = app.services.db
    return (
        await db.fetchval("SELECT count(*) FROM events"),
        await db.fetchval("SELECT count(*) FROM users"),
        await db.fetchval("SELECT count(*) FROM sessions"),
        await db.fetchval("SELECT count(*) FROM event_deliveries"),
    )


@pytest.mark.parametrize("caller", ["anonymous", "user"])
@pytest.mark.parametrize("op", ADMIN_ONLY, ids=ids(ADMIN_ONLY))
async def test_admin_functions_are_refused_to_others(
    client: httpx.AsyncClient, app: Rampart, scene: Scene, op: Operation, caller: str
) -> None:
    headers = {} if caller == "anonymous" else scene.bob.headers
    # Bob aims at himself where he can: promoting or impersonating himself is the tempting case.
    values = TARGETS[op.path](scene) if op.params else {}
    if "users/{id}" in op.path:
        values = {"id": scene.bob.id}
    before = await _footprint(app)

    r = await client.request(op.method, op.url(values), json=_body(op), headers=headers)

    expected = 401 if caller == "anonymous" else 403
    assert r.status_code == expected, r.text
    assert r.json()["code"] == ("unauthorized" if caller == "anonymous" else "forbidden")
    assert await _footprint(app) == before
    if op.method == "GET":
        head = await client.head(op.url(values), headers=headers)
        assert head.status_code == expected


@pytest.mark.parametrize("op", ADMIN_ONLY, ids=ids(ADMIN_ONLY))
async def test_an_admin_gets_through(
    client: httpx.AsyncClient, app: Rampart, scene: Scene, op: Operation
) -> None:
    """The control: the same requests from an admin succeed, so the refusals above are the permission's."""
    values = await _fresh_targets(op, scene, client, app)
    r = await client.request(op.method, op.url(values), json=_body(op), headers=scene.admin.headers)
    assert 200 <= r.status_code < 300, r.text


async def test_a_method_override_header_changes_nothing(client: httpx.AsyncClient, scene: Scene) -> None:
    project = f"{API}/projects/{scene.values['project']}"
    for method in ("DELETE", "PATCH", "PUT"):
        for header in ("X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"):
            r = await client.get(project, headers={**scene.alice.headers, header: method})
            assert r.status_code == 200
            r = await client.post(f"{API}/admin/users", json={}, headers={**scene.bob.headers, header: "GET"})
            assert r.status_code == 403
    assert (await client.get(project, headers=scene.alice.headers)).status_code == 200


# ----- other grants -----------------------------------------------------------------------------------
# The `user` role given one admin permission at a time (role names are fixed by the schema's check
# constraint; what a role may do is configuration, RAMPART_ROLE_PERMISSIONS).

GRANTS: dict[str, list[str]] = {
    "support": ["users:manage"],  # sees and changes users; no impersonation, no webhooks
    "auditor": ["events:read_any"],  # reads every event, manages nothing
    "integrator": ["webhooks:manage"],
}


@pytest.fixture(scope="module")
async def granted(database_url: str) -> AsyncIterator[dict[str, tuple[Rampart, User]]]:
    apps: dict[str, tuple[Rampart, User]] = {}
    for name, permissions in GRANTS.items():
        roles = {"admin": DEFAULT_ROLE_PERMISSIONS["admin"], "user": permissions}
        application = create_app(make_settings(database_url, role_permissions=roles))
        apps[name] = (application, await new_user(application))
    yield apps
    for application, _ in apps.values():
        await application.aclose()


async def _call(app: Rampart, method: str, url: str, **kwargs: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        return await http.request(method, url, **kwargs)


GRANT_CASES = [(op, name) for op in ADMIN_ONLY for name in GRANTS]


@pytest.mark.parametrize(("op", "grant"), GRANT_CASES, ids=[f"{op.id} as {g}" for op, g in GRANT_CASES])
async def test_each_grant_reaches_exactly_its_routes(
    granted: dict[str, tuple[Rampart, User]], op: Operation, grant: str
) -> None:
    app, user = granted[grant]
    r = await _call(app, op.method, op.url(), json=_body(op), headers=user.headers)
    if op.permission in GRANTS[grant]:
        assert r.status_code not in (401, 403), r.text  # random ids: 404 or 422 is fine, it got through
    else:
        assert r.status_code == 403, r.text


async def test_reading_every_event_is_a_permission_of_its_own(
    granted: dict[str, tuple[Rampart, User]],
) -> None:
    """The auditor sees webhook events (events:read_any); the integrator, who made the webhook, does not."""
    app, integrator = granted["integrator"]
    r = await _call(
        app,
        "POST",
        f"{API}/admin/webhooks",
        json={"url": "http://93.184.216.34/r", "events": ["*"], "active": False},
        headers=integrator.headers,
    )
    hook = created(r)
    seen = {}
    for name, (grant_app, user) in granted.items():
        r = await _call(
            grant_app, "GET", f"{API}/events", params={"resource_id": hook["id"]}, headers=user.headers
        )
        assert r.status_code == 200
        seen[name] = [e["type"] for e in r.json()["data"]]
    assert seen == {"auditor": ["webhooks.created"], "integrator": [], "support": []}


# ----- admin safety (issue 13, findings 1 and 8) --------------------------------------------------------


async def test_an_admin_cannot_be_impersonated(client: httpx.AsyncClient, app: Rampart) -> None:
    """Acting as another admin would borrow their authority under their name: refused, nothing written.
    (It used to open an ordinary 30-day session as the other admin.)"""
    admin, other = await new_user(app, role="admin"), await new_user(app, role="admin")
    before = await _footprint(app)
    for target in (other, admin):  # another admin, and oneself
        r = await client.post(f"{API}/admin/users/{target.id}/impersonate", headers=admin.headers)
        assert r.status_code == 403, r.text
        assert r.json()["code"] == "impersonation_refused"
    assert await _footprint(app) == before


@pytest.fixture(scope="module")
def lone_database() -> Iterator[str]:
    """A database of this module's own: the last-admin rule counts every admin in the database."""
    name = f"rampart_admins_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    url = _db_url(name)
    migrate_all(make_settings(url))
    yield url
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="module")
async def lone(lone_database: str) -> AsyncIterator[Rampart]:
    application = create_app(make_settings(lone_database))
    yield application
    await application.aclose()


async def _only_admins(app: Rampart, *admins: User) -> None:
    """Make exactly `admins` the enabled admins of the database (through the manager, as the CLI does)."""
    users = app.services.managers["users"]
    ctx = Context(actor=system_actor(frozenset({"users:manage"})))
    keep = {a.id for a in admins}
    for row in await app.services.db.fetch("SELECT id FROM users WHERE role = 'admin' AND NOT disabled"):
        if str(row["id"]) not in keep:
            await users.update(ctx, row["id"], {"disabled": True})
    for admin in admins:
        await users.update(ctx, admin.id, {"role": "admin", "disabled": False})


async def _enabled_admins(app: Rampart) -> int:
    count: int = await app.services.db.fetchval(
        "SELECT count(*) FROM users WHERE role = 'admin' AND NOT disabled"
    )
    return count


@pytest.mark.parametrize(
    "change", [{"role": "user"}, {"disabled": True}, {"role": "user", "disabled": True}], ids=str
)
async def test_the_last_enabled_admin_cannot_demote_or_disable_itself(
    lone: Rampart, change: dict[str, Any]
) -> None:
    """A fuzzer demoted the only admin; recovery then needed a second admin made by hand in SQL."""
    me = await new_user(lone, role="admin")
    await _only_admins(lone, me)
    before = await _footprint(lone)
    r = await _call(lone, "PATCH", f"{API}/admin/users/{me.id}", json=change, headers=me.headers)
    assert r.status_code == 409, r.text
    assert r.json()["code"] == "last_admin"
    assert await _footprint(lone) == before
    assert await _enabled_admins(lone) == 1
    # With a second admin, the same change goes through; then that one is the last.
    second = await new_user(lone, role="admin")
    r = await _call(lone, "PATCH", f"{API}/admin/users/{me.id}", json=change, headers=me.headers)
    assert r.status_code == 200, r.text
    r = await _call(lone, "PATCH", f"{API}/admin/users/{second.id}", json=change, headers=second.headers)
    assert r.status_code == 409, r.text
    assert await _enabled_admins(lone) == 1


async def test_concurrent_demotions_never_leave_zero_admins(lone: Rampart) -> None:
    """Two admins demoting each other, or themselves, at the same instant: one change wins, the other is
    409 `last_admin`. Without a lock both read "the other admin is still there" and both commit."""
    for round_ in range(6):
        a, b = await new_user(lone, role="admin"), await new_user(lone, role="admin")
        await _only_admins(lone, a, b)
        targets = (b, a) if round_ % 2 else (a, b)  # crossed: a demotes b as b demotes a; else themselves
        change = {"disabled": True} if round_ % 3 == 0 else {"role": "user"}
        answers = await asyncio.gather(
            *(
                _call(lone, "PATCH", f"{API}/admin/users/{target.id}", json=change, headers=caller.headers)
                for caller, target in zip((a, b), targets, strict=True)
            )
        )
        # The loser is 409, or 403 if it was itself demoted before its request was authenticated.
        assert sorted(r.status_code for r in answers) in ([200, 409], [200, 403]), [r.text for r in answers]
        assert await _enabled_admins(lone) == 1
