"""Authentication over HTTP: every refused credential is a 401 with the right `WWW-Authenticate`, and
revocation, disabling and demotion take effect within 1 s (API.md "Authentication", "Sessions").

Tokens are minted with joserfc and the test secret; where a library refuses to make a bad token (an `alg`
label that does not match the signature), it is assembled by hand (tests/jwts.py).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from rampart.app import Rampart
from rampart.auth.sessions import open_session
from tests.conftest import TEST_SECRET, MakeUser, User
from tests.jwts import b64, craft, sign

ME = "/api/v1/auth/me"
ADMIN_USERS = "/api/v1/admin/users"
BOUND = 1.2  # the contract's 1 s plus slack for the test itself
_DROP: Any = object()


def claims_for(app: Rampart, user: User, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": app.services.tokens.issuer,
        "aud": app.services.tokens.audience,
        "sub": user.id,
        "sid": str(user.session_id),
        "role": user.role,
        "iat": now,
        "exp": now + 300,
        "jti": str(uuid.uuid4()),
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not _DROP}


def mint(app: Rampart, user: User, **overrides: Any) -> str:
    return sign(claims_for(app, user, **overrides), TEST_SECRET, "HS256")


def hs512(claims: dict[str, Any]) -> str:
    return sign(claims, TEST_SECRET, "HS512")


def flip_signature(token: str) -> str:
    head, payload, sig = token.split(".")
    return f"{head}.{payload}.{sig[:-4]}{'AAAA' if not sig.endswith('AAAA') else 'BBBB'}"


def swap_payload(app: Rampart, user: User, token: str) -> str:
    head, _, sig = token.split(".")
    return f"{head}.{b64(json.dumps(claims_for(app, user, role='admin')).encode())}.{sig}"


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_unauthorized(r: httpx.Response, *, token_present: bool) -> None:
    assert r.status_code == 401, r.text
    expected = 'Bearer error="invalid_token"' if token_present else "Bearer"
    assert r.headers["www-authenticate"] == expected
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == 401
    assert body["code"] == "unauthorized"
    assert "traceback" not in r.text.lower()
    assert "jwt" not in body["detail"].lower()


async def refused_within(
    client: httpx.AsyncClient, method: str, url: str, headers: dict[str, str], refused: int = 401
) -> float:
    """Seconds until the request gets `refused`; fails if still served after the bound."""
    started = time.monotonic()
    while True:
        r = await client.request(method, url, headers=headers)
        if r.status_code == refused:
            return time.monotonic() - started
        assert r.status_code == 200, r.text
        elapsed = time.monotonic() - started
        assert elapsed < BOUND, f"still served after {elapsed:.2f}s"
        await asyncio.sleep(0.05)


# ----- missing or malformed credentials ------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer    "},
        {"Authorization": "Basic dXNlcjpwYXNzd29yZA=="},
        {"Authorization": "Token abc.def.ghi"},
    ],
    ids=["no_header", "empty_header", "scheme_only", "blank_token", "basic", "other_scheme"],
)
@pytest.mark.parametrize("url", [ME, "/api/v1/projects", ADMIN_USERS])
async def test_missing_credentials_get_plain_bearer_challenge(
    client: httpx.AsyncClient, headers: dict[str, str], url: str
) -> None:
    assert_unauthorized(await client.get(url, headers=headers), token_present=False)


async def test_valid_minted_token_is_accepted(client: httpx.AsyncClient, app: Rampart, alice: User) -> None:
    """The control: a token minted the same way as the bad ones below works."""
    r = await client.get(ME, headers=auth(mint(app, alice)))
    assert r.status_code == 200
    assert r.json()["data"]["id"] == alice.id
    r = await client.get(
        ME, headers=auth(craft({"alg": "HS256", "typ": "JWT"}, claims_for(app, alice), TEST_SECRET))
    )
    assert r.status_code == 200


BAD: list[tuple[str, Callable[[Rampart, User, User], str]]] = [
    ("tampered_signature", lambda a, u, o: flip_signature(mint(a, u))),
    ("tampered_payload", lambda a, u, o: swap_payload(a, u, mint(a, u))),
    (
        "other_secret",
        lambda a, u, o: sign(claims_for(a, u), "not-the-secret-" + "q" * 40, "HS256"),
    ),
    ("alg_none", lambda a, u, o: craft({"alg": "none", "typ": "JWT"}, claims_for(a, u), None)),
    ("alg_none_by_a_library", lambda a, u, o: sign(claims_for(a, u), None, "none")),
    ("alg_none_with_signature", lambda a, u, o: craft({"alg": "none"}, claims_for(a, u), TEST_SECRET)),
    ("hs512", lambda a, u, o: hs512(claims_for(a, u))),
    (
        "rs256_label_hmac_signed",
        lambda a, u, o: craft({"alg": "RS256", "typ": "JWT"}, claims_for(a, u), TEST_SECRET),
    ),
    ("rs256_label_unsigned", lambda a, u, o: craft({"alg": "RS256", "typ": "JWT"}, claims_for(a, u), None)),
    ("eddsa_label", lambda a, u, o: craft({"alg": "EdDSA", "typ": "JWT"}, claims_for(a, u), TEST_SECRET)),
    ("wrong_iss", lambda a, u, o: mint(a, u, iss="https://evil.example")),
    ("wrong_aud", lambda a, u, o: mint(a, u, aud="some-other-api")),
    ("expired", lambda a, u, o: mint(a, u, iat=int(time.time()) - 1200, exp=int(time.time()) - 60)),
    ("missing_sid", lambda a, u, o: mint(a, u, sid=_DROP)),
    ("missing_jti", lambda a, u, o: mint(a, u, jti=_DROP)),
    ("missing_sub", lambda a, u, o: mint(a, u, sub=_DROP)),
    ("missing_exp", lambda a, u, o: mint(a, u, exp=_DROP)),
    ("sub_not_uuid", lambda a, u, o: mint(a, u, sub="admin")),
    ("unknown_session", lambda a, u, o: mint(a, u, sid=str(uuid.uuid4()))),
    ("session_of_another_user", lambda a, u, o: mint(a, u, sid=str(o.session_id))),
    ("unknown_user_on_real_session", lambda a, u, o: mint(a, u, sub=str(uuid.uuid4()))),
    ("garbage", lambda a, u, o: "garbage"),
    ("garbage_three_parts", lambda a, u, o: "aaa.bbb.ccc"),
    ("non_ascii", lambda a, u, o: "été.été.été"),
]


@pytest.mark.parametrize("make", [m for _, m in BAD], ids=[n for n, _ in BAD])
async def test_bad_tokens_get_invalid_token_challenge(
    client: httpx.AsyncClient,
    app: Rampart,
    alice: User,
    bob: User,
    make: Callable[[Rampart, User, User], str],
) -> None:
    token = make(app, alice, bob)
    # raw bytes, so a non-ASCII token reaches the server as a client would send it
    headers: Any = {"Authorization": ("Bearer " + token).encode()}
    assert_unauthorized(await client.get(ME, headers=headers), token_present=True)
    # the same refusal on a write: nothing is created
    r = await client.post("/api/v1/projects", json={"name": "should not exist"}, headers=headers)
    assert_unauthorized(r, token_present=True)
    created = await app.services.db.fetchval(
        "SELECT count(*) FROM projects WHERE owner_id = $1", uuid.UUID(alice.id)
    )
    assert created == 0


# ----- revocation, disabling, demotion ----------------------------------------------------------------


async def test_revoked_session_stops_working_within_one_second(
    client: httpx.AsyncClient, app: Rampart, alice: User
) -> None:
    assert (await client.get(ME, headers=alice.headers)).status_code == 200  # warm the session cache
    await app.services.db.execute("UPDATE sessions SET revoked_at = now() WHERE id = $1", alice.session_id)
    await refused_within(client, "GET", ME, alice.headers)
    r = await client.get(ME, headers=alice.headers)
    assert_unauthorized(r, token_present=True)


async def test_revoking_one_session_leaves_the_others(
    client: httpx.AsyncClient, app: Rampart, alice: User
) -> None:
    async with app.services.db.transaction() as conn:
        other = await open_session(
            conn, app.services.tokens, user_id=uuid.UUID(alice.id), role="user", session_ttl=600
        )
    await app.services.db.execute("UPDATE sessions SET revoked_at = now() WHERE id = $1", alice.session_id)
    await refused_within(client, "GET", ME, alice.headers)
    r = await client.get(ME, headers=auth(other.access_token))
    assert r.status_code == 200
    assert r.json()["data"]["id"] == alice.id


async def test_disabled_user_is_refused_within_one_second_and_sessions_are_revoked(
    client: httpx.AsyncClient, app: Rampart, admin: User, alice: User
) -> None:
    async with app.services.db.transaction() as conn:
        second = await open_session(
            conn, app.services.tokens, user_id=uuid.UUID(alice.id), role="user", session_ttl=600
        )
    for token in (alice.token, second.access_token):
        assert (await client.get(ME, headers=auth(token))).status_code == 200
    r = await client.patch(f"{ADMIN_USERS}/{alice.id}", json={"disabled": True}, headers=admin.headers)
    assert r.status_code == 200, r.text
    assert r.json()["data"]["disabled"] is True
    active = await app.services.db.fetchval(
        "SELECT count(*) FROM sessions WHERE user_id = $1 AND revoked_at IS NULL", uuid.UUID(alice.id)
    )
    assert active == 0
    await refused_within(client, "GET", ME, alice.headers)
    await refused_within(client, "GET", "/api/v1/projects", auth(second.access_token))
    # a token minted for the revoked session is refused too; the user record is still there
    assert_unauthorized(await client.get(ME, headers=auth(mint(app, alice))), token_present=True)
    events = await app.services.db.fetch(
        "SELECT type, actor_id, changes FROM events WHERE resource_id = $1 AND type = 'users.updated'",
        alice.id,
    )
    assert [(e["type"], str(e["actor_id"])) for e in events] == [("users.updated", admin.id)]


async def test_a_new_session_of_a_disabled_user_is_refused(
    client: httpx.AsyncClient, app: Rampart, admin: User, alice: User
) -> None:
    """Disabling is checked on every request, not only by revoking the sessions that existed then."""
    r = await client.patch(f"{ADMIN_USERS}/{alice.id}", json={"disabled": True}, headers=admin.headers)
    assert r.status_code == 200
    async with app.services.db.transaction() as conn:
        late = await open_session(
            conn, app.services.tokens, user_id=uuid.UUID(alice.id), role="user", session_ttl=600
        )
    assert_unauthorized(await client.get(ME, headers=auth(late.access_token)), token_present=True)


async def test_demoted_admin_loses_admin_rights_within_one_second(
    client: httpx.AsyncClient, app: Rampart, make_user: MakeUser
) -> None:
    boss, demoted = await make_user("admin"), await make_user("admin")
    assert (await client.get(ADMIN_USERS, headers=demoted.headers)).status_code == 200
    r = await client.patch(f"{ADMIN_USERS}/{demoted.id}", json={"role": "user"}, headers=boss.headers)
    assert r.status_code == 200
    assert r.json()["data"]["role"] == "user"
    await refused_within(client, "GET", ADMIN_USERS, demoted.headers, refused=403)
    # the session itself still works, with the permissions of the new role
    r = await client.get(ME, headers=demoted.headers)
    assert r.status_code == 200
    me = r.json()["data"]
    assert me["role"] == "user"
    assert me["permissions"] == sorted(app.services.roles.permissions("user"))
    # and admin visibility is gone: another user's project is now 404
    other = await make_user()
    r = await client.post("/api/v1/projects", json={"name": "private"}, headers=other.headers)
    r = await client.get(f"/api/v1/projects/{r.json()['data']['id']}", headers=demoted.headers)
    assert r.status_code == 404


async def test_promoted_user_gains_admin_rights_within_one_second(
    client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    boss, promoted = await make_user("admin"), await make_user()
    assert (await client.get(ADMIN_USERS, headers=promoted.headers)).status_code == 403
    r = await client.patch(f"{ADMIN_USERS}/{promoted.id}", json={"role": "admin"}, headers=boss.headers)
    assert r.status_code == 200
    started = time.monotonic()
    while (await client.get(ADMIN_USERS, headers=promoted.headers)).status_code != 200:
        assert time.monotonic() - started < BOUND
        await asyncio.sleep(0.05)


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        ("GET", ADMIN_USERS, None),
        ("POST", ADMIN_USERS, {"email": "escalated@example.test"}),
        ("GET", "/api/v1/admin/users/{other}", None),
        ("PATCH", "/api/v1/admin/users/{me}", {"role": "admin"}),
        ("POST", "/api/v1/admin/users/{other}/impersonate", None),
    ],
    ids=["list_users", "create_user", "get_user", "promote_self", "impersonate"],
)
async def test_role_claim_in_the_token_is_not_trusted(
    client: httpx.AsyncClient,
    app: Rampart,
    alice: User,
    bob: User,
    method: str,
    url: str,
    body: dict[str, Any] | None,
) -> None:
    forged = mint(app, alice, role="admin")
    path = url.format(me=alice.id, other=bob.id)
    r = await client.request(method, path, json=body, headers=auth(forged))
    assert r.status_code == 403, r.text
    assert r.json()["code"] == "forbidden"
    role = await app.services.db.fetchval("SELECT role FROM users WHERE id = $1", uuid.UUID(alice.id))
    assert role == "user"
    events = await app.services.db.fetchval(
        "SELECT count(*) FROM events WHERE actor_id = $1", uuid.UUID(alice.id)
    )
    assert events == 0
    r = await client.get(ME, headers=auth(forged))
    assert r.json()["data"]["role"] == "user"
    assert "users:manage" not in r.json()["data"]["permissions"]


async def test_forged_admin_claim_sees_no_other_users_objects(
    client: httpx.AsyncClient, app: Rampart, alice: User, bob: User
) -> None:
    r = await client.post("/api/v1/projects", json={"name": "bob's"}, headers=bob.headers)
    project_id = r.json()["data"]["id"]
    forged = auth(mint(app, alice, role="admin"))
    assert (await client.get(f"/api/v1/projects/{project_id}", headers=forged)).status_code == 404
    r = await client.get("/api/v1/projects?include_total=true", headers=forged)
    assert r.status_code == 200
    assert r.json()["meta"]["total"] == 0


# ----- /auth/me -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["user", "admin"])
async def test_me_returns_the_caller_and_their_permissions(
    client: httpx.AsyncClient, app: Rampart, make_user: MakeUser, role: str
) -> None:
    first, second = await make_user(role, name="First"), await make_user(role, name="Second")
    for user, name in ((first, "First"), (second, "Second")):
        r = await client.get(ME, headers=user.headers)
        assert r.status_code == 200, r.text
        me = r.json()["data"]
        assert me["id"] == user.id
        assert me["email"] == user.email
        assert me["name"] == name
        assert me["role"] == role
        assert me["disabled"] is False
        assert me["permissions"] == sorted(app.services.roles.permissions(role))
        assert set(me) >= {"id", "email", "name", "role", "disabled", "created_at", "updated_at", "version"}
    assert ("users:manage" in me["permissions"]) is (role == "admin")


async def test_me_writes_no_event(client: httpx.AsyncClient, app: Rampart, alice: User) -> None:
    assert (await client.get(ME, headers=alice.headers)).status_code == 200
    rows = await app.services.db.fetch("SELECT type FROM events WHERE resource_id = $1", alice.id)
    assert [r["type"] for r in rows] == ["users.created"]
