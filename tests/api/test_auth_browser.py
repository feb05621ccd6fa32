"""End to end in a real headless Chromium (Debian's, driven by Playwright; no browser download).

A tiny web app has a "Sign in" link to Rampart's login route. The user signs in on the login page of
the real OpenID provider (`oidc-provider`) and lands back on the web app. The app reads the tokens from
the URL fragment and calls `/api/v1/auth/me` with them, across origins (CORS).
"""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import uvicorn
from playwright.async_api import async_playwright

from rampart.app import create_app
from tests.conftest import make_settings
from tests.oidc.node_provider import CLIENT_ID, CLIENT_SECRET, NodeProvider, free_port, new_jwks, to_callback

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

SIGNED_IN = """<!doctype html><meta charset="utf-8"><title>signed in</title>
<p id="who">checking</p>
<script>
const tokens = new URLSearchParams(location.hash.slice(1));
history.replaceState(null, "", location.pathname);
fetch("%(api)s/api/v1/auth/me", {headers: {Authorization: "Bearer " + tokens.get("access_token")}})
  .then(r => r.ok ? r.json() : Promise.reject(r.status))
  .then(body => { document.getElementById("who").textContent = "hello " + body.data.email; })
  .catch(err => { document.getElementById("who").textContent = "failed " + err; });
</script>"""

HOME = """<!doctype html><meta charset="utf-8"><title>web app</title>
<a id="signin" href="%(api)s/api/v1/auth/google/login?redirect_to=%(app)s/signed-in">Sign in</a>"""


def serve_web_app(port: int, api: str) -> ThreadingHTTPServer:
    app = f"http://127.0.0.1:{port}"

    class Pages(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            page = SIGNED_IN if self.path.startswith("/signed-in") else HOME
            body = (page % {"api": api, "app": app}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", port), Pages)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def stack(database_url: str) -> Iterator[tuple[str, str, str]]:
    """Rampart on a real socket, the provider, and the web app; yields (web app URL, provider issuer,
    Rampart's URL)."""
    api_port, app_port = free_port(), free_port()
    api, app = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{app_port}"
    provider = NodeProvider(redirect_uri=f"{api}/api/v1/auth/google/callback")
    provider.start(new_jwks("browser-key"))
    settings = make_settings(
        database_url,
        public_url=api,
        oidc_issuer=provider.issuer,
        oidc_client_id=CLIENT_ID,
        oidc_client_secret=CLIENT_SECRET,
        auth_redirect_allowlist=f"{app}/signed-in",
        cors_origins=app,
    )
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=api_port, log_config=None)
    )
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    web = serve_web_app(app_port, api)
    try:
        assert server.started, "the test server did not start"
        yield app, provider.issuer, api
    finally:
        web.shutdown()
        web.server_close()
        server.should_exit = True
        thread.join(timeout=10)
        provider.stop()


async def test_sign_in_in_a_real_browser(stack: tuple[str, str, str]) -> None:
    app, issuer, _ = stack
    email = f"browser-{uuid.uuid4().hex[:8]}@example.test"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = await browser.new_page()
            page.set_default_timeout(20_000)
            await page.goto(app)
            await page.click("text=Sign in")
            await page.wait_for_url(f"{issuer}/interaction/**")
            await page.fill("#login", email)
            await page.click("#submit")
            await page.wait_for_url(f"{app}/signed-in**")
            who = page.locator("#who")
            await who.filter(has_text="hello").wait_for()
            assert await who.text_content() == f"hello {email}"
            assert "access_token" not in page.url  # the app cleared the fragment
        finally:
            await browser.close()


async def test_a_callback_url_works_only_in_the_browser_that_started_the_sign_in(
    stack: tuple[str, str, str],
) -> None:
    # Login CSRF (issue 13, finding 5): the attacker signs in at the provider but stops at the callback
    # (an HTTP client here: Chromium cannot be stopped inside the provider's redirect chain), then has a
    # victim open that URL in a real browser. The victim's browser is refused and signed into nothing;
    # the attacker's own client still completes the sign-in (nothing was consumed).
    app, _, api = stack
    email = f"attacker-{uuid.uuid4().hex[:8]}@example.test"
    async with httpx.AsyncClient(timeout=10) as attacker:
        r = await attacker.get(f"{api}/api/v1/auth/google/login", params={"redirect_to": f"{app}/signed-in"})
        assert r.status_code == 302, r.text
        callback = await to_callback(
            attacker, r.headers["location"], login=email, callback=f"{api}/api/v1/auth/google/callback"
        )
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
            )
            try:
                page = await browser.new_page()
                answer = await page.goto(callback)
                assert answer is not None
                assert answer.status == 403
                assert (await answer.json())["code"] == "sign_in_browser_mismatch"
                assert page.url == callback  # not sent on to the web app with tokens
                assert not [c for c in await page.context.cookies() if c["name"] == "rampart_refresh"]
            finally:
                await browser.close()
        r = await attacker.get(callback)
        assert r.status_code == 302, r.text
        assert r.headers["location"].startswith(f"{app}/signed-in#access_token=")
