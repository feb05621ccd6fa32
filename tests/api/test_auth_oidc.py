"""Sign-in with a real OpenID Connect provider: `oidc-provider` (npm) in a Node process started here.

The browser's part is played over HTTP by `tests.oidc.node_provider.to_callback`; Rampart runs
in process. The provider enforces PKCE and signs RS256 ID tokens with keys the test hands it.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from rampart.access.system import system_actor
from rampart.app import Rampart, create_app
from rampart.resources.manager import Context
from tests.conftest import make_settings
from tests.oidc.node_provider import CALLBACK_PREFIX, NodeProvider, new_jwks, to_callback

LOGIN = "/api/v1/auth/google/login"
ME = "/api/v1/auth/me"
ALLOWED = "https://app.example.test/after"
BOSS = f"boss-{uuid.uuid4().hex[:10]}@example.test"


@pytest.fixture(scope="module")
def provider() -> Iterator[NodeProvider]:
    node = NodeProvider(redirect_uri=CALLBACK_PREFIX)
    node.start(new_jwks("key-1"))
    yield node
    node.stop()


def oidc_settings(database_url: str, issuer: str) -> dict[str, object]:
    return {
        "public_url": "http://testserver",
        "oidc_issuer": issuer,
        "oidc_client_id": "rampart-test",
        "oidc_client_secret": "rampart-test-client-secret",
        "auth_redirect_allowlist": f"{ALLOWED},https://other.example.test",
        "oidc_admin_emails": f"someone@example.test, {BOSS.upper()}",
    }


@pytest.fixture(scope="module")
async def oidc_app(database_url: str, provider: NodeProvider) -> AsyncIterator[Rampart]:
    app = create_app(make_settings(database_url, **oidc_settings(database_url, provider.issuer)))
    yield app
    await app.aclose()


@pytest.fixture
async def rampart(oidc_app: Rampart) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=oidc_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@pytest.fixture
async def browser() -> AsyncIterator[httpx.AsyncClient]:
    """The browser's side at the provider: keeps the provider's cookies, follows nothing by itself."""
    async with httpx.AsyncClient(timeout=10) as http:
        yield http


def email() -> str:
    return f"p{uuid.uuid4().hex[:12]}@example.test"


async def callback_url(
    rampart: httpx.AsyncClient,
    browser: httpx.AsyncClient,
    login: str | None,
    *,
    redirect_to: str | None = None,
    cancel: bool = False,
) -> str:
    params = {"redirect_to": redirect_to} if redirect_to else {}
    r = await rampart.get(LOGIN, params=params)
    assert r.status_code == 302, r.text
    return await to_callback(browser, r.headers["location"], login=login, cancel=cancel)


async def sign_in(rampart: httpx.AsyncClient, browser: httpx.AsyncClient, login: str) -> httpx.Response:
    url = await callback_url(rampart, browser, login)
    return await rampart.get(url.removeprefix("http://testserver"))


def state_hash(url: str) -> str:
    state = parse_qs(urlsplit(url).query)["state"][0]
    return hashlib.sha256(state.encode()).hexdigest()


async def test_login_redirects_to_the_provider_with_state_nonce_and_pkce(
    rampart: httpx.AsyncClient, oidc_app: Rampart, provider: NodeProvider
) -> None:
    r = await rampart.get(LOGIN)
    assert r.status_code == 302
    assert r.headers["cache-control"] == "no-store"
    url = urlsplit(r.headers["location"])
    assert f"{url.scheme}://{url.netloc}" == provider.issuer
    q = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert q["response_type"] == "code"
    assert q["client_id"] == "rampart-test"
    assert q["redirect_uri"] == CALLBACK_PREFIX
    assert q["code_challenge_method"] == "S256"
    assert len(q["code_challenge"]) == 43
    assert set(q["scope"].split()) >= {"openid", "email"}
    assert len(q["state"]) >= 43
    assert len(q["nonce"]) >= 43
    # stored server-side, the state only as a hash, the verifier never in the URL
    row = await oidc_app.services.db.fetchrow(
        "SELECT nonce, code_verifier FROM oidc_login_states WHERE state_hash = $1",
        hashlib.sha256(q["state"].encode()).hexdigest(),
    )
    assert row is not None
    assert row["nonce"] == q["nonce"]
    assert row["code_verifier"] not in r.headers["location"]


async def test_first_sign_in_creates_the_user_and_a_session(
    rampart: httpx.AsyncClient, browser: httpx.AsyncClient, oidc_app: Rampart, provider: NodeProvider
) -> None:
    who = email()
    r = await sign_in(rampart, browser, who)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    data = r.json()["data"]
    assert data["token_type"] == "Bearer"
    assert data["user"]["email"] == who
    assert data["user"]["role"] == "user"
    assert data["user"]["name"] == f"Test {who.split('@')[0]}"
    me = await rampart.get(ME, headers={"Authorization": f"Bearer {data['access_token']}"})
    assert me.status_code == 200
    assert me.json()["data"]["id"] == data["user"]["id"]
    link = await oidc_app.services.db.fetchrow(
        "SELECT issuer, subject FROM user_identities WHERE user_id = $1", uuid.UUID(data["user"]["id"])
    )
    assert (link["issuer"], link["subject"]) == (provider.issuer, f"sub-{who}")
    # browser clients of this site also get it as an HttpOnly cookie, with its CSRF companion
    set_cookies = r.headers.get_list("set-cookie")
    refresh_cookie = next(c for c in set_cookies if c.startswith("rampart_refresh="))
    assert refresh_cookie.startswith(f"rampart_refresh={data['refresh_token']};")
    assert "HttpOnly" in refresh_cookie
    assert any(c.startswith("rampart_csrf=") for c in set_cookies)
    # the refresh token of a sign-in rotates like any other
    r = await rampart.post("/api/v1/auth/refresh", json={"refresh_token": data["refresh_token"]})
    assert r.status_code == 200


async def test_returning_user_gets_the_same_account(
    rampart: httpx.AsyncClient, browser: httpx.AsyncClient, oidc_app: Rampart
) -> None:
    who = email()
    first = (await sign_in(rampart, browser, who)).json()["data"]
    async with httpx.AsyncClient(timeout=10) as other_browser:  # another device
        second = (await sign_in(rampart, other_browser, who)).json()["data"]
    assert second["user"]["id"] == first["user"]["id"]
    assert second["refresh_token"] != first["refresh_token"]
    count = await oidc_app.services.db.fetchval("SELECT count(*) FROM users WHERE email = $1", who)
    assert count == 1
    sessions = await oidc_app.services.db.fetchval(
        "SELECT count(*) FROM sessions WHERE user_id = $1 AND revoked_at IS NULL",
        uuid.UUID(first["user"]["id"]),
    )
    assert sessions == 2


async def test_admin_allow_list_grants_admin_on_first_sign_in(
    rampart: httpx.AsyncClient, browser: httpx.AsyncClient
) -> None:
    r = await sign_in(rampart, browser, BOSS)
    assert r.status_code == 200, r.text
    assert r.json()["data"]["user"]["role"] == "admin"
    token = r.json()["data"]["access_token"]
    assert (
        await rampart.get("/api/v1/admin/users", headers={"Authorization": f"Bearer {token}"})
    ).status_code == 200


async def test_an_existing_email_is_not_taken_over(
    rampart: httpx.AsyncClient, browser: httpx.AsyncClient, oidc_app: Rampart
) -> None:
    """Users are linked by (issuer, subject): a provider account never gets a user by its email."""
    who = email()
    actor = system_actor(frozenset({"users:manage"}))
    existing = await oidc_app.services.managers["users"].create(
        Context(actor=actor), {"email": who, "role": "admin"}
    )
    r = await sign_in(rampart, browser, who)
    assert r.status_code == 409, r.text
    assert r.json()["code"] == "account_exists"
    assert "token" not in r.text
    linked = await oidc_app.services.db.fetchval(
        "SELECT count(*) FROM user_identities WHERE user_id = $1", uuid.UUID(existing["id"])
    )
    assert linked == 0


async def test_redirect_to_gets_the_tokens_in_the_fragment(
    rampart: httpx.AsyncClient, browser: httpx.AsyncClient
) -> None:
    target = f"{ALLOWED}/page?x=1"
    url = await callback_url(rampart, browser, email(), redirect_to=target)
    r = await rampart.get(url.removeprefix("http://testserver"))
    assert r.status_code == 302, r.text
    location = r.headers["location"]
    assert location.startswith(target + "#")
    fragment = {k: v[0] for k, v in parse_qs(urlsplit(location).fragment).items()}
    assert fragment["token_type"] == "Bearer"
    me = await rampart.get(ME, headers={"Authorization": f"Bearer {fragment['access_token']}"})
    assert me.status_code == 200


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/after",
        "https://app.example.test.evil.example/after",
        "https://app.example.test@evil.example/after",
        "https://evil.example@app.example.test/after",
        "http://app.example.test/after",
        "https://app.example.test:8443/after",
        "https://app.example.test/afterwards",
        "https://app.example.test/after/../admin",
        "https://app.example.test/after/%2e%2e/admin",
        "https://app.example.test/after#frag",
        "//evil.example/after",
        "/after",
        "javascript:alert(1)",
        "https://app.example.test\\@evil.example/after",
    ],
)
async def test_redirect_to_off_the_allow_list_is_refused(
    rampart: httpx.AsyncClient, oidc_app: Rampart, target: str
) -> None:
    before = await oidc_app.services.db.fetchval("SELECT count(*) FROM oidc_login_states")
    r = await rampart.get(LOGIN, params={"redirect_to": target})
    assert r.status_code == 400, (target, r.status_code)
    assert r.json()["code"] == "invalid_redirect"
    assert "location" not in r.headers
    after = await oidc_app.services.db.fetchval("SELECT count(*) FROM oidc_login_states")
    assert after <= before


async def test_wrong_state_is_refused(
    rampart: httpx.AsyncClient, browser: httpx.AsyncClient, oidc_app: Rampart
) -> None:
    url = await callback_url(rampart, browser, email())
    query = parse_qs(urlsplit(url).query)
    r = await rampart.get(
        "/api/v1/auth/google/callback", params={"code": query["code"][0], "state": "forged-" + "a" * 40}
    )
    assert r.status_code == 400
    assert r.json()["code"] == "invalid_state"
    r = await rampart.get("/api/v1/auth/google/callback", params={"code": query["code"][0]})
    assert r.status_code == 400
    assert r.json()["code"] == "invalid_state"


async def test_replayed_state_is_refused(rampart: httpx.AsyncClient, browser: httpx.AsyncClient) -> None:
    url = (await callback_url(rampart, browser, email())).removeprefix("http://testserver")
    assert (await rampart.get(url)).status_code == 200
    r = await rampart.get(url)
    assert r.status_code == 400
    assert r.json()["code"] == "invalid_state"


async def test_expired_state_is_refused(
    rampart: httpx.AsyncClient, browser: httpx.AsyncClient, oidc_app: Rampart
) -> None:
    url = await callback_url(rampart, browser, email())
    await oidc_app.services.db.execute(
        "UPDATE oidc_login_states SET expires_at = now() - interval '1 s' WHERE state_hash = $1",
        state_hash(url),
    )
    r = await rampart.get(url.removeprefix("http://testserver"))
    assert r.status_code == 400
    assert r.json()["code"] == "invalid_state"


async def test_wrong_nonce_is_refused(
    rampart: httpx.AsyncClient, browser: httpx.AsyncClient, oidc_app: Rampart
) -> None:
    who = email()
    url = await callback_url(rampart, browser, who)
    # The provider puts the nonce of the authorize request in the ID token; ours now expects another.
    await oidc_app.services.db.execute(
        "UPDATE oidc_login_states SET nonce = 'not-the-nonce' WHERE state_hash = $1", state_hash(url)
    )
    r = await rampart.get(url.removeprefix("http://testserver"))
    assert r.status_code == 401, r.text
    assert r.json()["code"] == "invalid_id_token"
    assert await oidc_app.services.db.fetchval("SELECT count(*) FROM users WHERE email = $1", who) == 0


async def test_pkce_verifier_is_checked_by_the_provider(
    rampart: httpx.AsyncClient, browser: httpx.AsyncClient, oidc_app: Rampart
) -> None:
    url = await callback_url(rampart, browser, email())
    await oidc_app.services.db.execute(
        "UPDATE oidc_login_states SET code_verifier = $2 WHERE state_hash = $1", state_hash(url), "v" * 64
    )
    r = await rampart.get(url.removeprefix("http://testserver"))
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "invalid_grant"


async def test_unverified_email_is_refused(
    rampart: httpx.AsyncClient, browser: httpx.AsyncClient, oidc_app: Rampart
) -> None:
    who = f"unverified-{uuid.uuid4().hex[:8]}@example.test"
    r = await sign_in(rampart, browser, who)
    assert r.status_code == 403, r.text
    assert r.json()["code"] == "email_not_verified"
    assert await oidc_app.services.db.fetchval("SELECT count(*) FROM users WHERE email = $1", who) == 0


async def test_denied_consent_is_a_clear_problem(
    rampart: httpx.AsyncClient, browser: httpx.AsyncClient
) -> None:
    url = await callback_url(rampart, browser, None, cancel=True)
    assert "error=access_denied" in url
    r = await rampart.get(url.removeprefix("http://testserver"))
    assert r.status_code == 403
    body = r.json()
    assert body["code"] == "sign_in_denied"
    assert "access_denied" in body["detail"]
    # the state of that attempt is spent too
    r = await rampart.get(url.removeprefix("http://testserver").replace("error=access_denied", "code=x"))
    assert r.status_code == 400


async def test_disabled_user_cannot_sign_in(
    rampart: httpx.AsyncClient, browser: httpx.AsyncClient, oidc_app: Rampart
) -> None:
    who = email()
    user = (await sign_in(rampart, browser, who)).json()["data"]["user"]
    await oidc_app.services.db.execute(
        "UPDATE users SET disabled = true WHERE id = $1", uuid.UUID(user["id"])
    )
    r = await sign_in(rampart, browser, who)
    assert r.status_code == 403
    assert r.json()["code"] == "sign_in_denied"


async def test_provider_key_rotation_is_followed(
    rampart: httpx.AsyncClient, browser: httpx.AsyncClient, provider: NodeProvider, oidc_app: Rampart
) -> None:
    assert (await sign_in(rampart, browser, email())).status_code == 200  # key-1 is cached now
    provider.stop()
    provider.start(new_jwks("key-2"))  # the provider now signs with a key Rampart has never seen
    async with httpx.AsyncClient(timeout=10) as fresh_browser:
        r = await sign_in(rampart, fresh_browser, email())
    assert r.status_code == 200, r.text


async def test_provider_down_is_a_503_problem(database_url: str) -> None:
    node = NodeProvider(redirect_uri=CALLBACK_PREFIX)
    node.start(new_jwks("key-down"))
    app = create_app(make_settings(database_url, **oidc_settings(database_url, node.issuer)))
    try:
        transport = httpx.ASGITransport(app=app)
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://testserver") as rampart,
            httpx.AsyncClient(timeout=10) as browser,
        ):
            url = await callback_url(rampart, browser, email())
            node.stop()
            # during the callback: the code exchange cannot reach the provider
            r = await rampart.get(url.removeprefix("http://testserver"))
            assert r.status_code == 503, r.text
            assert r.json()["code"] == "provider_unavailable"
            assert "127.0.0.1" not in r.text
        # before the login: discovery cannot reach it
        cold = create_app(make_settings(database_url, **oidc_settings(database_url, node.issuer)))
        try:
            transport = httpx.ASGITransport(app=cold)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as rampart:
                r = await rampart.get(LOGIN)
                assert r.status_code == 503
                assert r.json()["code"] == "provider_unavailable"
        finally:
            await cold.aclose()
    finally:
        node.stop()
        await app.aclose()


async def test_sign_in_routes_without_configuration_are_not_found(client: httpx.AsyncClient) -> None:
    for path in (LOGIN, "/api/v1/auth/google/callback?code=a&state=b"):
        r = await client.get(path)
        assert r.status_code == 404
        assert r.json()["code"] == "sign_in_not_configured"


async def test_sign_in_routes_are_limited_per_ip_by_the_auth_class(
    database_url: str, provider: NodeProvider
) -> None:
    settings = {**oidc_settings(database_url, provider.issuer), "rate_limit_auth": "2/minute"}
    app = create_app(make_settings(database_url, **settings))
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as rampart:
            statuses = [(await rampart.get(LOGIN)).status_code for _ in range(2)]
            statuses.append((await rampart.get("/api/v1/auth/google/callback?code=a&state=b")).status_code)
            assert statuses == [302, 302, 429]
    finally:
        await app.aclose()
