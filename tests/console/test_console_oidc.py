"""Signing into the console with the identity provider: the real `oidc-provider` (tests/oidc), Rampart in
process, the browser's part played over HTTP. The callback of a sign-in the console started answers a
page that moves on to the console (a SameSite=Strict cookie set at the end of a cross-site redirect chain
is not sent on the redirect that follows), and hands out no tokens."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from rampart.app import Rampart, create_app
from rampart.auth.browser import COOKIE
from tests.conftest import make_settings
from tests.oidc.node_provider import (
    CALLBACK_PREFIX,
    CLIENT_ID,
    CLIENT_SECRET,
    NodeProvider,
    new_jwks,
    to_callback,
)

BOSS = f"boss-{uuid.uuid4().hex[:8]}@example.test"


@pytest.fixture(scope="module")
def provider() -> Iterator[NodeProvider]:
    node = NodeProvider(redirect_uri=CALLBACK_PREFIX)
    node.start(new_jwks("console-key"))
    yield node
    node.stop()


@pytest.fixture(scope="module")
async def oidc_app(database_url: str, provider: NodeProvider) -> AsyncIterator[Rampart]:
    settings = make_settings(
        database_url,
        public_url="http://testserver",
        oidc_issuer=provider.issuer,
        oidc_client_id=CLIENT_ID,
        oidc_client_secret=CLIENT_SECRET,
        oidc_admin_emails=BOSS,
    )
    app = create_app(settings)
    yield app
    await app.aclose()


async def sign_in(app: Rampart, login: str) -> tuple[httpx.AsyncClient, httpx.Response]:
    browser = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
    r = await browser.get("/console/sign-in/oidc")
    assert r.status_code == 302, r.text
    async with httpx.AsyncClient(timeout=10) as at_provider:
        callback = await to_callback(at_provider, r.headers["location"], login=login)
    return browser, await browser.get(callback.removeprefix("http://testserver"))


async def test_an_admin_signs_into_the_console_with_the_provider(oidc_app: Rampart) -> None:
    browser, answer = await sign_in(oidc_app, BOSS)
    try:
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/html")
        assert '<meta http-equiv="refresh" content="0;url=/console">' in answer.text
        assert "access_token" not in answer.text  # a cookie, no tokens
        cookie = next(h for h in answer.headers.get_list("set-cookie") if h.startswith(f"{COOKIE}="))
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie
        page = await browser.get("/console")
        assert page.status_code == 200
        assert "<h1>Overview</h1>" in page.text
    finally:
        await browser.aclose()


async def test_a_user_who_is_not_an_administrator_is_refused(oidc_app: Rampart) -> None:
    browser, answer = await sign_in(oidc_app, f"plain-{uuid.uuid4().hex[:8]}@example.test")
    try:
        assert answer.status_code == 403
        assert answer.json()["code"] == "sign_in_denied"
        assert COOKIE not in browser.cookies
        assert (await browser.get("/console")).status_code == 303
    finally:
        await browser.aclose()
