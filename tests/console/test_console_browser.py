"""The console end to end in a real headless Chromium (Debian's, driven by Playwright; no browser download).

Rampart runs on a real socket. Every page the tests visit is checked by axe-core (npm `axe-core`, pinned in
tests/console/package.json, injected by the test: the console never ships it) for serious or critical
violations; the page may log no console error and no request may leave for another host (each is routed
to abort, and the test fails if one was tried).

With RAMPART_CONSOLE_SCREENSHOTS=<folder> set, the tests also take the screenshots of
docs/guide/console.md there: `RAMPART_CONSOLE_SCREENSHOTS=docs/guide/console pytest tests/console -k browser`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import uvicorn
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from rampart.app import Rampart, create_app
from rampart.auth.login_links import SIGN_IN, create_link
from tests.conftest import User, fresh_database, make_settings, new_user
from tests.support import CHROMIUM, QuietHandler, free_port, serving

HERE = Path(__file__).resolve().parent
AXE = HERE / "node_modules" / "axe-core" / "axe.min.js"
SHOTS = os.environ.get("RAMPART_CONSOLE_SCREENSHOTS")
VIEWPORT = {"width": 1100, "height": 720}


def ensure_axe() -> None:
    """`npm ci` once (node_modules is not committed), as tests/oidc does for its provider."""
    if AXE.exists():
        return
    npm = shutil.which("npm")
    assert npm, "npm is needed for the console's accessibility checks (Node and npm)"
    subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=HERE, check=True, timeout=300
    )


@pytest.fixture(scope="module")
def console_database() -> Iterator[str]:
    """A database of these tests' own: only the served app's dispatcher delivers its webhooks."""
    with fresh_database() as url:
        yield url


@pytest.fixture(scope="module")
async def app(console_database: str) -> AsyncIterator[Rampart]:
    """The same service, in process and without a dispatcher: the tests make users and links with it."""
    helper = create_app(make_settings(console_database, events_dispatcher=False))
    yield helper
    await helper.aclose()


@pytest.fixture(scope="module")
def served(console_database: str) -> Iterator[str]:
    """The console's server on a real socket: a browser cannot use the in-process transport."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = make_settings(
        console_database,
        public_url=base,
        webhooks_allow_private_networks=True,  # the test's failing receiver is on 127.0.0.1
        events_max_attempts=3,
    )
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_config=None)
    )
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the test server did not start"
    yield base
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
async def chromium() -> AsyncIterator[Browser]:
    assert CHROMIUM, "Chromium is required for the browser tests (.ci/run installs Debian's chromium)"
    ensure_axe()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield browser
        await browser.close()


@dataclass
class Console:
    """One browser window on the console, with the checks every page gets."""

    base: str
    context: BrowserContext
    page: Page
    errors: list[str] = field(default_factory=list)
    elsewhere: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)

    async def goto(self, path: str) -> None:
        await self.page.goto(self.base + path)

    async def check(self) -> None:
        """axe-core on the page as it is now: no serious or critical violation."""
        result = await self.page.evaluate("axe.run(document, {resultTypes: ['violations']})")
        bad = [
            f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
            for v in result["violations"]
            if v["impact"] in ("serious", "critical")
        ]
        assert not bad, f"{self.page.url}: {bad}"
        self.checked.append(urlsplit(self.page.url).path)

    async def shot(self, name: str) -> None:
        if SHOTS:
            Path(SHOTS).mkdir(parents=True, exist_ok=True)
            await self.page.screenshot(path=str(Path(SHOTS) / f"{name}.png"))

    def assert_clean(self) -> None:
        assert not self.errors, self.errors
        assert not self.elsewhere, f"requests for other hosts: {self.elsewhere}"


async def open_console(chromium: Browser, base: str) -> Console:
    context = await chromium.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    await context.add_init_script(path=str(AXE))  # by DevTools: the page's CSP does not apply to it
    page = await context.new_page()
    page.set_default_timeout(15_000)
    console = Console(base, context, page)
    local = urlsplit(base).netloc

    async def guard(route: Any) -> None:
        if urlsplit(route.request.url).netloc != local and not route.request.url.startswith("data:"):
            console.elsewhere.append(route.request.url)
            await route.abort()
        else:
            await route.continue_()

    await context.route("**/*", guard)
    page.on("console", lambda m: console.errors.append(f"{m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: console.errors.append(f"pageerror: {e}"))
    return console


@pytest.fixture
async def window(chromium: Browser, served: str) -> AsyncIterator[Console]:
    console = await open_console(chromium, served)
    try:
        yield console
        console.assert_clean()
    finally:
        await console.context.close()


async def link_for(app: Rampart, user: User) -> str:
    token = await create_link(app.services.db, purpose=SIGN_IN, user_id=uuid.UUID(user.id))
    return f"/console/sign-in/link?token={token}"


async def signed_in(app: Rampart, console: Console, user: User) -> None:
    await console.goto(await link_for(app, user))
    await console.page.get_by_role("button", name=f"Sign in as {user.email}").click()
    await expect(console.page.get_by_role("heading", level=1)).to_have_text("Overview")


async def test_sign_in_with_a_link_that_works_once(app: Rampart, chromium: Browser, window: Console) -> None:
    admin = await new_user(app, role="admin")
    link = await link_for(app, admin)
    await window.goto(link)
    await window.check()
    await window.shot("sign-in-link")
    await window.page.get_by_role("button", name=f"Sign in as {admin.email}").click()
    await expect(window.page.get_by_role("heading", level=1)).to_have_text("Overview")
    await expect(window.page.get_by_text("database: ok")).to_be_visible()
    await window.check()
    await window.shot("overview")
    # The same link in another browser: refused, and nothing signed in.
    other = await open_console(chromium, window.base)
    try:
        await other.goto(link)
        await expect(other.page.get_by_text("already used or has expired")).to_be_visible()
        await other.check()
        await other.goto("/console")
        await expect(other.page).to_have_url(f"{window.base}/console/sign-in")
        await other.check()
        other.errors = [e for e in other.errors if "401" not in e]  # the refused link's page answers 401
        other.assert_clean()
    finally:
        await other.context.close()


async def test_create_a_project_and_a_task_fix_a_field_and_find_it(app: Rampart, window: Console) -> None:
    admin = await new_user(app, role="admin")
    await signed_in(app, window, admin)
    page = window.page
    await page.get_by_role("link", name="Projects").click()
    await window.check()
    await page.get_by_role("link", name="New projects item").click()
    project_name = f"Console launch {uuid.uuid4().hex[:6]}"
    await page.get_by_label("Name").fill(project_name)
    await page.get_by_role("button", name="Create").click()
    await expect(page.get_by_role("status")).to_have_text("Created.")
    await window.check()

    await page.get_by_role("navigation", name="Console").get_by_role("link", name="Tasks").click()
    await page.get_by_role("link", name="New tasks item").click()
    project_option = page.locator("#f-project_id option", has_text=project_name)
    await page.get_by_label("Project (required)").select_option(await project_option.get_attribute("value"))
    title = f"Write the console guide {uuid.uuid4().hex[:6]}"
    await page.get_by_label("Title").fill(title)
    await page.get_by_label("Priority").fill("9")
    await page.get_by_role("button", name="Create").click()
    # The API's own error, beside the field it is about.
    error = page.locator("#e-priority")
    await expect(error).to_have_text("Must be at most 5.")
    await expect(page.get_by_label("Priority")).to_have_attribute("aria-invalid", "true")
    await expect(page.get_by_role("alert")).to_contain_text("Priority: Must be at most 5.")
    await window.check()
    await window.shot("task-form-errors")
    await page.get_by_label("Priority").fill("3")
    await page.get_by_role("button", name="Create").click()
    await expect(page.get_by_role("status")).to_have_text("Created.")
    task_id = page.url.split("?")[0].rsplit("/", 1)[-1]

    # Find it in the list with a filter.
    await page.get_by_role("navigation", name="Console").get_by_role("link", name="Tasks").click()
    title_filter = page.get_by_role("group", name="Title")
    await title_filter.get_by_label("Title: operator").select_option("contains")
    await title_filter.get_by_label("Title: value").fill(title)
    await page.get_by_label("Count all matching rows").check()
    await page.get_by_role("button", name="Apply").click()
    rows = page.locator("table.rows tbody tr")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text(task_id[:8])
    await expect(page.locator("table.rows caption")).to_contain_text("1 matching")
    await window.check()
    await window.shot("tasks-list")

    # The audit log names the admin as the actor of tasks.created.
    await page.get_by_role("link", name="Audit log").click()
    await page.get_by_label("Event type").fill("tasks.created")
    await page.get_by_label("Item id").fill(task_id)
    await page.get_by_role("button", name="Apply").click()
    row = page.locator("table.events > tbody > tr")
    await expect(row).to_have_count(1)
    await expect(row.first).to_contain_text("tasks.created")
    await expect(row.first.locator("td.actor")).to_have_text(admin.email)
    await row.first.get_by_text("fields").click()
    await expect(row.first.locator("table.diff")).to_contain_text(title)
    await window.check()
    await window.shot("audit-log")


async def test_disable_a_user_and_their_api_token_is_refused(
    app: Rampart, window: Console, served: str
) -> None:
    admin = await new_user(app, role="admin")
    alice = await new_user(app, name="Alice Example")
    async with httpx.AsyncClient(base_url=served, timeout=5) as api:
        assert (await api.get("/api/v1/auth/me", headers=alice.headers)).status_code == 200
        await signed_in(app, window, admin)
        page = window.page
        await page.get_by_role("link", name="Users").click()
        email_filter = page.get_by_role("group", name="Email")
        await email_filter.get_by_label("Email: value").fill(alice.email)
        await page.get_by_role("button", name="Apply").click()
        await page.locator("table.rows tbody tr a").first.click()
        await expect(page.get_by_role("heading", level=1)).to_contain_text(alice.email)
        await window.check()
        await page.get_by_role("button", name="Disable user").click()
        await expect(page.get_by_role("status")).to_contain_text("The user was disabled")
        await window.check()
        await window.shot("user")
        # Another instance of the app serves the API here: the revocation reaches it within 1 s.
        deadline = time.monotonic() + 1.5
        status = 200
        while time.monotonic() < deadline and status != 401:
            status = (await api.get("/api/v1/auth/me", headers=alice.headers)).status_code
            await asyncio.sleep(0.05)
        assert status == 401


class Failing(QuietHandler):
    """A webhook receiver that always fails."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.reply(500)


async def test_redeliver_a_failed_webhook_delivery(app: Rampart, window: Console, served: str) -> None:
    admin = await new_user(app, role="admin")
    with serving(Failing) as port:
        await signed_in(app, window, admin)
        page = window.page
        await page.get_by_role("link", name="Webhooks").click()
        await window.check()
        await page.get_by_role("link", name="New webhook").click()
        await page.get_by_label("URL").fill(f"http://127.0.0.1:{port}/hooks/{uuid.uuid4().hex[:6]}")
        await page.get_by_label("Events").fill("projects.created")
        await page.get_by_role("button", name="Create").click()
        await expect(page.locator(".secret")).to_contain_text("whsec_")
        # The secret is shown on the answer to the POST itself; the webhook's own page is this one.
        edit = await page.get_by_role("link", name="Edit").get_attribute("href")
        assert edit
        webhook_url = window.base + edit.removesuffix("/edit")
        async with httpx.AsyncClient(base_url=served, timeout=5) as api:
            r = await api.post("/api/v1/projects", json={"name": "hooked"}, headers=admin.headers)
            assert r.status_code == 201
        attempts = page.locator("table.rows tbody tr")
        for _ in range(100):  # the dispatcher delivers at once; its failure is recorded
            await page.goto(webhook_url)
            if await attempts.count() >= 1:
                break
            await asyncio.sleep(0.1)
        await expect(attempts.first).to_contain_text("500")
        before = await attempts.count()
        await window.check()
        await page.get_by_role("button", name="Redeliver projects.created").first.click()
        await expect(page.get_by_role("status")).to_have_text("The delivery was queued again.")
        for _ in range(100):
            if await attempts.count() > before:
                break
            await asyncio.sleep(0.1)
            await page.reload()
        assert await attempts.count() > before, "the redelivery made no new attempt"
        await window.check()
        await window.shot("webhook")


async def test_impersonation_shows_a_banner_and_the_live_view_streams(
    app: Rampart, window: Console, served: str
) -> None:
    admin = await new_user(app, role="admin")
    bob = await new_user(app, name="Bob Example")
    await signed_in(app, window, admin)
    page = window.page
    await window.goto(f"/console/resources/users/{bob.id}")
    await page.get_by_role("link", name="Act as this user…").click()
    await window.check()
    await page.get_by_role("button", name=f"Act as {bob.email}").click()
    banner = page.get_by_role("region", name="Impersonation")
    await expect(banner).to_contain_text(f"You are acting as {bob.email}")
    await window.check()
    await window.shot("impersonation")
    await banner.get_by_role("button", name=f"Stop acting as {bob.email}").click()
    await expect(page.get_by_role("status")).to_have_text("You stopped acting as another user.")
    await expect(banner).to_have_count(0)

    await page.get_by_role("link", name="Live events").click()
    await expect(page.locator("#live-status")).to_contain_text("Connected")
    async with httpx.AsyncClient(base_url=served, timeout=5) as api:
        r = await api.post("/api/v1/projects", json={"name": "live one"}, headers=admin.headers)
        assert r.status_code == 201
    # The stream reads the log when the database announces events, and every 5 s regardless.
    await expect(page.locator("#live tbody tr").first).to_contain_text("projects.created", timeout=12_000)
    await window.check()
    await window.shot("live")
    for path in ("/console/dead-letters", "/console/webhooks/new", "/console/resources/members"):
        await window.goto(path)
        await window.check()
