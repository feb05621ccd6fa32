"""The admin users API (API.md "Users and roles"): function-level access for every route and role,
validation, the list query language, updates, and impersonation, each with the events it writes."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from rampart.access.system import SYSTEM_ID
from rampart.app import Rampart
from tests.conftest import MakeUser, User

USERS = "/api/v1/admin/users"


def unique_email(tag: str = "u") -> str:
    return f"{tag}-{uuid.uuid4().hex[:12]}@example.test"


async def events_of(app: Rampart, resource_id: str) -> list[tuple[str, str, str | None]]:
    rows = await app.services.db.fetch(
        "SELECT type, resource_id, actor_id FROM events WHERE resource_id = $1 ORDER BY id", resource_id
    )
    return [(r["type"], r["resource_id"], str(r["actor_id"]) if r["actor_id"] else None) for r in rows]


async def events_by(app: Rampart, actor_id: str) -> list[tuple[str, str]]:
    rows = await app.services.db.fetch(
        "SELECT type, resource_id FROM events WHERE actor_id = $1 ORDER BY id", uuid.UUID(actor_id)
    )
    return [(r["type"], r["resource_id"]) for r in rows]


def without_request_id(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "request_id"}


# ----- function-level access: every route, every kind of caller --------------------------------------------

ROUTES: list[tuple[str, str, str, Any, int]] = [
    # name, method, path ({target} = an existing user), body, status for an admin
    ("create", "POST", USERS, {"email": "{email}", "name": "N", "role": "user"}, 201),
    ("list", "GET", USERS, None, 200),
    ("get", "GET", USERS + "/{target}", None, 200),
    ("update", "PATCH", USERS + "/{target}", {"name": "Renamed"}, 200),
    ("impersonate", "POST", USERS + "/{target}/impersonate", None, 201),
]


def _fill(value: Any, subs: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**subs)
    if isinstance(value, dict):
        return {k: _fill(v, subs) for k, v in value.items()}
    return value


@pytest.mark.parametrize("caller", ["anonymous", "user", "user_about_self", "admin"])
@pytest.mark.parametrize(
    ("method", "path", "body", "admin_status"),
    [r[1:] for r in ROUTES],
    ids=[r[0] for r in ROUTES],
)
async def test_admin_routes_by_caller(
    client: httpx.AsyncClient,
    app: Rampart,
    make_user: MakeUser,
    caller: str,
    method: str,
    path: str,
    body: Any,
    admin_status: int,
) -> None:
    me = await make_user("admin" if caller == "admin" else "user")
    target = me if caller == "user_about_self" else await make_user()
    email = unique_email("route")
    subs = {"target": target.id, "email": email}
    headers = {} if caller == "anonymous" else me.headers
    before = await app.services.db.fetchrow(
        "SELECT name, role, disabled, version FROM users WHERE id = $1", uuid.UUID(target.id)
    )

    r = await client.request(method, _fill(path, subs), json=_fill(body, subs), headers=headers)

    if caller == "anonymous":
        assert r.status_code == 401, r.text
        assert r.headers["www-authenticate"] == "Bearer"
    elif caller != "admin":
        assert r.status_code == 403, r.text
        assert r.json()["code"] == "forbidden"
    else:
        assert r.status_code == admin_status, r.text
    refused = caller != "admin"
    after = await app.services.db.fetchrow(
        "SELECT name, role, disabled, version FROM users WHERE id = $1", uuid.UUID(target.id)
    )
    created = await app.services.db.fetchval("SELECT count(*) FROM users WHERE email = $1", email)
    sessions = await app.services.db.fetchval(
        "SELECT count(*) FROM sessions WHERE user_id = $1", uuid.UUID(target.id)
    )
    if refused:
        assert after == before
        assert created == 0
        assert sessions == 1
        assert await events_by(app, me.id) == []
        return
    # the admin's one write, and its one event
    written = await events_by(app, me.id)
    if method == "GET":
        assert written == []
    elif path == USERS:
        new_id = r.json()["data"]["id"]
        assert r.headers["location"] == f"{USERS}/{new_id}"
        assert created == 1
        assert written == [("users.created", new_id)]
        assert await events_of(app, new_id) == [("users.created", new_id, me.id)]
    elif path.endswith("/impersonate"):
        assert sessions == 2
        assert written == [("users.impersonated", target.id)]
    else:
        assert after["name"] == "Renamed"
        assert after["version"] == before["version"] + 1
        assert written == [("users.updated", target.id)]


async def test_users_delete_is_not_a_route(client: httpx.AsyncClient, admin: User, alice: User) -> None:
    r = await client.delete(f"{USERS}/{alice.id}", headers=admin.headers)
    assert r.status_code == 405
    assert "DELETE" not in r.headers["allow"]


# ----- create -----------------------------------------------------------------------------------------------


async def test_create_user(client: httpx.AsyncClient, app: Rampart, admin: User) -> None:
    email = unique_email("Mixed.Case")
    r = await client.post(
        USERS, json={"email": f"  {email.upper()}  ", "name": "Ada", "role": "admin"}, headers=admin.headers
    )
    assert r.status_code == 201, r.text
    user = r.json()["data"]
    assert user["email"] == email.lower()  # trimmed and lower-cased
    assert user["name"] == "Ada"
    assert user["role"] == "admin"
    assert user["disabled"] is False
    assert user["version"] == 1
    assert r.headers["etag"] == '"1"'
    assert r.headers["location"] == f"{USERS}/{user['id']}"
    assert await events_of(app, user["id"]) == [("users.created", user["id"], admin.id)]
    r = await client.get(r.headers["location"], headers=admin.headers)
    assert r.status_code == 200
    assert r.json()["data"] == user


async def test_create_user_defaults(client: httpx.AsyncClient, admin: User) -> None:
    r = await client.post(USERS, json={"email": unique_email()}, headers=admin.headers)
    assert r.status_code == 201, r.text
    assert r.json()["data"]["role"] == "user"
    assert r.json()["data"]["name"] == ""


INVALID_CREATES: list[tuple[str, dict[str, Any], set[str]]] = [
    ("no_at", {"email": "not-an-email", "role": "user"}, {"email"}),
    ("two_ats", {"email": "a@b@example.test"}, {"email"}),
    ("space_inside", {"email": "a b@example.test"}, {"email"}),
    ("empty_email", {"email": ""}, {"email"}),
    ("email_not_string", {"email": 42}, {"email"}),
    ("email_null", {"email": None}, {"email"}),
    ("email_too_long", {"email": "a" * 64 + "@" + "b" * 300}, {"email"}),
    ("missing_email", {"name": "No Email"}, {"email"}),
    ("unknown_role", {"email": "{email}", "role": "superuser"}, {"role"}),
    ("role_wrong_case", {"email": "{email}", "role": "Admin"}, {"role"}),
    ("role_system", {"email": "{email}", "role": "system"}, {"role"}),
    ("role_not_string", {"email": "{email}", "role": ["admin"]}, {"role"}),
    ("name_too_long", {"email": "{email}", "name": "n" * 201}, {"name"}),
    ("disabled_not_bool", {"email": "{email}", "disabled": "false"}, {"disabled"}),
    ("unknown_field", {"email": "{email}", "password": "hunter2"}, {"password"}),
    ("server_field_id", {"email": "{email}", "id": str(uuid.uuid4())}, {"id"}),
    ("server_field_version", {"email": "{email}", "version": 7}, {"version"}),
    ("several_bad", {"email": "nope", "role": "root", "name": 5}, {"email", "role", "name"}),
]


@pytest.mark.parametrize(
    ("body", "fields"), [c[1:] for c in INVALID_CREATES], ids=[c[0] for c in INVALID_CREATES]
)
async def test_create_user_validation(
    client: httpx.AsyncClient, app: Rampart, admin: User, body: dict[str, Any], fields: set[str]
) -> None:
    email = unique_email("invalid")
    r = await client.post(USERS, json=_fill(body, {"email": email}), headers=admin.headers)
    assert r.status_code == 422, r.text
    problem = r.json()
    assert problem["code"] == "validation_failed"
    assert {e["field"] for e in problem["errors"]} == fields
    assert await app.services.db.fetchval("SELECT count(*) FROM users WHERE email = $1", email) == 0
    assert await events_by(app, admin.id) == []


@pytest.mark.parametrize(
    "variant", [str.upper, str.title, lambda e: " " + e + " "], ids=["upper", "title", "padded"]
)
async def test_duplicate_email_is_a_conflict_case_insensitively(
    client: httpx.AsyncClient, app: Rampart, admin: User, variant: Any
) -> None:
    email = unique_email("dup")
    r = await client.post(USERS, json={"email": email}, headers=admin.headers)
    assert r.status_code == 201
    first = r.json()["data"]["id"]
    r = await client.post(USERS, json={"email": variant(email), "name": "Copy"}, headers=admin.headers)
    assert r.status_code == 409, r.text
    assert r.json()["code"] == "conflict"
    assert await app.services.db.fetchval("SELECT count(*) FROM users WHERE lower(email) = $1", email) == 1
    assert await events_by(app, admin.id) == [("users.created", first)]


# ----- list -------------------------------------------------------------------------------------------------


@pytest.fixture
async def population(client: httpx.AsyncClient, admin: User) -> tuple[str, list[dict[str, Any]]]:
    """Five users sharing a marker in their email: two admins, three users (one disabled)."""
    marker = uuid.uuid4().hex[:10]
    made = []
    for i, role in enumerate(["admin", "user", "user", "admin", "user"]):
        body = {"email": f"pop{i}-{marker}@example.test", "name": f"Pop {i}", "role": role}
        r = await client.post(USERS, json=body, headers=admin.headers)
        assert r.status_code == 201
        made.append(r.json()["data"])
    r = await client.patch(f"{USERS}/{made[2]['id']}", json={"disabled": True}, headers=admin.headers)
    assert r.status_code == 200
    made[2] = r.json()["data"]
    return marker, made


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", [0, 1, 2, 3, 4]),
        ("&role=admin", [0, 3]),
        ("&role=user", [1, 2, 4]),
        ("&role[in]=admin,user", [0, 1, 2, 3, 4]),
        ("&role[ne]=admin", [1, 2, 4]),
        ("&disabled=true", [2]),
        ("&disabled=false&role=user", [1, 4]),
        ("&name=Pop 3", [3]),
        ("&name[contains]=pop 1", [1]),
    ],
    ids=[
        "all",
        "admins",
        "users",
        "role_in",
        "role_ne",
        "disabled",
        "enabled_users",
        "name_eq",
        "name_contains",
    ],
)
async def test_list_filters(
    client: httpx.AsyncClient,
    admin: User,
    population: tuple[str, list[dict[str, Any]]],
    query: str,
    expected: list[int],
) -> None:
    marker, made = population
    r = await client.get(f"{USERS}?email[contains]={marker}&include_total=true{query}", headers=admin.headers)
    assert r.status_code == 200, r.text
    ids = [u["id"] for u in r.json()["data"]]
    assert sorted(ids) == sorted(made[i]["id"] for i in expected)
    assert r.json()["meta"]["total"] == len(expected)


async def test_list_email_filters_are_case_insensitive(
    client: httpx.AsyncClient, admin: User, population: tuple[str, list[dict[str, Any]]]
) -> None:
    marker, made = population
    r = await client.get(f"{USERS}?email[contains]=POP4-{marker.upper()}", headers=admin.headers)
    assert [u["id"] for u in r.json()["data"]] == [made[4]["id"]]
    # emails are stored lower-cased, so an exact match must not depend on the case asked for either
    r = await client.get(f"{USERS}?email=POP4-{marker.upper()}@Example.TEST", headers=admin.headers)
    assert [u["id"] for u in r.json()["data"]] == [made[4]["id"]]
    r = await client.get(
        f"{USERS}?email[in]=Pop1-{marker}@example.test,POP3-{marker}@EXAMPLE.test", headers=admin.headers
    )
    assert sorted(u["id"] for u in r.json()["data"]) == sorted([made[1]["id"], made[3]["id"]])


async def test_list_pagination_and_sort(
    client: httpx.AsyncClient, admin: User, population: tuple[str, list[dict[str, Any]]]
) -> None:
    marker, made = population
    seen: list[str] = []
    url = f"{USERS}?email[contains]={marker}&sort=email&limit=2"
    pages = 0
    cursor = None
    while True:
        r = await client.get(url + (f"&cursor={cursor}" if cursor else ""), headers=admin.headers)
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["data"]) <= 2
        assert page["meta"]["limit"] == 2
        seen += [u["email"] for u in page["data"]]
        pages += 1
        cursor = page["meta"]["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == sorted(u["email"] for u in made)
    r = await client.get(f"{USERS}?email[contains]={marker}&sort=-name&fields=id,name", headers=admin.headers)
    assert r.json()["data"] == [{"id": u["id"], "name": u["name"]} for u in reversed(made)]


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("role=root", "role"),
        ("disabled=maybe", "disabled"),
        ("email[gt]=a", "email[gt]"),
        ("created_by=x", "created_by"),
        ("sort=disabled", "sort"),
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("cursor=forged", "cursor"),
    ],
)
async def test_list_bad_queries(client: httpx.AsyncClient, admin: User, query: str, param: str) -> None:
    r = await client.get(f"{USERS}?{query}", headers=admin.headers)
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "invalid_query"
    assert [e["field"] for e in r.json()["errors"]] == [param]


# ----- update -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field", "value"),
    [
        ({"name": "Grace Hopper"}, "name", "Grace Hopper"),
        ({"role": "admin"}, "role", "admin"),
        ({"disabled": True}, "disabled", True),
    ],
    ids=["name", "role", "disabled"],
)
async def test_patch_user(
    client: httpx.AsyncClient,
    app: Rampart,
    admin: User,
    alice: User,
    change: dict[str, Any],
    field: str,
    value: Any,
) -> None:
    r = await client.patch(f"{USERS}/{alice.id}", json=change, headers={**admin.headers, "If-Match": '"1"'})
    assert r.status_code == 200, r.text
    user = r.json()["data"]
    assert user[field] == value
    assert user["version"] == 2
    assert user["email"] == alice.email
    assert r.headers["etag"] == '"2"'
    assert await events_of(app, alice.id) == [
        ("users.created", alice.id, str(SYSTEM_ID)),  # made by the fixture, as the system
        ("users.updated", alice.id, admin.id),
    ]
    changes = await app.services.db.fetchval(
        "SELECT changes FROM events WHERE resource_id = $1 AND type = 'users.updated'", alice.id
    )
    assert field in changes


INVALID_PATCHES: list[tuple[str, dict[str, Any], str]] = [
    ("email_immutable", {"email": "new@example.test"}, "email"),
    ("email_same_value", {"email": "{email}"}, "email"),
    ("unknown_role", {"role": "owner"}, "role"),
    ("disabled_null", {"disabled": None}, "disabled"),
    ("disabled_string", {"disabled": "true"}, "disabled"),
    ("name_too_long", {"name": "x" * 201}, "name"),
    ("id", {"id": str(uuid.uuid4())}, "id"),
    ("version", {"version": 5}, "version"),
    ("unknown_field", {"is_admin": True}, "is_admin"),
]


@pytest.mark.parametrize(
    ("body", "field"), [c[1:] for c in INVALID_PATCHES], ids=[c[0] for c in INVALID_PATCHES]
)
async def test_patch_user_validation(
    client: httpx.AsyncClient, app: Rampart, admin: User, alice: User, body: dict[str, Any], field: str
) -> None:
    r = await client.patch(
        f"{USERS}/{alice.id}", json=_fill(body, {"email": alice.email}), headers=admin.headers
    )
    assert r.status_code == 422, r.text
    assert [e["field"] for e in r.json()["errors"]] == [field]
    row = await app.services.db.fetchrow(
        "SELECT email, version FROM users WHERE id = $1", uuid.UUID(alice.id)
    )
    assert row["email"] == alice.email
    assert row["version"] == 1
    assert await events_by(app, admin.id) == []


async def test_patch_user_if_match_mismatch(
    client: httpx.AsyncClient, app: Rampart, admin: User, alice: User
) -> None:
    r = await client.patch(
        f"{USERS}/{alice.id}", json={"name": "X"}, headers={**admin.headers, "If-Match": '"9"'}
    )
    assert r.status_code == 412, r.text
    assert await events_by(app, admin.id) == []


@pytest.mark.parametrize("method", ["GET", "PATCH"])
@pytest.mark.parametrize("key", ["random", "not-a-uuid", "1", "{uuid_no_hyphens}"])
async def test_unknown_or_malformed_user_id_is_404(
    client: httpx.AsyncClient, admin: User, method: str, key: str
) -> None:
    key = {"random": str(uuid.uuid4()), "{uuid_no_hyphens}": uuid.uuid4().hex}.get(key, key)
    r = await client.request(method, f"{USERS}/{key}", json={"name": "x"}, headers=admin.headers)
    assert r.status_code == 404, r.text
    assert r.json()["code"] == "not_found"


# ----- impersonation ----------------------------------------------------------------------------------------


async def test_impersonate(client: httpx.AsyncClient, app: Rampart, admin: User, alice: User) -> None:
    r = await client.post(f"{USERS}/{alice.id}/impersonate", headers=admin.headers)
    assert r.status_code == 201, r.text
    pair = r.json()["data"]
    assert pair["token_type"] == "Bearer"
    assert pair["expires_in"] == app.services.tokens.ttl
    assert pair["refresh_token"]
    assert pair["access_token"]

    r = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {pair['access_token']}"})
    assert r.status_code == 200
    me = r.json()["data"]
    assert me["id"] == alice.id
    assert me["role"] == "user"
    assert "users:manage" not in me["permissions"]
    # the impersonation token has the target's rights, not the admin's
    r = await client.get(USERS, headers={"Authorization": f"Bearer {pair['access_token']}"})
    assert r.status_code == 403

    events = await events_of(app, alice.id)
    assert events[-1] == ("users.impersonated", alice.id, admin.id)
    assert [e[0] for e in events].count("users.impersonated") == 1
    claims = app.services.tokens.verify(pair["access_token"])
    session = await app.services.db.fetchrow(
        "SELECT user_id, impersonator_id, revoked_at FROM sessions WHERE id = $1", claims.session_id
    )
    assert str(session["user_id"]) == alice.id
    assert str(session["impersonator_id"]) == admin.id
    assert session["revoked_at"] is None
    data = await app.services.db.fetchval(
        "SELECT data FROM events WHERE resource_id = $1 AND type = 'users.impersonated'", alice.id
    )
    assert "access_token" not in str(data)
    assert pair["refresh_token"] not in str(data)


async def test_impersonating_a_disabled_user_is_409_user_disabled(
    client: httpx.AsyncClient, app: Rampart, admin: User, alice: User
) -> None:
    """GET shows a disabled user, so impersonating one says why it cannot be done (it was a 404)."""
    r = await client.patch(f"{USERS}/{alice.id}", json={"disabled": True}, headers=admin.headers)
    assert r.status_code == 200
    r = await client.post(f"{USERS}/{alice.id}/impersonate", headers=admin.headers)
    assert r.status_code == 409, r.text
    assert r.json()["code"] == "user_disabled"
    assert (await client.get(f"{USERS}/{alice.id}", headers=admin.headers)).status_code == 200
    active = await app.services.db.fetchval(
        "SELECT count(*) FROM sessions WHERE user_id = $1 AND revoked_at IS NULL", uuid.UUID(alice.id)
    )
    assert active == 0
    assert [e[0] for e in await events_of(app, alice.id)] == ["users.created", "users.updated"]


@pytest.mark.parametrize("key", ["not-a-uuid", "{random}"])
async def test_impersonating_unknown_or_malformed_id_is_404(
    client: httpx.AsyncClient, app: Rampart, admin: User, key: str
) -> None:
    r = await client.post(f"{USERS}/{key.format(random=uuid.uuid4())}/impersonate", headers=admin.headers)
    assert r.status_code == 404, r.text
    assert await events_by(app, admin.id) == []


async def test_non_admin_cannot_impersonate(
    client: httpx.AsyncClient, app: Rampart, alice: User, bob: User
) -> None:
    r = await client.post(f"{USERS}/{bob.id}/impersonate", headers=alice.headers)
    assert r.status_code == 403
    count = await app.services.db.fetchval(
        "SELECT count(*) FROM sessions WHERE user_id = $1", uuid.UUID(bob.id)
    )
    assert count == 1
    assert await events_by(app, alice.id) == []
    r = await client.post(f"{USERS}/{bob.id}/impersonate")
    assert r.status_code == 401
