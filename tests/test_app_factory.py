"""`create_app(settings=None, *, resources, routes, middleware, subscribers)`: an app's own routes, middleware
and event subscribers, and `RAMPART_APP` naming resources or a whole application."""

from __future__ import annotations

import asyncio
import re
import sys
import types
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

import rampart
from rampart import (
    Call,
    Field,
    Forbidden,
    Resource,
    Route,
    Subscriber,
    Text,
    json_response,
)
from rampart.access.actor import Roles
from rampart.schema import app_target, declared_resources
from tests.conftest import TEST_SECRET, User, fresh_database, make_settings, new_user
from tests.declared import Served, serve

DOCS = Path(__file__).resolve().parent.parent / "docs"

notes = Resource(name="fac_notes", fields={"text": Field(Text(max_length=100), required=True)})


async def note_count(call: Call) -> Any:
    """An app's own route that uses a manager, as the caller."""
    page = await call.resources["fac_notes"].list(call.context, {"include_total": "true", "limit": "1"})
    return json_response({"data": {"notes": page.total, "caller": str(call.user.user_id)}})


async def ping(call: Call) -> Any:
    return json_response({"data": "pong"})


async def refuse(call: Call) -> Any:
    raise Forbidden("Not today.")


class StampMiddleware:
    """Adds a header to every response and refuses requests that carry `X-Block`."""

    def __init__(self, app: ASGIApp, *, header: str) -> None:
        self.app = app
        self.header = header.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and any(k == b"x-block" for k, _ in scope["headers"]):
            raise Forbidden("Blocked by the app's middleware.")
        request_id = scope.get("rampart.request_id", "").encode()

        async def stamped(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (self.header, request_id)]
            await send(message)

        await self.app(scope, receive, stamped)


heard: list[dict[str, Any]] = []


async def remember(event: Any) -> None:
    heard.append(dict(event))


@pytest.fixture(scope="module")
def own_database() -> Iterator[str]:
    """A database of this module's own: event subscribers are a property of the code that runs, and every
    dispatcher on a database fans events out to the subscribers it knows (the session's demo app would
    claim these events for its own)."""
    with fresh_database() as url:
        yield url


@pytest.fixture(scope="module")
async def served(own_database: str) -> AsyncIterator[Served]:
    routes = [
        Route("GET", "/api/v1/fac/count", note_count, summary="How many notes the caller sees"),
        Route("GET", "/api/v1/fac/ping", ping, public=True),
        Route("POST", "/api/v1/fac/admin", refuse, permission="users:manage"),
        Route("GET", "/api/v1/fac/refuse", refuse),
    ]
    async with serve(
        own_database,
        [notes],
        routes=routes,
        middleware=[Middleware(StampMiddleware, header="x-stamp")],
        subscribers=[Subscriber("fac-notes", "fac_notes.*", remember, timeout=5)],
    ) as running:
        yield running


async def test_an_apps_route_runs_through_the_pipeline(served: Served) -> None:
    alice, admin = await new_user(served.app), await new_user(served.app, role="admin")
    c = served.client
    r = await c.get("/api/v1/fac/count")
    assert r.status_code == 401  # authenticated by default
    assert r.headers["www-authenticate"].startswith("Bearer")
    await c.post("/api/v1/fac_notes", json={"text": "one"}, headers=alice.headers)
    r = await c.get("/api/v1/fac/count", headers=alice.headers)
    assert r.status_code == 200
    assert r.json()["data"] == {"notes": 1, "caller": alice.id}  # the manager, as the caller: own notes
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "ratelimit-limit" in r.headers
    r = await c.get("/api/v1/fac/ping")
    assert (r.status_code, r.json()["data"]) == (200, "pong")  # public
    r = await c.post("/api/v1/fac/admin", headers=alice.headers)
    assert (r.status_code, r.json()["code"]) == (403, "forbidden")  # the route's permission
    r = await c.post("/api/v1/fac/admin", headers=admin.headers)
    assert r.status_code == 403
    assert r.json()["detail"] == "Not today."  # the handler ran: its error is a problem
    assert r.headers["content-type"] == "application/problem+json"
    r = await c.put("/api/v1/fac/ping")
    assert r.status_code == 405
    spec = (await c.get("/openapi.json")).json()
    assert spec["paths"]["/api/v1/fac/count"]["get"]["summary"] == "How many notes the caller sees"
    assert spec["paths"]["/api/v1/fac/count"]["get"]["operationId"] == "get_api_v1_fac_count"


async def test_the_apps_middleware_wraps_every_route_inside_the_pipeline(served: Served) -> None:
    alice = await new_user(served.app)
    c = served.client
    for path in ("/api/v1/fac/ping", "/api/v1/fac_notes"):
        r = await c.get(path, headers=alice.headers)
        assert r.status_code == 200
        assert r.headers["x-stamp"] == r.headers["x-request-id"]  # it sees the request id
    r = await c.get("/api/v1/fac_notes", headers={**alice.headers, "X-Block": "1"})
    assert r.status_code == 403
    assert r.json()["detail"] == "Blocked by the app's middleware."
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["x-content-type-options"] == "nosniff"  # the pipeline's headers still apply
    assert r.json()["request_id"] == r.headers["x-request-id"]


async def test_subscribers_receive_the_events(served: Served) -> None:
    alice = await new_user(served.app)
    r = await served.client.post("/api/v1/fac_notes", json={"text": "heard?"}, headers=alice.headers)
    note_id = r.json()["data"]["id"]
    for _ in range(200):
        if any(e["resource_id"] == note_id for e in heard):
            break
        await asyncio.sleep(0.05)
    event = next(e for e in heard if e["resource_id"] == note_id)
    assert event["type"] == "fac_notes.created"
    assert event["actor_id"] == alice.id
    assert event["data"]["text"] == "heard?"


def test_routes_are_declared_with_their_rules() -> None:
    with pytest.raises(ValueError, match="method"):
        Route("FETCH", "/x", ping)
    with pytest.raises(ValueError, match="must start with"):
        Route("GET", "x", ping)


def _module(name: str, **attributes: Any) -> str:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    sys.modules[name] = module
    return name


async def test_rampart_app_may_name_resources_a_function_or_an_application(database_url: str) -> None:
    roles = Roles({"admin": [], "user": []})
    as_list = _module(f"fac_list_{uuid.uuid4().hex}", resources=[notes])
    as_function = _module(f"fac_fn_{uuid.uuid4().hex}", declare=lambda: [notes])
    built = rampart.create_app(make_settings(database_url), resources=[notes])
    as_app = _module(f"fac_app_{uuid.uuid4().hex}", app=built)
    try:
        for target in (f"{as_list}:resources", as_function, f"{as_app}:app"):
            settings = make_settings(database_url, app=target)
            names = [r.name for r in declared_resources(settings, roles)]
            assert names == ["users", "webhooks", "fac_notes"], target  # Rampart's own first
        assert app_target(make_settings(database_url, app=f"{as_app}:app")) is built
        with pytest.raises(ValueError, match="names neither"):
            declared_resources(make_settings(database_url, app=f"{as_list}:__name__"), roles)
    finally:
        await built.aclose()


@pytest.fixture
def example_database() -> Iterator[str]:
    with fresh_database() as url:  # the example's subscriber must be the only one fanning out its events
        yield url


async def test_the_events_guides_subscriber_example_runs_as_written(
    example_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    database_url = example_database
    guide = (DOCS / "guide" / "events.md").read_text()
    example = next(b for b in re.findall(r"```python\n(.*?)```", guide, re.S) if "Subscriber(" in b)
    # create_app() reads its settings from the environment, as `rampart serve` does.
    for name, value in {
        "DATABASE_URL": database_url,
        "JWT_SECRET": TEST_SECRET,
        "ENV": "test",
        "ACCESS_LOG": "false",
        "RATE_LIMIT": "1000000/minute",
    }.items():
        monkeypatch.setenv(f"RAMPART_{name}", value)
    namespace: dict[str, Any] = {}
    exec(compile(example, "events.md", "exec"), namespace)  # noqa: S102 - our own documentation
    app = namespace["app"]
    await app.startup()
    try:
        alice: User = await new_user(app)
        async with __import__("httpx").AsyncClient(
            transport=__import__("httpx").ASGITransport(app=app), base_url="http://testserver"
        ) as c:
            project = (await c.post("/api/v1/projects", json={"name": "p"}, headers=alice.headers)).json()
            r = await c.post(
                "/api/v1/tasks",
                json={"project_id": project["data"]["id"], "title": "t"},
                headers=alice.headers,
            )
            assert r.status_code == 201, r.text
            event_ids = {
                str(e["id"])
                for e in await app.services.db.fetch(
                    "SELECT id FROM events WHERE resource_id = $1", r.json()["data"]["id"]
                )
            }
        for _ in range(200):
            if event_ids <= set(namespace["indexed"]):
                break
            await asyncio.sleep(0.05)
        assert event_ids <= set(namespace["indexed"])
    finally:
        await app.aclose()
