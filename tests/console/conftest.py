"""Helpers of the console's tests: a browser-like client (cookies kept, redirects not followed), signing it
in with a one-time link, and reading the CSRF token of the page it is on."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from rampart.app import Rampart
from rampart.auth.browser import COOKIE
from rampart.auth.login_links import SIGN_IN, create_link

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(page: httpx.Response) -> str:
    """The CSRF token of the first form on a page."""
    found = _CSRF.search(page.text)
    assert found, f"no form with a CSRF token on {page.url}"
    return found.group(1)


async def sign_in(app: Rampart, browser: httpx.AsyncClient, user_id: str) -> uuid.UUID:
    """Sign `browser` into the console with a fresh one-time link; returns the console session's id."""
    token = await create_link(app.services.db, purpose=SIGN_IN, user_id=uuid.UUID(user_id))
    page = await browser.get("/console/sign-in/link", params={"token": token})
    assert page.status_code == 200, page.text
    r = await browser.post("/console/sign-in/link", data={"token": token, "csrf_token": csrf_of(page)})
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/console"
    assert app.services.browser is not None
    session = app.services.browser.session_of(browser.cookies.get(COOKIE))
    assert session is not None
    return session


async def post_form(
    browser: httpx.AsyncClient, page_path: str, action: str, data: dict[str, str]
) -> httpx.Response:
    """Open the page that holds the form, then post it with that page's CSRF token (as a browser does)."""
    page = await browser.get(page_path)
    assert page.status_code == 200, (page_path, page.status_code, page.text[:500])
    return await browser.post(action, data={**data, "csrf_token": csrf_of(page)})


@pytest.fixture
async def browser(app: Rampart) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client
