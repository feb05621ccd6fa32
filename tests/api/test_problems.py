"""Every error is an RFC 9457 problem (API.md "Conventions"), and production ones never leak internals."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import httpx
import pytest

from rampart.app import Rampart, create_app
from tests.apps.slow import BOOM, serve
from tests.conftest import TEST_SECRET, User, make_settings

PROBLEM_KEYS = {"type", "title", "status", "detail", "code", "request_id", "errors"}
# What must never reach a client in production: pieces of SQL, paths, tracebacks, library names, secrets.
LEAKS = (
    "Traceback",
    'File "',
    ".py",
    "/srv/",
    "SELECT",
    "password",
    "secret sql",
    "RuntimeError",
    "asyncpg",
    "starlette",
    "127.0.0.1",
    "Connection refused",
    TEST_SECRET,
)


def assert_problem(r: httpx.Response, status: int, code: str | None = None) -> dict[str, object]:
    """The response is a well-formed problem with this status (and code), and leaks nothing."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert isinstance(body, dict)
    assert {"type", "title", "status", "detail", "code", "request_id"} <= set(body), body
    assert set(body) <= PROBLEM_KEYS, f"unexpected members {set(body) - PROBLEM_KEYS}"
    assert body["type"] == "about:blank" or str(body["type"]).startswith("https://")
    assert body["status"] == status
    assert isinstance(body["title"], str)
    assert body["title"]
    assert isinstance(body["detail"], str)
    assert body["detail"]
    assert isinstance(body["code"], str)
    assert body["code"].replace("_", "").isalpha()
    assert body["code"] == body["code"].lower()
    assert body["request_id"] == r.headers["x-request-id"]
    if code is not None:
        assert body["code"] == code
    for leak in LEAKS:
        assert leak not in r.text, f"{leak!r} leaked in {r.text}"
    return body


@pytest.fixture(scope="module")
async def prod_app(database_url: str) -> AsyncIterator[Rampart]:
    app = create_app(make_settings(database_url, env="production", body_limit=2048, rate_limit="3/minute"))
    yield app
    await app.aclose()


@pytest.fixture
async def prod(prod_app: Rampart) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=prod_app), base_url="http://testserver"
    ) as http:
        yield http


@pytest.fixture(scope="module")
async def prod_probe(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        database_url, app="tests.apps.slow:declare", env="production", request_timeout=0.3
    )
    async with serve(settings) as (_, client):
        yield client


@pytest.fixture(scope="module")
async def dev_probe(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(database_url, app="tests.apps.slow:declare", env="development")
    async with serve(settings) as (_, client):
        yield client


# ----- one scenario per status ------------------------------------------------------------------------

Scenario = Callable[[httpx.AsyncClient, User, User], Awaitable[httpx.Response]]


async def _malformed(http: httpx.AsyncClient, user: User, admin: User) -> httpx.Response:
    return await http.post(
        "/api/v1/projects", content=b"{nope", headers={**user.headers, "content-type": "application/json"}
    )


async def _bad_query(http: httpx.AsyncClient, user: User, admin: User) -> httpx.Response:
    return await http.get("/api/v1/tasks?limit=100000", headers=user.headers)


async def _no_token(http: httpx.AsyncClient, user: User, admin: User) -> httpx.Response:
    return await http.get("/api/v1/projects")


async def _bad_token(http: httpx.AsyncClient, user: User, admin: User) -> httpx.Response:
    return await http.get("/api/v1/projects", headers={"Authorization": "Bearer not.a.jwt"})


async def _forbidden(http: httpx.AsyncClient, user: User, admin: User) -> httpx.Response:
    return await http.get("/api/v1/admin/users", headers=user.headers)


async def _missing(http: httpx.AsyncClient, user: User, admin: User) -> httpx.Response:
    return await http.get(f"/api/v1/projects/{uuid.uuid4()}", headers=user.headers)


async def _malformed_id(http: httpx.AsyncClient, user: User, admin: User) -> httpx.Response:
    return await http.get("/api/v1/projects/not-a-uuid", headers=user.headers)


async def _no_route(http: httpx.AsyncClient, user: User, admin: User) -> httpx.Response:
    return await http.get("/api/v2/nothing/here")


async def _no_method(http: httpx.AsyncClient, user: User, admin: User) -> httpx.Response:
    return await http.put("/api/v1/projects", json={}, headers=user.headers)


async def _conflict(http: httpx.AsyncClient, user: User, admin: User) -> httpx.Response:
    body = {"email": f"dup-{uuid.uuid4().hex[:8]}@example.test", "name": "Dup"}
    first = await http.post("/api/v1/admin/users", json=body, headers=admin.headers)
    assert first.status_code == 201, first.text
    return await http.post("/api/v1/admin/users", json=body, headers=admin.headers)


async def _precondition(http: httpx.AsyncClient, user: User, admin: User) -> httpx.Response:
    r = await http.post("/api/v1/projects", json={"name": "p"}, headers=user.headers)
    assert r.status_code == 201, r.text
    return await http.patch(
        f"/api/v1/projects/{r.json()['data']['id']}",
        json={"name": "q"},
        headers={**user.headers, "If-Match": '"42"'},
    )


async def _too_large(http: httpx.AsyncClient, user: User, admin: User) -> httpx.Response:
    return await http.post("/api/v1/projects", json={"name": "x" * 5000}, headers=user.headers)


async def _media_type(http: httpx.AsyncClient, user: User, admin: User) -> httpx.Response:
    return await http.post(
        "/api/v1/projects", content=b"name=x", headers={**user.headers, "content-type": "text/plain"}
    )


async def _invalid(http: httpx.AsyncClient, user: User, admin: User) -> httpx.Response:
    return await http.post("/api/v1/projects", json={"name": "", "owner_id": "x"}, headers=user.headers)


SCENARIOS: list[tuple[str, Scenario, int, str]] = [
    ("malformed json", _malformed, 400, "malformed_json"),
    ("bad query", _bad_query, 400, "invalid_query"),
    ("no token", _no_token, 401, "unauthorized"),
    ("bad token", _bad_token, 401, "unauthorized"),
    ("forbidden", _forbidden, 403, "forbidden"),
    ("missing item", _missing, 404, "not_found"),
    ("malformed id", _malformed_id, 404, "not_found"),
    ("unknown route", _no_route, 404, "not_found"),
    ("method", _no_method, 405, "method_not_allowed"),
    ("conflict", _conflict, 409, "conflict"),
    ("if-match", _precondition, 412, "precondition_failed"),
    ("too large", _too_large, 413, "payload_too_large"),
    ("media type", _media_type, 415, "unsupported_media_type"),
    ("validation", _invalid, 422, "validation_failed"),
]


@pytest.mark.parametrize(
    ("scenario", "status", "code"), [s[1:] for s in SCENARIOS], ids=[s[0] for s in SCENARIOS]
)
async def test_error_statuses_are_problems(
    prod: httpx.AsyncClient,
    make_user: Callable[..., Awaitable[User]],
    scenario: Scenario,
    status: int,
    code: str,
) -> None:
    # Fresh users: the production app allows each caller only 3 requests a minute.
    user, admin = await make_user(), await make_user("admin")
    assert_problem(await scenario(prod, user, admin), status, code)


async def test_401_says_how_to_authenticate(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/projects")
    assert r.headers["www-authenticate"] == "Bearer"
    r = await client.get("/api/v1/projects", headers={"Authorization": "Bearer nope"})
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert 'error="invalid_token"' in r.headers["www-authenticate"]


async def test_405_lists_the_allowed_methods(client: httpx.AsyncClient, alice: User) -> None:
    r = await client.put("/api/v1/projects", json={}, headers=alice.headers)
    assert_problem(r, 405, "method_not_allowed")
    assert {m.strip() for m in r.headers["allow"].split(",")} == {"GET", "POST"}
    r = await client.post(f"/api/v1/projects/{uuid.uuid4()}", json={}, headers=alice.headers)
    assert_problem(r, 405, "method_not_allowed")
    assert {m.strip() for m in r.headers["allow"].split(",")} == {"GET", "PATCH", "DELETE"}


@pytest.mark.parametrize("path", ["/health/live", "/health/ready", "/metrics", "/openapi.json", "/docs"])
async def test_405_on_operations_routes_is_a_problem_too(client: httpx.AsyncClient, path: str) -> None:
    r = await client.delete(path)
    assert_problem(r, 405, "method_not_allowed")
    assert "GET" in r.headers["allow"]


async def test_unknown_docs_asset_is_a_404_problem(client: httpx.AsyncClient) -> None:
    assert (await client.get("/docs/assets/swagger-ui.css")).status_code == 200
    for name in ("nope.js", "..%2F..%2Fetc%2Fpasswd", "%2e%2e"):
        assert_problem(await client.get(f"/docs/assets/{name}"), 404, "not_found")


async def test_422_names_each_bad_field(client: httpx.AsyncClient, alice: User) -> None:
    r = await client.post(
        "/api/v1/projects", json={"name": "", "description": 5, "owner_id": "x"}, headers=alice.headers
    )
    body = assert_problem(r, 422, "validation_failed")
    errors = body["errors"]
    assert isinstance(errors, list)
    assert {e["field"] for e in errors} == {"name", "description", "owner_id"}
    for e in errors:
        assert set(e) == {"field", "code", "message"}
        assert e["code"]
        assert e["message"]


async def test_429_is_a_problem_with_retry_after(
    prod: httpx.AsyncClient, make_user: Callable[..., Awaitable[User]]
) -> None:
    user = await make_user()
    for _ in range(3):
        assert (await prod.get("/api/v1/projects", headers=user.headers)).status_code == 200
    r = await prod.get("/api/v1/projects", headers=user.headers)
    assert_problem(r, 429, "rate_limited")
    assert int(r.headers["retry-after"]) >= 1
    assert r.headers["ratelimit-limit"] == "3"
    assert r.headers["ratelimit-remaining"] == "0"


async def test_503_when_the_database_is_unreachable(database_url: str, alice: User) -> None:
    # Port 1 on localhost refuses at once: nothing listens there.
    dead = database_url.replace("127.0.0.1:5432", "127.0.0.1:1")
    assert dead != database_url
    app = create_app(make_settings(dead, env="production"))
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as http:
            assert_problem(
                await http.get("/api/v1/projects", headers=alice.headers), 503, "service_unavailable"
            )
            ready = await http.get("/health/ready")
            assert ready.status_code == 503
            assert ready.headers["content-type"] == "application/problem+json"
    finally:
        await app.aclose()


async def test_504_when_the_request_takes_too_long(prod_probe: httpx.AsyncClient, alice: User) -> None:
    r = await prod_probe.post(
        "/api/v1/pipeline_probes", json={"mode": "sleep", "seconds": 3}, headers=alice.headers
    )
    assert_problem(r, 504, "timeout")


# ----- 500s: nothing internal in production, help in development ---------------------------------------


async def test_500_in_production_reveals_nothing(prod_probe: httpx.AsyncClient, alice: User) -> None:
    r = await prod_probe.post("/api/v1/pipeline_probes", json={"mode": "boom"}, headers=alice.headers)
    body = assert_problem(r, 500, "internal_error")
    assert "debug" not in body
    assert BOOM not in r.text
    assert "secret" not in r.text


async def test_500_in_production_is_logged_with_its_cause(
    prod_probe: httpx.AsyncClient, alice: User, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("ERROR", logger="rampart"):
        r = await prod_probe.post("/api/v1/pipeline_probes", json={"mode": "boom"}, headers=alice.headers)
    assert r.status_code == 500
    records = [rec for rec in caplog.records if rec.exc_info and BOOM in str(rec.exc_info[1])]
    assert records, "the cause of a 500 must reach the logs"
    assert getattr(records[0], "request_id", None) == r.headers["x-request-id"]


async def test_a_500_rolls_back_and_leaves_the_app_usable(
    prod_probe: httpx.AsyncClient, alice: User, database_url: str
) -> None:
    r = await prod_probe.post("/api/v1/pipeline_probes", json={"mode": "boom"}, headers=alice.headers)
    assert r.status_code == 500
    r = await prod_probe.post("/api/v1/pipeline_probes", json={"mode": "ok"}, headers=alice.headers)
    assert r.status_code == 201, r.text
    conn = await asyncpg.connect(database_url)
    try:
        modes = await conn.fetch("SELECT mode FROM pipeline_probes WHERE owner_id = $1", uuid.UUID(alice.id))
    finally:
        await conn.close()
    assert "boom" not in {m["mode"] for m in modes}


async def test_500_in_development_carries_debug(dev_probe: httpx.AsyncClient, alice: User) -> None:
    r = await dev_probe.post("/api/v1/pipeline_probes", json={"mode": "boom"}, headers=alice.headers)
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["code"] == "internal_error"
    assert body["request_id"] == r.headers["x-request-id"]
    assert "RuntimeError" in body["debug"]["exception"]
    assert BOOM in body["debug"]["exception"]
    assert any("before_create" in line for line in body["debug"]["traceback"])


async def test_client_errors_in_development_have_no_debug_without_a_cause(
    dev_probe: httpx.AsyncClient, alice: User
) -> None:
    r = await dev_probe.get(f"/api/v1/pipeline_probes/{uuid.uuid4()}", headers=alice.headers)
    assert r.status_code == 404
    assert "debug" not in r.json()
