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

import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from rampart.app import Rampart, create_app
from rampart.auth.sessions import open_session
from tests.api.test_auth_tokens import assert_unauthorized, claims_for, craft, mint
from tests.conftest import User, make_settings, new_user
from tests.jwts import sign, unverified
from tests.security.surface import OPERATIONS, PLAIN, PROTECTED, Operation, ids

# Reviewed: the only operations anyone may call without a token. A new public route fails this module
# until it is added here (and its abuse considered: see API6).
PUBLIC = {
    "GET /api/v1/auth/google/login",
    "GET /api/v1/auth/google/callback",
    "POST /api/v1/auth/refresh",
    "GET /.well-known/jwks.json",
}
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
