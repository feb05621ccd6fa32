"""API2:2023 Broken authentication.

Generated from the router: every operation that is not declared public is called with no credentials and
with each kind of bad credential (forged, expired, `alg: none`, a revoked session, a disabled user, the
refresh token as a bearer, a token in the query string or a cookie). Each gets 401 with
`WWW-Authenticate: Bearer`, before any handler runs. The public surface is a reviewed list, access tokens
are short-lived, and tokens never appear in answers or logs.

Already covered elsewhere, and cited in SECURITY.md: 24 kinds of forged token on two routes
(tests/api/test_auth_tokens.py), revocation and disabling within 1 s on every worker
(test_auth_tokens.py, test_auth_revocation_processes.py), refresh-token rotation and reuse detection
(test_auth_refresh.py), failed authentications limited per client IP (test_rate_limit.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from rampart.app import Rampart, create_app
from rampart.auth.sessions import open_session
from tests.api.test_auth_tokens import assert_unauthorized, claims_for, craft, mint
from tests.conftest import User, make_settings, new_user
from tests.jwts import sign, unverified
from tests.oidc.node_provider import (
    CALLBACK_PREFIX,
    CLIENT_ID,
    CLIENT_SECRET,
    NodeProvider,
    new_jwks,
    to_callback,
)
from tests.security.surface import OPERATIONS, PLAIN, PROTECTED, Operation, ids

# Reviewed: the only operations anyone may call without a token. A new public route fails this module
# until it is added here (and its abuse considered: see API6).
PUBLIC = {
    "GET /api/v1/auth/google/login",
    "GET /api/v1/auth/google/callback",
    "POST /api/v1/auth/refresh",
    "GET /.well-known/jwks.json",
}
LOGIN = "/api/v1/auth/google/login"
OPERATIONAL = {
    ("GET", "/health/live"),
    ("GET", "/health/ready"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/assets/{name}"),
}


@dataclass
class Credentials:
    """One user's tokens in every state that must be refused."""

    valid: str
    refresh: str
    revoked: str
    disabled: str
    other_secret: str
    alg_none: str
    expired: str
    wrong_audience: str


@pytest.fixture(scope="module")
async def creds(app: Rampart) -> Credentials:
    services = app.services
    user = await new_user(app)
    revoked_user = await new_user(app)
    disabled_user = await new_user(app)
    async with services.db.transaction() as conn:
        pair = await open_session(
            conn, services.tokens, user_id=uuid.UUID(user.id), role="user", session_ttl=3600
        )
    # Never used before being refused, so no worker has a cached "live" answer for them.
    await services.db.execute("UPDATE sessions SET revoked_at = now() WHERE id = $1", revoked_user.session_id)
    await services.db.execute("UPDATE users SET disabled = true WHERE id = $1", uuid.UUID(disabled_user.id))
    now = int(time.time())
    return Credentials(
        valid=user.token,
        refresh=pair.refresh_token,
        revoked=revoked_user.token,
        disabled=disabled_user.token,
        other_secret=sign(claims_for(app, user), "another-secret-" + "z" * 40, "HS256"),
        alg_none=craft({"alg": "none", "typ": "JWT"}, claims_for(app, user), None),
        expired=mint(app, user, iat=now - 1200, exp=now - 60),
        wrong_audience=mint(app, user, aud="another-api"),
    )


KINDS = [
    "none",
    "garbage",
    "alg_none",
    "other_secret",
    "expired",
    "wrong_audience",
    "revoked_session",
    "disabled_user",
    "refresh_token_as_bearer",
    "token_in_query",
    "token_in_cookie",
]


def _request(op: Operation, kind: str, c: Credentials) -> tuple[str, dict[str, str]]:
    url, headers = op.url(), {}
    bearer = {
        "garbage": "not-a-token",
        "alg_none": c.alg_none,
        "other_secret": c.other_secret,
        "expired": c.expired,
        "wrong_audience": c.wrong_audience,
        "revoked_session": c.revoked,
        "disabled_user": c.disabled,
        "refresh_token_as_bearer": c.refresh,
    }.get(kind)
    if bearer is not None:
        headers["Authorization"] = f"Bearer {bearer}"
    elif kind == "token_in_query":
        url += f"?access_token={c.valid}"
    elif kind == "token_in_cookie":
        headers["Cookie"] = f"access_token={c.valid}; rampart_refresh={c.refresh}; rampart_csrf=x"
        headers["X-CSRF-Token"] = "x"
    return url, headers


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("op", PROTECTED, ids=ids(PROTECTED))
async def test_every_protected_route_refuses_bad_credentials(
    client: httpx.AsyncClient, creds: Credentials, op: Operation, kind: str
) -> None:
    url, headers = _request(op, kind, creds)
    body = {} if op.method in ("POST", "PATCH") else None
    r = await client.request(op.method, url, json=body, headers=headers)
    assert_unauthorized(r, token_present="Authorization" in headers)
    for secret in (creds.valid, creds.refresh):
        assert secret not in r.text


async def test_the_valid_token_of_the_same_user_works(client: httpx.AsyncClient, creds: Credentials) -> None:
    """The control for the table above: the refusals are about the credential, not the user."""
    r = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {creds.valid}"})
    assert r.status_code == 200


def test_the_unauthenticated_surface_is_the_reviewed_one() -> None:
    assert {op.id for op in OPERATIONS if op.public} == PUBLIC
    assert set(PLAIN) == OPERATIONAL


async def test_access_tokens_live_fifteen_minutes(app: Rampart, alice: User) -> None:
    claims = unverified(alice.token)[1]
    assert claims["exp"] - claims["iat"] == 900
    assert {"iss", "aud", "sub", "sid", "role", "iat", "exp", "jti"} <= set(claims)


@pytest.fixture(scope="module")
async def logged_app(database_url: str) -> AsyncIterator[Rampart]:
    application = create_app(make_settings(database_url, access_log=True))
    yield application
    await application.aclose()


async def test_tokens_never_reach_the_logs(
    logged_app: Rampart, creds: Credentials, caplog: pytest.LogCaptureFixture
) -> None:
    transport = httpx.ASGITransport(app=logged_app)
    caplog.set_level(logging.DEBUG)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        for token in (creds.valid, creds.expired, creds.other_secret, creds.refresh):
            await http.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
            await http.get(
                f"/api/v1/projects?access_token={token}", headers={"Authorization": f"Bearer {token}"}
            )
        r = await http.post("/api/v1/auth/refresh", json={"refresh_token": creds.expired})
        assert r.status_code == 401
    ours = [record for record in caplog.records if record.name.startswith("rampart")]
    assert any(record.name == "rampart.access" for record in ours)  # the log was written
    # Every field of every record, the structured extras included (what the JSON formatter writes).
    written = "\n".join(f"{record.getMessage()} {record.__dict__}" for record in ours)
    for token in (creds.valid, creds.expired, creds.other_secret, creds.refresh):
        for part in token.split("."):  # not even the signature or the payload alone
            if len(part) > 8:
                assert part not in written


# ----- login CSRF ---------------------------------------------------------------------------------------
# Issue 13, finding 5: the sign-in state lived only in the database, so a callback URL completed in any
# browser: an attacker who stopped at their own callback URL (their code, their state) and got a victim to
# open it signed the victim into the attacker's account. The state is now bound to the browser that
# started it by a cookie; the real OpenID provider (tests/oidc) plays the provider.


@pytest.fixture(scope="module")
def provider() -> Iterator[NodeProvider]:
    node = NodeProvider(redirect_uri=CALLBACK_PREFIX)
    node.start(new_jwks("csrf-key"))
    yield node
    node.stop()


def _oidc(database_url: str, issuer: str, public_url: str = "http://testserver") -> Rampart:
    return create_app(
        make_settings(
            database_url,
            public_url=public_url,
            oidc_issuer=issuer,
            oidc_client_id=CLIENT_ID,
            oidc_client_secret=CLIENT_SECRET,
        )
    )


@pytest.fixture(scope="module")
async def oidc_app(database_url: str, provider: NodeProvider) -> AsyncIterator[Rampart]:
    app = _oidc(database_url, provider.issuer)
    yield app
    await app.aclose()


def _browser(app: Rampart, base_url: str = "http://testserver") -> httpx.AsyncClient:
    """A browser of Rampart's site: its own cookie jar."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)


async def _stop_at_callback(app: Rampart, attacker: httpx.AsyncClient, login: str | None) -> str:
    """The attacker's sign-in, up to the callback URL they do not open themselves (path and query)."""
    r = await attacker.get(LOGIN)
    assert r.status_code == 302, r.text
    async with httpx.AsyncClient(timeout=10) as at_provider:
        url = await to_callback(at_provider, r.headers["location"], login=login, cancel=login is None)
    return url.removeprefix("http://testserver")


async def _state_left(app: Rampart, callback: str) -> bool:
    state = parse_qs(urlsplit(callback).query)["state"][0]
    key = hashlib.sha256(state.encode()).hexdigest()
    return bool(
        await app.services.db.fetchval("SELECT count(*) FROM oidc_login_states WHERE state_hash = $1", key)
    )


async def test_a_callback_opened_in_another_browser_is_refused_and_consumes_nothing(
    oidc_app: Rampart,
) -> None:
    who = f"attacker-{uuid.uuid4().hex[:10]}@example.test"
    async with _browser(oidc_app) as attacker, _browser(oidc_app) as victim:
        callback = await _stop_at_callback(oidc_app, attacker, who)
        r = await victim.get(callback)  # a victim with no sign-in of their own
        assert r.status_code == 403, r.text
        assert r.json()["code"] == "sign_in_browser_mismatch"
        assert "set-cookie" not in r.headers
        # The victim's own sign-in cookie, even under the attacker's cookie name, does not fit either.
        assert (await victim.get(LOGIN)).status_code == 302
        (own,) = [c for c in victim.cookies.jar if c.name.startswith("rampart_signin_")]
        (theirs,) = [c for c in attacker.cookies.jar if c.name.startswith("rampart_signin_")]
        victim.cookies.set(theirs.name, own.value or "", domain=theirs.domain, path=theirs.path)
        r = await victim.get(callback)
        assert r.status_code == 403, r.text
        assert r.json()["code"] == "sign_in_browser_mismatch"
        # Nothing happened: no user, no session, and the state is still there for the right browser.
        users = "SELECT count(*) FROM users WHERE email = $1"
        assert await oidc_app.services.db.fetchval(users, who) == 0
        assert await _state_left(oidc_app, callback)
        r = await attacker.get(callback)
        assert r.status_code == 200, r.text
        assert r.json()["data"]["user"]["email"] == who


async def test_a_refusal_from_the_provider_opened_elsewhere_spends_nothing(oidc_app: Rampart) -> None:
    async with _browser(oidc_app) as attacker, _browser(oidc_app) as victim:
        callback = await _stop_at_callback(oidc_app, attacker, None)  # error=access_denied&state=...
        assert "error=access_denied" in callback
        r = await victim.get(callback)
        assert r.status_code == 403
        assert r.json()["code"] == "sign_in_browser_mismatch"
        assert await _state_left(oidc_app, callback)
        r = await attacker.get(callback)
        assert r.json()["code"] == "sign_in_denied"
        assert not await _state_left(oidc_app, callback)


@pytest.mark.parametrize(
    ("public_url", "base_url", "secure"),
    [
        ("http://testserver", "http://testserver", False),
        ("https://rampart.example.test", "http://testserver", True),  # TLS ends at a proxy
        ("http://testserver", "https://testserver", True),
    ],
)
async def test_the_sign_in_cookie_is_short_lived_http_only_lax_and_only_for_the_callback(
    database_url: str, provider: NodeProvider, public_url: str, base_url: str, secure: bool
) -> None:
    app = _oidc(database_url, provider.issuer, public_url)
    try:
        async with _browser(app, base_url) as browser:
            r = await browser.get(LOGIN)
        assert r.status_code == 302, r.text
        (cookie,) = r.headers.get_list("set-cookie")
        name, _, attributes = cookie.partition(";")
        assert name.startswith("rampart_signin_")
        parts = {a.strip().split("=")[0].lower(): a.strip() for a in attributes.split(";")}
        assert parts["path"] == "Path=/api/v1/auth/google/callback"
        assert parts["max-age"] == "Max-Age=600"
        assert "httponly" in parts
        assert parts["samesite"].lower() == "samesite=lax"
        assert ("secure" in parts) is secure
    finally:
        await app.aclose()


# ----- impersonation is bounded by its impersonator (issue 13, finding 1) -------------------------------
# An admin's impersonation used to be an ordinary 30-day session: demoting and disabling the admin ended
# the admin's own sessions but not the ones opened as someone else. The real-process versions (two
# workers; two instances sharing Redis) are tests/api/test_impersonation_processes.py.

API = "/api/v1"
BOUND = 1.0  # seconds: API.md's revocation bound, which an impersonation's end also keeps


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def impersonate(client: httpx.AsyncClient, admin: User, target: User) -> dict[str, str]:
    r = await client.post(f"{API}/admin/users/{target.id}/impersonate", headers=admin.headers)
    assert r.status_code == 201, r.text
    data: dict[str, str] = r.json()["data"]
    return data


def session_of(token: str) -> uuid.UUID:
    return uuid.UUID(unverified(token)[1]["sid"])


async def refused_within(client: httpx.AsyncClient, token: str, bound: float = BOUND) -> float:
    """Seconds until `token` gets 401 on /auth/me (served 200 until then), failing past `bound`."""
    started = time.monotonic()
    while True:
        r = await client.get(f"{API}/auth/me", headers=bearer(token))
        elapsed = time.monotonic() - started
        if r.status_code == 401:
            return elapsed
        assert r.status_code == 200, r.text
        assert elapsed < bound, f"the impersonation still works {elapsed:.2f} s after its end"
        await asyncio.sleep(0.02)


ENDS = ["demoted", "disabled", "logged_out", "logged_out_everywhere", "revoked_by_admin", "target_promoted"]


@pytest.mark.parametrize("end", ENDS)
async def test_an_impersonation_ends_with_its_impersonator(
    client: httpx.AsyncClient, app: Rampart, end: str
) -> None:
    boss, admin, target = (
        await new_user(app, role="admin"),
        await new_user(app, role="admin"),
        await new_user(app),
    )
    pair = await impersonate(client, admin, target)
    r = await client.get(f"{API}/auth/me", headers=bearer(pair["access_token"]))
    assert r.status_code == 200
    assert r.json()["data"]["id"] == target.id

    if end == "demoted":
        r = await client.patch(f"{API}/admin/users/{admin.id}", json={"role": "user"}, headers=boss.headers)
    elif end == "disabled":
        r = await client.patch(f"{API}/admin/users/{admin.id}", json={"disabled": True}, headers=boss.headers)
    elif end == "logged_out":
        r = await client.post(f"{API}/auth/logout", headers=admin.headers)
    elif end == "logged_out_everywhere":
        r = await client.post(f"{API}/auth/logout?all=true", headers=admin.headers)
    elif end == "revoked_by_admin":
        sid = session_of(pair["access_token"])
        r = await client.delete(f"{API}/admin/impersonations/{sid}", headers=admin.headers)
    else:  # the user became an admin: an impersonation never acts as one
        r = await client.patch(f"{API}/admin/users/{target.id}", json={"role": "admin"}, headers=boss.headers)
    assert r.status_code in (200, 204), r.text

    await refused_within(client, pair["access_token"])
    r = await client.post(f"{API}/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert r.status_code == 401, r.text
    # Listed nowhere as live, and the target's own session is untouched.
    r = await client.get(f"{API}/auth/sessions", headers=target.headers)
    assert [s["impersonated"] for s in r.json()["data"]] == [False]
    if end in ("demoted", "revoked_by_admin", "target_promoted"):  # the admin's own session still works
        r = await client.get(f"{API}/auth/me", headers=admin.headers)
        assert r.status_code == 200


async def test_a_re_promoted_admin_does_not_bring_an_ended_impersonation_back(
    client: httpx.AsyncClient, app: Rampart
) -> None:
    boss, admin, target = (
        await new_user(app, role="admin"),
        await new_user(app, role="admin"),
        await new_user(app),
    )
    pair = await impersonate(client, admin, target)
    for role in ("user", "admin"):
        r = await client.patch(f"{API}/admin/users/{admin.id}", json={"role": role}, headers=boss.headers)
        assert r.status_code == 200, r.text
    await refused_within(client, pair["access_token"])
    revoked = await app.services.db.fetchval(
        "SELECT revoked_at IS NOT NULL FROM sessions WHERE id = $1", session_of(pair["access_token"])
    )
    assert revoked


async def test_an_impersonation_lasts_an_hour_at_most_and_refreshing_never_extends_it(
    client: httpx.AsyncClient, app: Rampart
) -> None:
    admin, target = await new_user(app, role="admin"), await new_user(app)
    pair = await impersonate(client, admin, target)
    sid = session_of(pair["access_token"])
    db = app.services.db
    row = await db.fetchrow("SELECT created_at, expires_at FROM sessions WHERE id = $1", sid)
    assert (row["expires_at"] - row["created_at"]).total_seconds() <= 3600
    r = await client.post(f"{API}/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert r.status_code == 200, r.text
    refreshed = r.json()["data"]
    assert await db.fetchval("SELECT expires_at FROM sessions WHERE id = $1", sid) == row["expires_at"]
    # The hour is over (moved back rather than waited for): neither the token nor a refresh works.
    await db.execute("UPDATE sessions SET expires_at = now() - interval '1 second' WHERE id = $1", sid)
    await refused_within(client, refreshed["access_token"])
    r = await client.post(f"{API}/auth/refresh", json={"refresh_token": refreshed["refresh_token"]})
    assert r.status_code == 401


async def test_admins_list_and_end_the_impersonations_they_opened_and_only_those(
    client: httpx.AsyncClient, app: Rampart
) -> None:
    admin, other, target = (
        await new_user(app, role="admin"),
        await new_user(app, role="admin"),
        await new_user(app),
    )
    pair = await impersonate(client, admin, target)
    sid = str(session_of(pair["access_token"]))
    assert pair["session_id"] == sid

    r = await client.get(f"{API}/admin/impersonations", headers=admin.headers)
    assert r.status_code == 200, r.text
    [opened] = r.json()["data"]
    assert (opened["id"], opened["user_id"], opened["opened_by"]) == (sid, target.id, str(admin.session_id))
    assert opened["expires_at"] == pair["session_expires_at"]
    r = await client.get(f"{API}/admin/impersonations", headers=other.headers)
    assert r.json()["data"] == []
    # The target's list says who opened it.
    r = await client.get(f"{API}/auth/sessions", headers=target.headers)
    assert {s["id"]: s["impersonator_id"] for s in r.json()["data"]} == {
        str(target.session_id): None,
        sid: admin.id,
    }
    # Another admin cannot end it: answered like a session that does not exist.
    r = await client.delete(f"{API}/admin/impersonations/{sid}", headers=other.headers)
    ghost = await client.delete(f"{API}/admin/impersonations/{uuid.uuid4()}", headers=other.headers)
    assert r.status_code == ghost.status_code == 404
    assert (await client.get(f"{API}/auth/me", headers=bearer(pair["access_token"]))).status_code == 200
    r = await client.delete(f"{API}/admin/impersonations/{sid}", headers=admin.headers)
    assert r.status_code == 204
    await refused_within(client, pair["access_token"])
    assert (await client.get(f"{API}/admin/impersonations", headers=admin.headers)).json()["data"] == []
    r = await client.delete(f"{API}/admin/impersonations/{sid}", headers=admin.headers)
    assert r.status_code == 404
