"""The sessions API: list the caller's sessions, revoke one, log out, log out everywhere."""

from __future__ import annotations

import uuid

import httpx

from rampart.app import Rampart
from rampart.auth.sessions import TokenPair, open_session
from tests.conftest import User

SESSIONS = "/api/v1/auth/sessions"
LOGOUT = "/api/v1/auth/logout"
REFRESH = "/api/v1/auth/refresh"
ME = "/api/v1/auth/me"


async def open_for(app: Rampart, user: User, *, agent: str, ip: str) -> TokenPair:
    async with app.services.db.transaction() as conn:
        return await open_session(
            conn,
            app.services.tokens,
            user_id=uuid.UUID(user.id),
            role=user.role,
            session_ttl=3600,
            user_agent=agent,
            ip=ip,
        )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_sessions_lists_only_the_callers_active_sessions(
    client: httpx.AsyncClient, app: Rampart, alice: User, bob: User
) -> None:
    phone = await open_for(app, alice, agent="Phone/1.0", ip="198.51.100.7")
    laptop = await open_for(app, alice, agent="Laptop/2.0", ip="203.0.113.9")
    gone = await open_for(app, alice, agent="Old/0.1", ip="192.0.2.1")
    await app.services.db.execute("UPDATE sessions SET revoked_at = now() WHERE id = $1", gone.session_id)
    r = await client.get(SESSIONS, headers=bearer(laptop.access_token))
    assert r.status_code == 200, r.text
    items = r.json()["data"]
    by_id = {item["id"]: item for item in items}
    assert set(by_id) == {str(alice.session_id), str(phone.session_id), str(laptop.session_id)}
    assert [i["id"] for i in items][:2] == [str(laptop.session_id), str(phone.session_id)]  # newest first
    assert by_id[str(phone.session_id)]["device"] == "Phone/1.0"
    assert by_id[str(phone.session_id)]["ip"] == "198.51.100.7"
    assert by_id[str(laptop.session_id)]["current"] is True
    assert by_id[str(phone.session_id)]["current"] is False
    for item in items:
        assert item["created_at"].endswith("Z")
        assert "last_used_at" in item
        assert "refresh_token" not in str(item)
    # bob sees only his own
    r = await client.get(SESSIONS, headers=bob.headers)
    assert [i["id"] for i in r.json()["data"]] == [str(bob.session_id)]


async def test_last_used_is_the_last_refresh(client: httpx.AsyncClient, app: Rampart, alice: User) -> None:
    pair = await open_for(app, alice, agent="A", ip="192.0.2.2")
    r = await client.get(SESSIONS, headers=alice.headers)
    assert {i["id"]: i["last_used_at"] for i in r.json()["data"]}[str(pair.session_id)] is None
    assert (await client.post(REFRESH, json={"refresh_token": pair.refresh_token})).status_code == 200
    r = await client.get(SESSIONS, headers=alice.headers)
    assert {i["id"]: i["last_used_at"] for i in r.json()["data"]}[str(pair.session_id)] is not None


async def test_revoking_one_of_my_sessions(client: httpx.AsyncClient, app: Rampart, alice: User) -> None:
    other = await open_for(app, alice, agent="Tablet", ip="192.0.2.3")
    assert (await client.get(ME, headers=bearer(other.access_token))).status_code == 200
    r = await client.delete(f"{SESSIONS}/{other.session_id}", headers=alice.headers)
    assert r.status_code == 204, r.text
    assert (await client.get(ME, headers=bearer(other.access_token))).status_code == 401
    assert (await client.post(REFRESH, json={"refresh_token": other.refresh_token})).status_code == 401
    assert (await client.get(ME, headers=alice.headers)).status_code == 200
    # a second time: it is no longer an active session
    assert (await client.delete(f"{SESSIONS}/{other.session_id}", headers=alice.headers)).status_code == 404


async def test_another_users_session_is_not_found_and_survives(
    client: httpx.AsyncClient, app: Rampart, alice: User, bob: User, admin: User
) -> None:
    for caller in (alice, admin):  # admins too: this is the caller's own sessions API
        r = await client.delete(f"{SESSIONS}/{bob.session_id}", headers=caller.headers)
        assert r.status_code == 404, r.text
        assert r.json()["code"] == "not_found"
    for bad in (uuid.uuid4(), "not-a-uuid"):
        assert (await client.delete(f"{SESSIONS}/{bad}", headers=alice.headers)).status_code == 404
    assert (await client.get(ME, headers=bob.headers)).status_code == 200
    revoked = await app.services.db.fetchval("SELECT revoked_at FROM sessions WHERE id = $1", bob.session_id)
    assert revoked is None


async def test_logout_revokes_only_the_callers_session(
    client: httpx.AsyncClient, app: Rampart, alice: User
) -> None:
    pair = await open_for(app, alice, agent="Browser", ip="192.0.2.4")
    r = await client.post(LOGOUT, headers=bearer(pair.access_token))
    assert r.status_code == 204
    assert r.content == b""
    assert (await client.get(ME, headers=bearer(pair.access_token))).status_code == 401
    assert (await client.post(REFRESH, json={"refresh_token": pair.refresh_token})).status_code == 401
    assert (await client.get(ME, headers=alice.headers)).status_code == 200
    # logging out again with the dead token is a 401, not a 500
    assert (await client.post(LOGOUT, headers=bearer(pair.access_token))).status_code == 401


async def test_logout_everywhere(client: httpx.AsyncClient, app: Rampart, alice: User, bob: User) -> None:
    pairs = [await open_for(app, alice, agent=f"Device {i}", ip="192.0.2.5") for i in range(3)]
    r = await client.post(f"{LOGOUT}?all=true", headers=bearer(pairs[0].access_token))
    assert r.status_code == 204
    for token in [alice.token, *(p.access_token for p in pairs)]:
        assert (await client.get(ME, headers=bearer(token))).status_code == 401
    for pair in pairs:
        assert (await client.post(REFRESH, json={"refresh_token": pair.refresh_token})).status_code == 401
    active = await app.services.db.fetchval(
        "SELECT count(*) FROM sessions WHERE user_id = $1 AND revoked_at IS NULL", uuid.UUID(alice.id)
    )
    assert active == 0
    assert (await client.get(ME, headers=bob.headers)).status_code == 200


async def test_logout_with_a_bad_flag_is_a_bad_query(client: httpx.AsyncClient, alice: User) -> None:
    r = await client.post(f"{LOGOUT}?all=maybe", headers=alice.headers)
    assert r.status_code == 400
    assert r.json()["code"] == "invalid_query"
    assert (await client.get(ME, headers=alice.headers)).status_code == 200


async def test_sessions_routes_need_authentication(client: httpx.AsyncClient) -> None:
    for method, url in (("GET", SESSIONS), ("POST", LOGOUT), ("DELETE", f"{SESSIONS}/{uuid.uuid4()}")):
        r = await client.request(method, url)
        assert r.status_code == 401, (method, url)
        assert r.headers["www-authenticate"] == "Bearer"
