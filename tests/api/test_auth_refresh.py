"""Refresh tokens over HTTP: rotation, reuse detection (the whole session dies), the concurrent-refresh
race, and every way a refresh token is refused (API.md "Authentication")."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid

import httpx
import pytest

from rampart.app import Rampart, create_app
from rampart.auth.sessions import TokenPair, open_session
from tests.conftest import MakeUser, User, make_settings

REFRESH = "/api/v1/auth/refresh"
ME = "/api/v1/auth/me"


async def pair_for(app: Rampart, user: User, *, ttl: int = 3600) -> TokenPair:
    async with app.services.db.transaction() as conn:
        return await open_session(
            conn, app.services.tokens, user_id=uuid.UUID(user.id), role=user.role, session_ttl=ttl
        )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_refresh_rotates_the_pair_and_spends_the_old_token(
    client: httpx.AsyncClient, app: Rampart, alice: User
) -> None:
    first = await pair_for(app, alice)
    r = await client.post(REFRESH, json={"refresh_token": first.refresh_token})
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    data = r.json()["data"]
    assert set(data) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert data["token_type"] == "Bearer"
    assert data["expires_in"] == app.services.tokens.ttl
    assert data["refresh_token"] != first.refresh_token
    assert len(data["refresh_token"]) >= 43  # 256 random bits
    me = await client.get(ME, headers=bearer(data["access_token"]))
    assert me.status_code == 200
    assert me.json()["data"]["id"] == alice.id
    # the same session goes on: the new token is one rotation further, and works once more
    claims = app.services.tokens.verify(data["access_token"])
    assert claims.session_id == first.session_id
    r = await client.post(REFRESH, json={"refresh_token": data["refresh_token"]})
    assert r.status_code == 200, r.text
    row = await app.services.db.fetchrow(
        "SELECT refresh_token_hash, last_used_at, revoked_at FROM sessions WHERE id = $1", first.session_id
    )
    assert row["revoked_at"] is None
    assert row["last_used_at"] is not None
    # stored only as a hash: neither the plain token nor anything but its SHA-256
    newest = r.json()["data"]["refresh_token"]
    assert row["refresh_token_hash"] == hashlib.sha256(newest.encode()).hexdigest()
    dump = await app.services.db.fetchval(
        "SELECT count(*) FROM sessions s, spent_refresh_tokens t"
        " WHERE s.refresh_token_hash = ANY($1::text[]) OR t.token_hash = ANY($1::text[])",
        [first.refresh_token, newest, data["refresh_token"]],
    )
    assert dump == 0


async def test_reusing_a_spent_token_revokes_the_whole_session(
    client: httpx.AsyncClient, app: Rampart, alice: User, caplog: pytest.LogCaptureFixture
) -> None:
    first = await pair_for(app, alice)
    r = await client.post(REFRESH, json={"refresh_token": first.refresh_token})
    assert r.status_code == 200
    second = r.json()["data"]
    assert (await client.get(ME, headers=bearer(second["access_token"]))).status_code == 200
    with caplog.at_level(logging.WARNING, logger="rampart.security"):
        r = await client.post(REFRESH, json={"refresh_token": first.refresh_token})  # the thief, or the owner
    assert r.status_code == 401, r.text
    assert r.json()["code"] == "unauthorized"
    # the whole family is dead: the newest refresh token and every access token of the session
    r = await client.post(REFRESH, json={"refresh_token": second["refresh_token"]})
    assert r.status_code == 401
    # this worker was told at once (no waiting for the session cache)
    assert (await client.get(ME, headers=bearer(second["access_token"]))).status_code == 401
    assert (await client.get(ME, headers=bearer(first.access_token))).status_code == 401
    revoked = await app.services.db.fetchval(
        "SELECT revoked_at FROM sessions WHERE id = $1", first.session_id
    )
    assert revoked is not None
    # the other sessions of the user live on
    assert (await client.get(ME, headers=alice.headers)).status_code == 200
    # a security event and a log line, neither holding a token
    events = await app.services.db.fetch(
        "SELECT type, data FROM events WHERE resource_id = $1 AND type = 'users.refresh_token_reused'",
        alice.id,
    )
    assert len(events) == 1
    assert str(first.session_id) in events[0]["data"]
    records = [rec for rec in caplog.records if rec.name == "rampart.security"]
    assert len(records) == 1
    assert records[0].__dict__["session_id"] == str(first.session_id)
    logged = " ".join(f"{rec.getMessage()} {rec.__dict__}" for rec in records)
    for secret in (first.refresh_token, second["refresh_token"]):
        assert secret not in logged
        assert secret not in events[0]["data"]
    # presenting it yet again changes nothing and writes no second event
    assert (await client.post(REFRESH, json={"refresh_token": first.refresh_token})).status_code == 401
    again = await app.services.db.fetchval(
        "SELECT count(*) FROM events WHERE resource_id = $1 AND type = 'users.refresh_token_reused'", alice.id
    )
    assert again == 1


async def test_concurrent_refreshes_with_one_token_have_exactly_one_winner(
    client: httpx.AsyncClient, app: Rampart, make_user: MakeUser
) -> None:
    for _ in range(3):
        user = await make_user()
        pair = await pair_for(app, user)
        results = await asyncio.gather(
            *(client.post(REFRESH, json={"refresh_token": pair.refresh_token}) for _ in range(8))
        )
        statuses = sorted(r.status_code for r in results)
        assert statuses == [200] + [401] * 7, statuses
        spent = await app.services.db.fetchval(
            "SELECT count(*) FROM spent_refresh_tokens WHERE session_id = $1", pair.session_id
        )
        assert spent == 1
        # the losers presented a spent token: by the reuse rule the session is gone too
        revoked = await app.services.db.fetchval(
            "SELECT revoked_at FROM sessions WHERE id = $1", pair.session_id
        )
        assert revoked is not None


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"refresh_token": "not-a-token"}, 401),
        ({"refresh_token": "x" * 600}, 401),
        ({"refresh_token": ""}, 422),
        ({"refresh_token": 42}, 422),
        ({}, 422),
        ([], 422),
    ],
    ids=["unknown", "too_long", "empty", "not_a_string", "missing", "not_an_object"],
)
async def test_bad_refresh_requests_are_refused(client: httpx.AsyncClient, body: object, status: int) -> None:
    r = await client.post(REFRESH, json=body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")


async def test_an_access_token_is_not_a_refresh_token(
    client: httpx.AsyncClient, app: Rampart, alice: User
) -> None:
    assert (await client.post(REFRESH, json={"refresh_token": alice.token})).status_code == 401


@pytest.mark.parametrize("ending", ["revoked", "expired", "disabled"])
async def test_refresh_of_an_ended_session_is_refused(
    client: httpx.AsyncClient, app: Rampart, make_user: MakeUser, ending: str
) -> None:
    user = await make_user()
    pair = await pair_for(app, user)
    db = app.services.db
    if ending == "revoked":
        await db.execute("UPDATE sessions SET revoked_at = now() WHERE id = $1", pair.session_id)
    elif ending == "expired":
        await db.execute(
            "UPDATE sessions SET expires_at = now() - interval '1 s' WHERE id = $1", pair.session_id
        )
    else:
        await db.execute("UPDATE users SET disabled = true WHERE id = $1", uuid.UUID(user.id))
    r = await client.post(REFRESH, json={"refresh_token": pair.refresh_token})
    assert r.status_code == 401, r.text
    # and it was not silently rotated
    spent = await db.fetchval(
        "SELECT count(*) FROM spent_refresh_tokens WHERE session_id = $1", pair.session_id
    )
    assert spent == 0


async def test_refresh_is_limited_per_client_ip_by_the_auth_class(database_url: str) -> None:
    app = create_app(make_settings(database_url, rate_limit_auth="3/minute"))
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            statuses = [
                (await http.post(REFRESH, json={"refresh_token": f"guess-{i}"})).status_code for i in range(4)
            ]
            assert statuses == [401, 401, 401, 429]
            r = await http.post(REFRESH, json={"refresh_token": "guess"})
            assert r.status_code == 429
            assert "retry-after" in r.headers
    finally:
        await app.aclose()


# ----- the cookie path (browser clients) ------------------------------------------------------------------


def cookie_attributes(response: httpx.Response, name: str) -> str:
    found = [v for v in response.headers.get_list("set-cookie") if v.startswith(f"{name}=")]
    assert len(found) == 1, response.headers.get_list("set-cookie")
    return found[0]


def cookie_value(response: httpx.Response, name: str) -> str:
    return cookie_attributes(response, name).split(";", 1)[0].split("=", 1)[1]


def cookies(refresh: str, csrf: str) -> dict[str, str]:
    # By hand: the client's cookie jar would not send Secure cookies to http://testserver.
    return {"Cookie": f"rampart_refresh={refresh}; rampart_csrf={csrf}"}


async def test_refresh_by_cookie_with_the_csrf_header(
    client: httpx.AsyncClient, app: Rampart, alice: User
) -> None:
    pair = await pair_for(app, alice)
    r = await client.post(
        REFRESH, headers={**cookies(pair.refresh_token, "csrf-1"), "X-CSRF-Token": "csrf-1"}
    )
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert "refresh_token" not in data  # the refresh token stays in the HttpOnly cookie
    assert (await client.get(ME, headers=bearer(data["access_token"]))).status_code == 200
    refresh = cookie_attributes(r, "rampart_refresh").lower()
    for attribute in ("httponly", "secure", "samesite=strict", "path=/api/v1/auth"):
        assert attribute in refresh
    assert "httponly" not in cookie_attributes(r, "rampart_csrf").lower()  # the page's script reads it
    new_refresh, new_csrf = cookie_value(r, "rampart_refresh"), cookie_value(r, "rampart_csrf")
    assert new_refresh != pair.refresh_token
    assert len(new_csrf) >= 32
    # the cookie rotated: the next refresh uses the new one, with the new CSRF value
    r = await client.post(REFRESH, headers={**cookies(new_refresh, new_csrf), "X-CSRF-Token": new_csrf})
    assert r.status_code == 200, r.text
    # and the spent cookie is a reuse like any other
    r = await client.post(REFRESH, headers={**cookies(new_refresh, new_csrf), "X-CSRF-Token": new_csrf})
    assert r.status_code == 401


@pytest.mark.parametrize(
    "header", [None, "", "wrong-value", "csrf-value-but-longer"], ids=["missing", "empty", "wrong", "prefix"]
)
async def test_refresh_by_cookie_without_the_csrf_proof_is_forbidden(
    client: httpx.AsyncClient, app: Rampart, alice: User, header: str | None
) -> None:
    pair = await pair_for(app, alice)
    extra = {} if header is None else {"X-CSRF-Token": header}
    r = await client.post(REFRESH, headers={**cookies(pair.refresh_token, "csrf-value"), **extra})
    assert r.status_code == 403, r.text
    assert r.json()["code"] == "csrf_failed"
    # without the csrf cookie too
    r = await client.post(
        REFRESH, headers={"Cookie": f"rampart_refresh={pair.refresh_token}", "X-CSRF-Token": "csrf-value"}
    )
    assert r.status_code == 403
    # nothing was spent: the token still works with the proof
    r = await client.post(
        REFRESH, headers={**cookies(pair.refresh_token, "csrf-value"), "X-CSRF-Token": "csrf-value"}
    )
    assert r.status_code == 200, r.text


async def test_logout_clears_the_cookies(client: httpx.AsyncClient, app: Rampart, alice: User) -> None:
    pair = await pair_for(app, alice)
    r = await client.post("/api/v1/auth/logout", headers=bearer(pair.access_token))
    assert r.status_code == 204
    for name in ("rampart_refresh", "rampart_csrf"):
        assert "max-age=0" in cookie_attributes(r, name).lower()
