"""The outer pipeline (API.md "Conventions"): request ids, security headers, CORS, body size and type."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from rampart.app import Rampart, create_app
from tests.apps.slow import serve
from tests.conftest import User, make_settings

API_CSP = "default-src 'none'; frame-ancestors 'none'"
ORIGIN = "https://app.example.com"


@pytest.fixture(scope="module")
async def small_app(database_url: str) -> AsyncIterator[Rampart]:
    """The demo app with a 2 KiB body limit and one CORS origin."""
    app = create_app(make_settings(database_url, body_limit=2048, cors_origins=[ORIGIN]))
    yield app
    await app.aclose()


@pytest.fixture
async def small(small_app: Rampart) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=small_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@pytest.fixture(scope="module")
async def probe(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The test-only probe app (its hook can raise), in production mode."""
    settings = make_settings(
        database_url, app="tests.apps.slow:declare", env="production", request_timeout=0.3
    )
    async with serve(settings) as (_, client):
        yield client


async def _raw(app: Rampart, headers: list[tuple[bytes, bytes]]) -> tuple[int, dict[bytes, bytes]]:
    """One GET /health/live through the raw ASGI interface, for header values httpx refuses to send."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/health/live",
        "raw_path": b"/health/live",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
    }
    await app(scope, receive, send)
    return sent[0]["status"], dict(sent[0]["headers"])


# ----- X-Request-ID -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "incoming",
    ["abc", "req-1.2_3", "A" * 128, str(uuid.uuid4())],
)
async def test_valid_request_id_is_echoed(client: httpx.AsyncClient, incoming: str) -> None:
    r = await client.get("/health/live", headers={"X-Request-ID": incoming})
    assert r.status_code == 200
    assert r.headers["x-request-id"] == incoming


@pytest.mark.parametrize(
    "incoming",
    ["A" * 129, "has space", "semi;colon", "../../etc", "<script>", "ünïcode", "a/b", "a,b"],
)
async def test_invalid_request_id_is_replaced(client: httpx.AsyncClient, incoming: str) -> None:
    r = await client.get("/health/live", headers={"X-Request-ID": incoming.encode()})
    new = r.headers["x-request-id"]
    assert new != incoming
    assert 1 <= len(new) <= 128
    assert all(c.isalnum() or c in "._-" for c in new)


async def test_request_id_with_trailing_newline_is_replaced(app: Rampart) -> None:
    # `$` in a regex also matches before a final newline; the id must be the whole value.
    for value in (b"abc\n", b"A" * 128 + b"\n", b"abc\r\nSet-Cookie: x=1"):
        status, headers = await _raw(app, [(b"x-request-id", value)])
        assert status == 200
        assert headers[b"x-request-id"] != value
        assert b"\n" not in headers[b"x-request-id"]


async def test_missing_request_id_gets_a_fresh_one_per_request(client: httpx.AsyncClient) -> None:
    ids = {(await client.get("/health/live")).headers["x-request-id"] for _ in range(5)}
    assert len(ids) == 5


async def _every_kind_of_response(
    client: httpx.AsyncClient, small: httpx.AsyncClient, probe: httpx.AsyncClient, user: User
) -> list[httpx.Response]:
    missing = uuid.uuid4()
    return [
        await client.get("/health/live"),
        await client.get("/metrics"),
        await client.get("/openapi.json"),
        await client.get("/docs"),
        await client.get("/api/v1/projects", headers=user.headers),
        await client.post("/api/v1/projects", json={"name": "hdr"}, headers=user.headers),
        await client.get("/api/v1/projects"),  # 401
        await client.get(f"/api/v1/projects/{missing}", headers=user.headers),  # 404
        await client.get("/no/such/route"),  # 404
        await client.put("/api/v1/projects", json={}, headers=user.headers),  # 405
        await client.post("/health/live"),  # 405 on a plain route
        await small.post("/api/v1/projects", content=b"x" * 4096, headers=user.headers),  # 413
        await client.post("/api/v1/projects", content=b"{}", headers={"content-type": "text/plain"}),  # 415
        await probe.post("/api/v1/pipeline_probes", json={"mode": "boom"}, headers=user.headers),  # 500
        await small.options(
            "/api/v1/projects",
            headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"},
        ),  # preflight
    ]


async def test_every_response_has_a_request_id_and_problem_bodies_repeat_it(
    client: httpx.AsyncClient, small: httpx.AsyncClient, probe: httpx.AsyncClient, alice: User
) -> None:
    responses = await _every_kind_of_response(client, small, probe, alice)
    statuses = {r.status_code for r in responses}
    assert {200, 201, 204, 401, 404, 405, 413, 415, 500} <= statuses
    for r in responses:
        rid = r.headers.get("x-request-id")
        assert rid, (r.request.method, r.request.url, r.status_code)
        if r.status_code >= 400:
            assert r.headers["content-type"] == "application/problem+json", (r.request.url, r.status_code)
            assert r.json()["request_id"] == rid


async def test_incoming_request_id_is_echoed_in_problem_body(client: httpx.AsyncClient) -> None:
    r = await client.get("/nope", headers={"X-Request-ID": "trace-42"})
    assert r.status_code == 404
    assert r.headers["x-request-id"] == "trace-42"
    assert r.json()["request_id"] == "trace-42"


# ----- security headers -------------------------------------------------------------------------------


async def test_security_headers_on_every_response(
    client: httpx.AsyncClient, small: httpx.AsyncClient, probe: httpx.AsyncClient, alice: User
) -> None:
    for r in await _every_kind_of_response(client, small, probe, alice):
        where = (r.request.method, r.request.url.path, r.status_code)
        assert r.headers.get("x-content-type-options") == "nosniff", where
        assert r.headers.get("referrer-policy") == "no-referrer", where
        assert "server" not in r.headers, where
        assert "x-powered-by" not in r.headers, where
        assert "strict-transport-security" not in r.headers, where  # plain http
        csp = r.headers.get("content-security-policy")
        if r.request.url.path == "/docs":
            assert csp is not None
            assert "frame-ancestors 'none'" in csp
        else:
            assert csp == API_CSP, where


async def test_hsts_only_over_https(app: Rampart, alice: User) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as https:
        for r in (
            await https.get("/health/live"),
            await https.get("/api/v1/projects", headers=alice.headers),
            await https.get("/nope"),
        ):
            hsts = r.headers.get("strict-transport-security", "")
            assert hsts.startswith("max-age="), r.request.url
            assert int(hsts.split(";")[0].removeprefix("max-age=")) >= 15_552_000  # at least 180 days


# ----- CORS -------------------------------------------------------------------------------------------


async def test_no_cors_without_configured_origins(client: httpx.AsyncClient, alice: User) -> None:
    r = await client.get("/api/v1/projects", headers={**alice.headers, "Origin": ORIGIN})
    assert r.status_code == 200
    assert "access-control-allow-origin" not in r.headers
    r = await client.options(
        "/api/v1/projects", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"}
    )
    assert r.status_code == 204
    assert not any(h.startswith("access-control-allow") for h in r.headers)


async def test_cors_allows_the_configured_origin_and_exposes_headers(
    small: httpx.AsyncClient, alice: User
) -> None:
    r = await small.get("/api/v1/projects", headers={**alice.headers, "Origin": ORIGIN})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert "origin" in r.headers.get("vary", "").lower()
    exposed = {h.strip().lower() for h in r.headers["access-control-expose-headers"].split(",")}
    assert {"x-request-id", "etag", "location", "retry-after"} <= exposed
    assert {"ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"} <= exposed
    # also on errors, so a browser client can read the problem
    r = await small.get("/api/v1/projects", headers={"Origin": ORIGIN})
    assert r.status_code == 401
    assert r.headers["access-control-allow-origin"] == ORIGIN


@pytest.mark.parametrize(
    "origin",
    ["https://evil.example.com", "https://app.example.com.evil.com", "null", "http://app.example.com"],
)
async def test_cors_refuses_other_origins(small: httpx.AsyncClient, alice: User, origin: str) -> None:
    r = await small.get("/api/v1/projects", headers={**alice.headers, "Origin": origin})
    assert r.status_code == 200
    assert "access-control-allow-origin" not in r.headers
    r = await small.options(
        "/api/v1/projects", headers={"Origin": origin, "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in r.headers
    assert "access-control-allow-methods" not in r.headers


async def test_preflight_is_answered_without_auth(small: httpx.AsyncClient) -> None:
    r = await small.options(
        "/api/v1/projects",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert r.status_code == 204
    assert r.content == b""
    assert r.headers["access-control-allow-origin"] == ORIGIN
    methods = {m.strip() for m in r.headers["access-control-allow-methods"].split(",")}
    assert {"GET", "POST", "PATCH", "DELETE"} <= methods
    allowed = {h.strip().lower() for h in r.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "if-match", "if-none-match"} <= allowed
    assert int(r.headers["access-control-max-age"]) > 0
    assert r.headers["x-request-id"]
    assert "www-authenticate" not in r.headers


# ----- body size and type -----------------------------------------------------------------------------


async def test_body_with_a_non_json_content_type_is_415(client: httpx.AsyncClient, alice: User) -> None:
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        r = await client.post(
            "/api/v1/projects", content=b'{"name": "x"}', headers={**alice.headers, "content-type": ctype}
        )
        assert r.status_code == 415, ctype
        assert r.json()["code"] == "unsupported_media_type"


async def test_body_without_a_content_type_is_415(client: httpx.AsyncClient, alice: User) -> None:
    r = await client.post("/api/v1/projects", content=b'{"name": "x"}', headers=alice.headers)
    assert "content-type" not in r.request.headers
    assert r.status_code == 415
    assert r.json()["code"] == "unsupported_media_type"


async def test_json_with_charset_is_accepted(client: httpx.AsyncClient, alice: User) -> None:
    r = await client.post(
        "/api/v1/projects",
        content=b'{"name": "charset"}',
        headers={**alice.headers, "content-type": "application/json; charset=utf-8"},
    )
    assert r.status_code == 201, r.text


async def test_body_over_the_limit_with_content_length_is_413(small: httpx.AsyncClient, alice: User) -> None:
    body = orjson.dumps({"name": "big", "description": "x" * 3000})
    r = await small.post(
        "/api/v1/projects", content=body, headers={**alice.headers, "content-type": "application/json"}
    )
    assert r.request.headers["content-length"] == str(len(body))
    assert r.status_code == 413
    assert r.json()["code"] == "payload_too_large"
    # just under the limit is fine (the demo app takes a 1,900-char description)
    r = await small.post(
        "/api/v1/projects", json={"name": "ok", "description": "x" * 1900}, headers=alice.headers
    )
    assert r.status_code == 201, r.text


async def test_body_over_the_limit_chunked_is_413(small: httpx.AsyncClient, alice: User) -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'{"name": "big", "description": "'
        for _ in range(1000):  # 1 MB in total, far over 2 KiB
            sent += 1
            yield b"x" * 1000
        yield b'"}'

    r = await small.post(
        "/api/v1/projects", content=chunks(), headers={**alice.headers, "content-type": "application/json"}
    )
    assert r.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in r.request.headers
    assert r.status_code == 413
    assert r.json()["code"] == "payload_too_large"


async def test_chunked_body_under_the_limit_is_read(small: httpx.AsyncClient, alice: User) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": '
        yield b'"chunked"}'

    r = await small.post(
        "/api/v1/projects", content=chunks(), headers={**alice.headers, "content-type": "application/json"}
    )
    assert r.status_code == 201, r.text
    assert r.json()["data"]["name"] == "chunked"


async def test_slow_upload_is_cut_off_by_the_request_timeout(database_url: str, alice: User) -> None:
    settings = make_settings(database_url, request_timeout=0.5)
    app = create_app(settings)

    async def trickle() -> AsyncIterator[bytes]:
        yield b'{"name": '
        await asyncio.sleep(5)
        yield b'"late"}'

    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as http:
            started = time.perf_counter()
            r = await http.post(
                "/api/v1/projects",
                content=trickle(),
                headers={**alice.headers, "content-type": "application/json"},
            )
            elapsed = time.perf_counter() - started
    finally:
        await app.aclose()
    assert r.status_code == 504
    assert r.json()["code"] == "timeout"
    assert elapsed < 2


@pytest.mark.parametrize(
    "body",
    [b"{", b'{"name": }', b"{'name': 'x'}", b'{"name": "x"} trailing', b"\xff\xfe", b"NaN", b"[1,]"],
)
async def test_malformed_json_is_400(client: httpx.AsyncClient, alice: User, body: bytes) -> None:
    r = await client.post(
        "/api/v1/projects", content=body, headers={**alice.headers, "content-type": "application/json"}
    )
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "malformed_json"
    assert r.headers["content-type"] == "application/problem+json"


async def test_empty_json_body_is_400(client: httpx.AsyncClient, alice: User) -> None:
    r = await client.post(
        "/api/v1/projects", content=b"", headers={**alice.headers, "content-type": "application/json"}
    )
    assert r.status_code == 400
    assert r.json()["code"] == "malformed_json"


@pytest.mark.parametrize("opener", [b"[", b'{"a":'])
async def test_deeply_nested_json_is_a_client_error(
    client: httpx.AsyncClient, alice: User, opener: bytes
) -> None:
    closer = b"]" if opener == b"[" else b"}"
    body = opener * 10_000 + b"1" + closer * 10_000
    for path in ("/api/v1/projects", "/api/v1/tasks"):
        r = await client.post(
            path, content=body, headers={**alice.headers, "content-type": "application/json"}
        )
        assert r.status_code in (400, 422), r.text
        assert r.headers["content-type"] == "application/problem+json"


async def test_get_ignores_the_body_checks(client: httpx.AsyncClient, alice: User) -> None:
    # A body on GET is not read, so it neither needs JSON nor counts against the limit.
    r = await client.request(
        "GET", "/api/v1/projects", content=b"hello", headers={**alice.headers, "content-type": "text/plain"}
    )
    assert r.status_code == 200
