"""Asymmetric access tokens (EdDSA, RS256): the JWKS, kid rotation without logging anyone out, a worker
picking up another's rotation, the verify window of a retired key, and attacks specific to key sets."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from joserfc.errors import SecurityWarning
from joserfc.jwk import JWKRegistry, KeySet, OKPKey, RSAKey
from joserfc.jwt import decode as jose_decode

from rampart.app import Rampart, create_app
from rampart.auth.keys import rotate
from rampart.auth.sessions import announce_keys
from rampart.clitasks import rotate_signing_key
from tests.conftest import TEST_SECRET, User, make_settings, new_user
from tests.jwts import b64, sign, unverified

ME = "/api/v1/auth/me"
JWKS = "/.well-known/jwks.json"


@pytest.fixture(params=["EdDSA", "RS256"])
async def keyed(request: pytest.FixtureRequest, database_url: str) -> AsyncIterator[Rampart]:
    app = create_app(make_settings(database_url, jwt_algorithm=request.param))
    yield app
    await app.aclose()


async def call(app: Rampart, method: str, url: str, token: str | None = None) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return await http.request(method, url, headers=headers)


def header(token: str) -> dict[str, Any]:
    return unverified(token)[0]


def claims_of(app: Rampart, user: User) -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": app.services.tokens.issuer,
        "aud": app.services.tokens.audience,
        "sub": user.id,
        "sid": str(user.session_id),
        "role": user.role,
        "iat": now,
        "exp": now + 300,
        "jti": str(uuid.uuid4()),
    }


async def test_tokens_are_signed_with_a_published_key(keyed: Rampart) -> None:
    alg = keyed.services.tokens.algorithm
    user = await new_user(keyed)
    head = header(user.token)
    assert head["alg"] == alg
    r = await call(keyed, "GET", ME, user.token)
    assert r.status_code == 200, r.text
    r = await call(keyed, "GET", JWKS)
    assert r.status_code == 200
    jwks = r.json()
    published = {k["kid"]: k for k in jwks["keys"]}
    assert head["kid"] in published
    for key in jwks["keys"]:
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key)  # public parts only
        assert key["alg"] == alg
    # anyone can verify the token with the published set alone
    with warnings.catch_warnings():  # joserfc prefers RFC 9864's "Ed25519" name; API.md says "EdDSA"
        warnings.simplefilter("ignore", SecurityWarning)
        token = jose_decode(user.token, KeySet.import_key_set(jwks), algorithms=[alg])
    assert token.claims["sub"] == user.id


async def test_hs256_publishes_no_keys(app: Rampart) -> None:
    r = await call(app, "GET", JWKS)
    assert r.status_code == 200
    assert r.json() == {"keys": []}


async def test_rotation_logs_nobody_out_and_reaches_other_workers(database_url: str) -> None:
    settings = make_settings(database_url, jwt_algorithm="EdDSA")
    first, second = create_app(settings), create_app(settings)  # two workers
    try:
        before = await new_user(first)
        assert (await call(second, "GET", ME, before.token)).status_code == 200  # second holds the old key
        new_kid = await rotate_signing_key(settings, alg="EdDSA")  # `rampart keys rotate`
        first.services.authenticator.on_announcement("k:")  # as the notification listener would
        after = await new_user(first)
        assert header(after.token)["kid"] == new_kid
        assert header(before.token)["kid"] != new_kid
        # the second worker missed the announcement: an unknown kid makes it reload
        assert (await call(second, "GET", ME, after.token)).status_code == 200
        # and the old key still verifies its tokens on both
        for app in (first, second):
            assert (await call(app, "GET", ME, before.token)).status_code == 200
        published = {k["kid"] for k in (await call(second, "GET", JWKS)).json()["keys"]}
        assert {new_kid, header(before.token)["kid"]} <= published
        # past the window (access-token lifetime + leeway) the retired key is gone
        await first.services.db.execute(
            "UPDATE signing_keys SET retired_at = now() - interval '1 day' WHERE kid = $1",
            header(before.token)["kid"],
        )
        for app in (first, second):
            keys = app.services.tokens.keys
            assert keys is not None
            keys.invalidate()
            app.services.tokens.forget()
            assert (await call(app, "GET", ME, before.token)).status_code == 401
            assert (await call(app, "GET", ME, after.token)).status_code == 200
    finally:
        await first.aclose()
        await second.aclose()


async def test_made_up_kids_reload_the_keys_at_most_once_a_second(database_url: str) -> None:
    app = create_app(make_settings(database_url, jwt_algorithm="EdDSA"))
    try:
        user = await new_user(app)
        loads = 0
        keys = app.services.tokens.keys
        assert keys is not None
        real = keys._reload

        async def counting() -> None:
            nonlocal loads
            loads += 1
            await real()

        keys._reload = counting  # type: ignore[method-assign]
        forger = OKPKey.generate_key("Ed25519", private=True)
        for i in range(5):
            token = sign(claims_of(app, user), forger, "EdDSA", kid=f"k{i}")
            assert (await call(app, "GET", ME, token)).status_code == 401
        assert loads == 1
    finally:
        await app.aclose()


def _attacks(app: Rampart, user: User, jwks: dict[str, Any]) -> dict[str, str]:
    alg = app.services.tokens.algorithm
    kid = jwks["keys"][0]["kid"]
    claims = claims_of(app, user)
    public = JWKRegistry.import_key(jwks["keys"][0])
    pem = public.as_pem(private=False)
    body = f"{b64(json.dumps({'alg': 'HS256', 'kid': kid}).encode())}.{b64(json.dumps(claims).encode())}"
    other = (
        OKPKey.generate_key("Ed25519", private=True)
        if alg == "EdDSA"
        else RSAKey.generate_key(2048, private=True)
    )
    other_alg_key = RSAKey.generate_key(2048, private=True) if alg == "EdDSA" else None
    attacks = {
        # HS/RS confusion: an HMAC keyed with the published public key
        "hs256_keyed_with_public_pem": f"{body}.{b64(hmac.new(pem, body.encode(), hashlib.sha256).digest())}",
        "hs256_keyed_with_jwk_json": f"{body}."
        + b64(hmac.new(json.dumps(jwks["keys"][0]).encode(), body.encode(), hashlib.sha256).digest()),
        "hs256_with_the_secret": sign(claims, TEST_SECRET, "HS256", kid=kid),
        "alg_none": f"{b64(json.dumps({'alg': 'none', 'kid': kid}).encode())}.{body.split('.')[1]}.",
        "other_key_same_kid": sign(claims, other, alg, kid=kid),
        "no_kid": sign(claims, other, alg),
        "unknown_kid": sign(claims, other, alg, kid="nope"),
        "jku_injection": sign(claims, other, alg, kid=kid, jku="https://evil.example/jwks"),
    }
    if other_alg_key is not None:
        attacks["rs256_when_eddsa"] = sign(claims, other_alg_key, "RS256", kid=kid)
    return attacks


async def test_key_set_attacks_are_refused(keyed: Rampart) -> None:
    user = await new_user(keyed)
    assert (await call(keyed, "GET", ME, user.token)).status_code == 200  # the control
    jwks = (await call(keyed, "GET", JWKS)).json()
    for name, token in _attacks(keyed, user, jwks).items():
        r = await call(keyed, "GET", ME, token)
        assert r.status_code == 401, name
        assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"', name


async def test_rotation_is_announced_in_the_same_transaction(database_url: str) -> None:
    app = create_app(make_settings(database_url, jwt_algorithm="RS256"))
    listener = await asyncpg.connect(database_url)
    try:
        heard: list[str] = []
        await listener.add_listener("rampart_sessions", lambda *args: heard.append(args[3]))
        async with app.services.db.transaction() as conn:
            kid = await rotate(conn, alg="RS256")
            await announce_keys(conn)
            await listener.execute("SELECT 1")
            assert heard == []  # not before the commit
        deadline = time.monotonic() + 2
        while "k:" not in heard and time.monotonic() < deadline:
            await listener.execute("SELECT 1")
        assert "k:" in heard
        row = await app.services.db.fetchrow("SELECT alg, retired_at FROM signing_keys WHERE kid = $1", kid)
        assert row["alg"] == "RS256"
        assert row["retired_at"] is None
    finally:
        await listener.close()
        await app.aclose()


def test_cli_rotates_and_refuses_hs256(database_url: str, tmp_path: Path) -> None:
    import os

    rampart = str(Path(sys.executable).with_name("rampart"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAMPART_")}
    env.update(
        {"RAMPART_ENV": "test", "RAMPART_DATABASE_URL": database_url, "RAMPART_JWT_SECRET": TEST_SECRET}
    )
    ok = subprocess.run(
        [rampart, "keys", "rotate", "--alg", "EdDSA"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    kid = ok.stdout.strip()
    uuid.UUID(kid)
    refused = subprocess.run(
        [rampart, "keys", "rotate"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode != 0
    assert "HS256" in refused.stderr
