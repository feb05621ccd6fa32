"""The console over HTTP, in process: sign-in links, the session cookie and its revocation, CSRF, the
pages' headers, field errors from the API's own validation, and that every change is the admin's event."""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterator

import httpx
import pytest

from rampart.app import Rampart, create_app
from rampart.auth.browser import AS_COOKIE, COOKIE
from rampart.auth.login_links import FIRST_ADMIN, SIGN_IN, create_link
from rampart.config import Settings
from rampart.ops.metrics_history import MetricsHistory
from tests.conftest import MakeUser, User, context_of, fresh_database, make_settings
from tests.console.conftest import csrf_of, post_form, sign_in


async def events_of(app: Rampart, resource_id: str) -> list[dict[str, object]]:
    rows = await app.services.db.fetch(
        "SELECT type, actor_id, impersonator_id FROM events WHERE resource_id = $1 ORDER BY id", resource_id
    )
    return [dict(r) for r in rows]


async def test_a_login_link_signs_in_once_and_only_its_hash_is_stored(
    app: Rampart, browser: httpx.AsyncClient, admin: User
) -> None:
    token = await create_link(app.services.db, purpose=SIGN_IN, user_id=uuid.UUID(admin.id))
    stored = await app.services.db.fetchval(
        "SELECT token_hash FROM login_links WHERE token_hash = $1", hashlib.sha256(token.encode()).hexdigest()
    )
    assert stored is not None
    assert not await app.services.db.fetchval("SELECT count(*) FROM login_links WHERE token_hash = $1", token)

    page = await browser.get("/console/sign-in/link", params={"token": token})
    assert page.status_code == 200
    assert admin.email in page.text
    r = await browser.post("/console/sign-in/link", data={"token": token, "csrf_token": csrf_of(page)})
    assert r.status_code == 303
    cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith(f"{COOKIE}="))
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Path=/console" in cookie
    assert (await browser.get("/console")).status_code == 200

    again = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
    async with again:
        second = await again.get("/console/sign-in/link", params={"token": token})
        assert second.status_code == 401
        assert "already used or has expired" in second.text
        await again.get("/console/sign-in")  # the signed-out form token: the pre-session cookie's value
        pre = again.cookies.get("rampart_console_pre")
        assert pre
        r = await again.post("/console/sign-in/link", data={"token": token, "csrf_token": pre})
        assert r.status_code == 401
        assert COOKIE not in again.cookies


async def test_an_expired_link_is_refused(app: Rampart, browser: httpx.AsyncClient, admin: User) -> None:
    token = await create_link(app.services.db, purpose=SIGN_IN, user_id=uuid.UUID(admin.id))
    await app.services.db.execute(
        "UPDATE login_links SET expires_at = now() - interval '1 second' WHERE token_hash = $1",
        hashlib.sha256(token.encode()).hexdigest(),
    )
    r = await browser.get("/console/sign-in/link", params={"token": token})
    assert r.status_code == 401


async def test_the_console_is_for_administrators(
    app: Rampart, browser: httpx.AsyncClient, alice: User
) -> None:
    token = await create_link(app.services.db, purpose=SIGN_IN, user_id=uuid.UUID(alice.id))
    page = await browser.get("/console/sign-in/link", params={"token": token})
    r = await browser.post("/console/sign-in/link", data={"token": token, "csrf_token": csrf_of(page)})
    assert r.status_code == 403
    assert "for administrators" in r.text
    assert COOKIE not in browser.cookies


async def test_signed_out_pages_send_to_sign_in(browser: httpx.AsyncClient) -> None:
    for path in ("/console", "/console/resources/tasks", "/console/audit", "/console/webhooks"):
        r = await browser.get(path)
        assert r.status_code == 303, path
        assert r.headers["location"] == "/console/sign-in"


async def test_pages_have_a_strict_csp_no_store_and_nothing_from_elsewhere(
    app: Rampart, browser: httpx.AsyncClient, admin: User
) -> None:
    await sign_in(app, browser, admin.id)
    for path in ("/console", "/console/resources/tasks", "/console/resources/tasks/new", "/console/audit"):
        r = await browser.get(path)
        assert r.status_code == 200, (path, r.text[:300])
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp
        assert "style-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp
        assert r.headers["cache-control"] == "no-store"
        assert float(r.headers["server-timing"].partition("dur=")[2]) >= 0
        assert "<script>" not in r.text  # only <script src> of our own
        assert " style=" not in r.text
        assert not re.search(r"(src|href)=\"https?://", r.text)
    assert (await browser.get("/api/v1/openapi.json")).status_code == 404  # no route leak
    spec = (await browser.get("/openapi.json")).json()
    assert not [p for p in spec["paths"] if p.startswith("/console")]


async def test_every_post_needs_this_sessions_csrf_token(
    app: Rampart, browser: httpx.AsyncClient, admin: User, make_user: MakeUser
) -> None:
    await sign_in(app, browser, admin.id)
    name = f"csrf-{uuid.uuid4().hex[:8]}"
    r = await browser.post("/console/resources/projects/new", data={"name": name})
    assert r.status_code == 403
    assert "out of date" in r.text
    other_admin = await make_user("admin")
    other = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
    async with other:
        await sign_in(app, other, other_admin.id)
        foreign = csrf_of(await other.get("/console/resources/projects/new"))
    r = await browser.post("/console/resources/projects/new", data={"name": name, "csrf_token": foreign})
    assert r.status_code == 403
    page = await app.services.managers["projects"].list(context_of(app, admin), {"name": name})
    assert page.items == []
    r = await post_form(
        browser, "/console/resources/projects/new", "/console/resources/projects/new", {"name": name}
    )
    assert r.status_code == 303


async def test_revoking_the_console_session_signs_the_browser_out(
    app: Rampart, browser: httpx.AsyncClient, admin: User, client: httpx.AsyncClient
) -> None:
    session = await sign_in(app, browser, admin.id)
    assert (await browser.get("/console")).status_code == 200
    listed = (await client.get("/api/v1/auth/sessions", headers=admin.headers)).json()["data"]
    assert str(session) in {s["id"] for s in listed}  # a real session, in the user's own list
    r = await client.delete(f"/api/v1/auth/sessions/{session}", headers=admin.headers)
    assert r.status_code == 204
    r = await browser.get("/console")
    assert r.status_code == 303
    assert r.headers["location"] == "/console/sign-in"


async def test_a_forged_cookie_is_nobody(app: Rampart, browser: httpx.AsyncClient, admin: User) -> None:
    session = await sign_in(app, browser, admin.id)
    browser.cookies.set(COOKIE, f"{session}.forged", domain="testserver.local", path="/console")
    browser.cookies.clear()
    browser.cookies.set(COOKIE, f"{session}.AAAA")
    assert (await browser.get("/console")).status_code == 303


async def test_invalid_fields_are_the_apis_own_errors_beside_each_field(
    app: Rampart, browser: httpx.AsyncClient, admin: User
) -> None:
    await sign_in(app, browser, admin.id)
    r = await post_form(
        browser, "/console/resources/projects/new", "/console/resources/projects/new", {"name": "Console"}
    )
    project_id = r.headers["location"].rsplit("/", 1)[-1].split("?")[0]
    form = {"project_id": project_id, "title": "", "priority": "9", "status": "todo", "due_date": ""}
    r = await post_form(browser, "/console/resources/tasks/new", "/console/resources/tasks/new", form)
    assert r.status_code == 200  # the form again, with the errors
    # The API's messages (rampart.resources.fields), each after its own field's control.
    assert re.search(r'id="f-priority"[^>]*aria-invalid="true"', r.text)
    assert re.search(r'id="e-priority">Must be at most 5\.<', r.text)
    assert re.search(r'id="e-title">Must be at least 1 characters long\.<', r.text)
    r = await post_form(
        browser,
        "/console/resources/tasks/new",
        "/console/resources/tasks/new",
        {**form, "title": "t", "priority": "3"},
    )
    assert r.status_code == 303
    task_id = r.headers["location"].split("?")[0].rsplit("/", 1)[-1]
    assert [e["type"] for e in await events_of(app, task_id)] == ["tasks.created"]
    assert (await events_of(app, task_id))[0]["actor_id"] == uuid.UUID(admin.id)
    listing = await browser.get(
        "/console/resources/tasks", params={"project_id": project_id, "op.priority": "gte", "priority": "3"}
    )
    assert task_id[:8] in listing.text
    assert "priority%5Bgte%5D=3" in listing.text  # the same query in the API, shown
    bad = await browser.get("/console/resources/tasks", params={"op.priority": "gte", "priority": "x"})
    assert bad.status_code == 200
    assert re.search(r'id="qe-priority">priority\[gte\]: Must be an integer\.<', bad.text)


async def test_disabling_a_user_from_the_console_ends_their_api_token(
    app: Rampart, browser: httpx.AsyncClient, admin: User, alice: User, client: httpx.AsyncClient
) -> None:
    await sign_in(app, browser, admin.id)
    assert (await client.get("/api/v1/auth/me", headers=alice.headers)).status_code == 200
    page = f"/console/resources/users/{alice.id}"
    r = await post_form(browser, page, f"/console/users/{alice.id}/disable", {})
    assert r.status_code == 303
    assert (await client.get("/api/v1/auth/me", headers=alice.headers)).status_code == 401
    events = await events_of(app, alice.id)
    assert events[-1]["type"] == "users.updated"
    assert events[-1]["actor_id"] == uuid.UUID(admin.id)


async def test_impersonation_acts_as_the_user_with_a_banner_until_stopped(
    app: Rampart, browser: httpx.AsyncClient, admin: User, alice: User, client: httpx.AsyncClient
) -> None:
    await sign_in(app, browser, admin.id)
    r = await post_form(
        browser, f"/console/users/{alice.id}/impersonate", f"/console/users/{alice.id}/impersonate", {}
    )
    assert r.status_code == 303
    assert AS_COOKIE in browser.cookies
    page = await browser.get("/console/resources/projects")
    assert f"You are acting as <strong>{alice.email}</strong>" in page.text
    r = await post_form(
        browser, "/console/resources/projects/new", "/console/resources/projects/new", {"name": "as alice"}
    )
    project_id = r.headers["location"].split("?")[0].rsplit("/", 1)[-1]
    event = (await events_of(app, project_id))[0]
    assert event["actor_id"] == uuid.UUID(alice.id)
    assert event["impersonator_id"] == uuid.UUID(admin.id)
    # The user's view: no users page, and the API's own refusal for an admin-only action.
    assert (await browser.get("/console/resources/users")).status_code == 403
    r = await post_form(browser, "/console/resources/projects", "/console/impersonation/stop", {})
    assert r.status_code == 303
    page = await browser.get("/console")
    assert "You are acting as" not in page.text
    opened = (await client.get("/api/v1/admin/impersonations", headers=admin.headers)).json()["data"]
    assert opened == []


async def test_sign_out_revokes_the_session(app: Rampart, browser: httpx.AsyncClient, admin: User) -> None:
    session = await sign_in(app, browser, admin.id)
    r = await post_form(browser, "/console", "/console/sign-out", {})
    assert r.status_code == 303
    assert await app.services.db.fetchval(
        "SELECT revoked_at IS NOT NULL FROM sessions WHERE id = $1", session
    )


def _fresh_app(url: str, **overrides: object) -> Rampart:
    return create_app(make_settings(url, **overrides))


@pytest.fixture
def empty_service() -> Iterator[str]:
    """A migrated database of its own, with no user at all."""
    with fresh_database() as url:
        yield url


async def test_the_first_admins_link_creates_them_and_signs_them_in(empty_service: str) -> None:
    app = _fresh_app(empty_service)
    try:
        token = await create_link(app.services.db, purpose=FIRST_ADMIN)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as browser:
            page = await browser.get("/console/sign-in/link", params={"token": token})
            assert "no administrator yet" in page.text
            data = {"token": token, "csrf_token": csrf_of(page), "email": "not an email", "name": "Ada"}
            r = await browser.post("/console/sign-in/link", data=data)
            assert r.status_code == 200  # the form again, with the users resource's own error
            assert re.search(r'id="e-email">Has an invalid format\.<', r.text)
            r = await browser.post("/console/sign-in/link", data={**data, "email": "ada@example.test"})
            assert r.status_code == 303  # the link was not spent by the invalid attempt
            assert (await browser.get("/console")).status_code == 200
        row = await app.services.db.fetchrow("SELECT id, role FROM users WHERE email = 'ada@example.test'")
        assert row["role"] == "admin"
        assert [e["type"] for e in await events_of(app, str(row["id"]))] == ["users.created"]
        # Once an administrator exists, a first-admin link makes no other.
        late = await create_link(app.services.db, purpose=FIRST_ADMIN)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as other:
            page = await other.get("/console/sign-in/link", params={"token": late})
            data = {"token": late, "csrf_token": csrf_of(page), "email": "eve@example.test", "name": ""}
            r = await other.post("/console/sign-in/link", data=data)
            assert r.status_code == 409
            assert "An administrator exists already" in r.text
    finally:
        await app.aclose()


async def test_the_console_can_be_turned_off(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"console": False}))
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as c:
            r = await c.get("/console")
            assert r.status_code == 404
            assert r.headers["content-type"] == "application/problem+json"
    finally:
        await app.aclose()


def test_console_routes_stay_out_of_the_apis_route_table(app: Rampart) -> None:
    router = app._app.app  # type: ignore[attr-defined]  # the pipeline's router
    table = [endpoint.path for entries in router._table.values() for _, _, endpoint in entries]
    assert table
    assert not [path for path in table if not path.startswith(("/api/", "/.well-known/"))]


@pytest.mark.parametrize("path", ["/console/static/console.css", "/console/static/console.js"])
async def test_assets_ship_with_the_package(browser: httpx.AsyncClient, path: str) -> None:
    r = await browser.get(path)
    assert r.status_code == 200
    assert r.headers["cache-control"].startswith("public")
    assert (await browser.get("/console/static/..%2Fpages.py")).status_code == 404


async def test_an_apps_own_browser_route_is_signed_in_by_the_console(settings: Settings, admin: User) -> None:
    from starlette.responses import HTMLResponse

    from rampart import Call, Route

    async def report(call: Call) -> HTMLResponse:
        page = await call.resources["projects"].list(call.context, {"include_total": "true"})
        return HTMLResponse(f"<!doctype html><title>Report</title><p>{page.total} projects</p>")

    async def action(call: Call) -> HTMLResponse:
        return HTMLResponse(f"<p>posted {call.form().get('what')}</p>")

    routes = [
        Route("GET", "/console/report", report, browser=True),
        Route("POST", "/console/report", action, browser=True),
    ]
    app = create_app(settings, routes=routes)
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as browser:
            assert (await browser.get("/console/report")).status_code == 303  # signed out: to sign in
            await sign_in(app, browser, admin.id)
            page = await browser.get("/console/report")
            assert page.status_code == 200
            assert "projects" in page.text
            assert "script-src 'self'" in page.headers["content-security-policy"]
            assert (await browser.post("/console/report", data={"what": "x"})).status_code == 403
            token = app.services.browser.csrf_token(
                app.services.browser.session_of(browser.cookies.get(COOKIE))
            )  # type: ignore[union-attr,arg-type]
            r = await browser.post("/console/report", data={"what": "x", "csrf_token": token})
            assert r.text == "<p>posted x</p>"
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            paths = (await client.get("/openapi.json")).json()["paths"]
            assert "/console/report" not in paths  # no part of the API's description
    finally:
        await app.aclose()


async def test_the_overview_charts_the_apis_requests_and_shows_health(
    app: Rampart, browser: httpx.AsyncClient, admin: User, client: httpx.AsyncClient
) -> None:
    history = next(w for w in app.services.background if isinstance(w, MetricsHistory))
    history.sample()
    for _ in range(5):
        assert (await client.get("/api/v1/auth/me", headers=admin.headers)).status_code == 200
    history.sample()
    await sign_in(app, browser, admin.id)
    page = await browser.get("/console")
    assert "database: <strong>ok</strong>" in page.text
    assert "migrations: <strong>ok</strong>" in page.text
    assert re.search(r"<strong>Requests per minute</strong>: Last \d", page.text)
    assert '<svg viewBox="0 0 300 60"' in page.text
    assert "<rect " in page.text  # bars drawn on the server
    assert re.search(r"<desc id=\"chart-1-d\">Last \d", page.text)  # the chart's text equivalent


async def test_dead_letters_are_replayed_from_the_console(
    app: Rampart, browser: httpx.AsyncClient, admin: User
) -> None:
    subscriber = f"webhook:{uuid.uuid4()}"
    event_id = await app.services.db.fetchval("SELECT id FROM events ORDER BY id DESC LIMIT 1")
    await app.services.db.execute(
        "INSERT INTO event_deliveries (event_id, subscriber, status, attempts, last_error)"
        " VALUES ($1, $2, 'dead', 10, 'the receiver answered 500')",
        event_id,
        subscriber,
    )
    await sign_in(app, browser, admin.id)
    page = await browser.get("/console/dead-letters")
    assert subscriber in page.text
    assert "the receiver answered 500" in page.text
    r = await browser.post(
        "/console/dead-letters/replay",
        data={"csrf_token": csrf_of(page), "subscriber": subscriber, "event_id": str(event_id)},
    )
    assert r.status_code == 303
    status = await app.services.db.fetchval(
        "SELECT status FROM event_deliveries WHERE event_id = $1 AND subscriber = $2", event_id, subscriber
    )
    assert status == "pending"
    await app.services.db.execute("DELETE FROM event_deliveries WHERE subscriber = $1", subscriber)


async def test_generic_pages_show_a_write_only_value_once_and_take_text_lists(
    app: Rampart, browser: httpx.AsyncClient, admin: User
) -> None:
    """The webhooks resource through the generic resource pages: its `secret` is a password box, shown
    only by the answer to the create; its `events` a text area, one pattern per line."""
    await sign_in(app, browser, admin.id)
    base = "/console/resources/webhooks"
    page = await browser.get(f"{base}/new")
    assert re.search(r'id="f-secret"[^>]*type="password"', page.text)
    assert '<textarea id="f-events"' in page.text
    form = {
        "url": "https://93.184.216.34/console",
        "events": "tasks.*\nprojects.created\ntasks.*",
        "active": "false",
    }
    r = await post_form(browser, f"{base}/new", f"{base}/new", form)
    assert r.status_code == 200, r.text[:500]  # the created item's page, answering the POST itself
    secret = re.search(r'<code class="secret">(whsec_[^<]+)</code>', r.text)
    assert secret is not None, r.text[:2000]
    hook_id = re.search(rf'href="{base}/([0-9a-f-]{{36}})/edit"', r.text)
    assert hook_id is not None
    detail = await browser.get(f"{base}/{hook_id.group(1)}")
    assert detail.status_code == 200
    assert "tasks.*, projects.created" in detail.text  # kept once each, in order
    assert secret.group(1) not in detail.text
    # An edit that leaves the secret empty keeps it.
    edit = f"{base}/{hook_id.group(1)}/edit"
    r = await post_form(browser, edit, edit, {**form, "description": "from the console", "version": "1"})
    assert r.status_code == 303, r.text[:500]
    stored = await app.services.db.fetchval(
        "SELECT secret FROM webhooks WHERE id = $1", uuid.UUID(hook_id.group(1))
    )
    assert stored == secret.group(1)
    assert [e["type"] for e in await events_of(app, hook_id.group(1))] == [
        "webhooks.created",
        "webhooks.updated",
    ]
    written = await app.services.db.fetch(
        "SELECT data::text, changes::text FROM events WHERE resource_id = $1", hook_id.group(1)
    )
    assert all(secret.group(1) not in f"{r[0]} {r[1]}" for r in written)
