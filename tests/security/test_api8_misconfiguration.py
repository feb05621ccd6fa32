"""API8:2023 Security misconfiguration.

Generated from the router: every route, and every kind of error, answers with the security headers and
without a `Server` or `X-Powered-By` header; no route answers TRACE or any method it does not declare.
CORS allows nothing by default and exactly the configured origins otherwise, never with credentials.
Production mode refuses a weak secret, and a real production server shows no internals in its errors.
The shipped deployment files run in production mode.

Cited, not repeated: HSTS over HTTPS only, CORS exposure of the rate-limit headers (tests/api/
test_pipeline.py); a 500 in production reveals nothing and one in development carries `debug`
(tests/api/test_problems.py).
"""

from __future__ import annotations

import base64
import re
import secrets
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pydantic
import pytest

from rampart.app import create_app
from rampart.config import DEFAULT_JWT_SECRET, Settings
from rampart.lib import secret_strength
from tests.conftest import User, make_settings
from tests.scale.servers import Server
from tests.security.surface import OPERATIONS, PLAIN, Operation

ROOT = Path(__file__).resolve().parents[2]
API_CSP = "default-src 'none'; frame-ancestors 'none'"
EVERY = sorted({(op.method, op.path) for op in OPERATIONS} | set(PLAIN))
PATHS = sorted({path for _, path in EVERY})
# Errors the pipeline makes before any route: they must be dressed the same way.
ERRORS = [
    ("GET", "/no/such/route", None, {}),
    ("DELETE", "/health/live", None, {}),
    ("POST", "/api/v1/projects", b"x" * 2_000_000, {"content-type": "application/json"}),
    ("POST", "/api/v1/projects", b"<xml/>", {"content-type": "application/xml"}),
    ("POST", "/api/v1/projects", b"{", {"content-type": "application/json"}),
    (
        "OPTIONS",
        "/api/v1/projects",
        None,
        {"Origin": "https://x.test", "Access-Control-Request-Method": "GET"},
    ),
]


def _assert_dressed(r: httpx.Response) -> None:
    where = (r.request.method, r.request.url.path, r.status_code)
    assert r.headers.get("x-content-type-options") == "nosniff", where
    assert r.headers.get("referrer-policy") == "no-referrer", where
    assert r.headers.get("x-frame-options") == "DENY", where
    assert r.headers.get("cross-origin-opener-policy") == "same-origin", where
    assert r.headers.get("x-request-id"), where
    for leaky in ("server", "x-powered-by", "x-aspnet-version", "via"):
        assert leaky not in r.headers, where
    csp = r.headers.get("content-security-policy", "")
    if r.request.url.path.startswith("/docs"):
        assert "frame-ancestors 'none'" in csp
        assert "unsafe-eval" not in csp
    else:
        assert csp == API_CSP, where


@pytest.mark.parametrize(("method", "path"), EVERY, ids=[f"{m} {p}" for m, p in EVERY])
async def test_every_route_answers_with_the_security_headers(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    url = Operation(method, path, "", False, None, False, "").url({"name": "swagger-ui.css"})
    r = await client.request(method, url, json={} if method in ("POST", "PATCH") else None)
    assert r.status_code < 500, r.text
    _assert_dressed(r)


@pytest.mark.parametrize(
    ("method", "path", "body", "headers"), ERRORS, ids=[e[1] + " " + e[0] for e in ERRORS]
)
async def test_errors_before_routing_are_dressed_too(
    client: httpx.AsyncClient, method: str, path: str, body: bytes | None, headers: dict[str, str]
) -> None:
    r = await client.request(method, path, content=body, headers=headers)
    assert r.status_code in (204, 400, 404, 405, 413, 415, 401), r.text
    _assert_dressed(r)


UNDECLARED = [
    (method, path)
    for path in PATHS
    for method in ("TRACE", "CONNECT", "PROPFIND", "PUT")
    if (method, path) not in EVERY
]


@pytest.mark.parametrize(("method", "path"), UNDECLARED, ids=[f"{m} {p}" for m, p in UNDECLARED])
async def test_undeclared_methods_are_405(client: httpx.AsyncClient, method: str, path: str) -> None:
    url = Operation(method, path, "", False, None, False, "").url({"name": "x"})
    r = await client.request(method, url, headers={"Max-Forwards": "0"})
    assert r.status_code == 405, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert "max-forwards" not in r.text.lower()  # TRACE echoes nothing


@pytest.mark.parametrize(
    "path",
    [
        "/docs/assets/..%2f..%2fpyproject.toml",
        "/docs/assets/%2e%2e%2f%2e%2e%2fpyproject.toml",
        "/docs/assets/....//....//etc/passwd",
        "/docs/assets/swagger-ui.css%00.js",
        "/docs/assets/%252e%252e%252fconfig.py",
        "/docs/../pyproject.toml",
    ],
)
async def test_docs_assets_reach_no_file_outside_the_list(client: httpx.AsyncClient, path: str) -> None:
    r = await client.get(path)
    assert r.status_code == 404
    assert "[project]" not in r.text
    assert "root:" not in r.text


# ----- CORS -----------------------------------------------------------------------------------------

ALLOWED = "https://app.example.com"


@pytest.fixture(scope="module")
async def cors(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    # "*" is configured too: it is compared like any origin, so it lets no real origin in.
    app = create_app(make_settings(database_url, cors_origins=[ALLOWED, "*"]))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        yield http
    await app.aclose()


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",
        "https://app.example.com.evil.example",
        "https://evilapp.example.com",
        "https://evil.example/https://app.example.com",
        "http://app.example.com",
        "https://app.example.com:8443",
        "https://APP.example.com",
        "null",
        "",
    ],
)
async def test_only_the_configured_origin_is_allowed_and_star_is_no_wildcard(
    cors: httpx.AsyncClient, origin: str
) -> None:
    for r in (
        await cors.get("/api/v1/projects", headers={"Origin": origin}),
        await cors.options(
            "/api/v1/projects", headers={"Origin": origin, "Access-Control-Request-Method": "DELETE"}
        ),
    ):
        assert not any(h.startswith("access-control-") for h in r.headers), (origin, dict(r.headers))


async def test_the_configured_origin_gets_no_credentials(cors: httpx.AsyncClient) -> None:
    r = await cors.options(
        "/api/v1/projects", headers={"Origin": ALLOWED, "Access-Control-Request-Method": "DELETE"}
    )
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == ALLOWED
    assert "access-control-allow-credentials" not in r.headers
    r = await cors.get("/api/v1/projects", headers={"Origin": ALLOWED})
    assert r.headers["access-control-allow-origin"] == ALLOWED
    assert "access-control-allow-credentials" not in r.headers


@pytest.mark.parametrize(("method", "path"), EVERY, ids=[f"{m} {p}" for m, p in EVERY])
async def test_no_route_allows_a_foreign_origin_by_default(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    url = Operation(method, path, "", False, None, False, "").url({"name": "swagger-ui.css"})
    r = await client.request(method, url, headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers


# ----- media types -----------------------------------------------------------------------------------

# Issue 13, finding 9: any `+json` type (and any parameter) was taken as JSON. Only `application/json`,
# with at most `charset=utf-8`, is documented (API.md); a `+json` type promises semantics the API lacks.
ACCEPTED_TYPES = [
    "application/json",
    "Application/JSON",
    "application/json; charset=utf-8",
    "application/json;charset=UTF-8",
    'application/json; charset="utf-8"',
]
REFUSED_TYPES = [
    "application/merge-patch+json",
    "application/ld+json",
    "application/vnd.api+json",
    "application/problem+json",
    "application/json-patch+json",
    "application/json; charset=latin-1",
    "application/json; charset=utf-16",
    "application/json; profile=x",
    "application/json; charset=utf-8; boundary=x",
    "application/jsonx",
    "text/json",
]


@pytest.mark.parametrize("ctype", ACCEPTED_TYPES)
async def test_the_documented_json_types_are_accepted(
    client: httpx.AsyncClient, alice: User, ctype: str
) -> None:
    r = await client.post(
        "/api/v1/projects", content=b'{"name": "typed"}', headers={**alice.headers, "content-type": ctype}
    )
    assert r.status_code == 201, r.text


@pytest.mark.parametrize("ctype", REFUSED_TYPES)
async def test_other_json_like_types_are_415(client: httpx.AsyncClient, alice: User, ctype: str) -> None:
    r = await client.post(
        "/api/v1/projects", content=b'{"name": "typed"}', headers={**alice.headers, "content-type": ctype}
    )
    assert r.status_code == 415, ctype
    assert r.json()["code"] == "unsupported_media_type"
    _assert_dressed(r)


# ----- production ---------------------------------------------------------------------------------------


# Issue 13, finding 7: only the length was checked, so 64 × "a" or a phrase of common words passed.
WEAK_SECRETS = {
    "the development default": DEFAULT_JWT_SECRET,
    "short": "short-secret",
    "31 characters": "x" * 31,
    "one letter 64 times": "a" * 64,
    "a repeated word": "changeme-changeme-changeme-changeme-123",
    "a phrase of common words": "this-is-my-super-secret-jwt-signing-key-2024",
    "words and a name": "my-company-name-jwt-signing-key-for-production",
    "sequences": "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJ",
    "keyboard rows": "qwertyuiopasdfghjklzxcvbnm1234567890!@#$",
    "a padded word": "s3cr3t-" + "k" * 40,
    "128 random bits in hex (RFC 7518 wants 256 for HS256)": "0ac2b1ffb56762549d7340ea095d75ee",
}
STRONG_SECRETS = {
    "rampart secrets generate": secret_strength.generate(),
    "token_urlsafe(32)": secrets.token_urlsafe(32),
    "openssl rand -hex 32": secrets.token_hex(32),
    "openssl rand -base64 32": base64.b64encode(secrets.token_bytes(32)).decode(),
    "longer than the estimated part": secrets.token_urlsafe(120),
}


@pytest.mark.parametrize("secret", list(WEAK_SECRETS.values()), ids=list(WEAK_SECRETS))
def test_production_refuses_a_weak_secret(secret: str) -> None:
    with pytest.raises(pydantic.ValidationError, match="RAMPART_JWT_SECRET") as refused:
        Settings(_env_file=None, env="production", jwt_secret=secret)  # type: ignore[call-arg]
    message = str(refused.value)
    assert "rampart secrets generate" in message  # says how to make a good one
    assert secret not in message  # and never repeats the secret
    Settings(_env_file=None, env="test", jwt_secret=secret)  # type: ignore[call-arg] # not outside production


@pytest.mark.parametrize("secret", list(STRONG_SECRETS.values()), ids=list(STRONG_SECRETS))
def test_production_takes_a_random_secret(secret: str) -> None:
    Settings(_env_file=None, env="production", jwt_secret=secret)  # type: ignore[call-arg]


def test_production_is_the_mode_of_the_shipped_deployments() -> None:
    assert re.search(r"^ENV RAMPART_ENV=production\b", (ROOT / "deploy/Dockerfile").read_text(), re.M)
    assert re.search(r"^\s+RAMPART_ENV: production$", (ROOT / "deploy/compose.yaml").read_text(), re.M)
    assert "RAMPART_ENV=production" in (ROOT / "deploy/rampart.service").read_text()


PRODUCTION_ERRORS = [
    ("GET", "/api/v1/projects", None, {}),
    ("GET", "/api/v1/projects", None, {"Authorization": "Bearer x.y.z"}),
    ("GET", "/nope", None, {}),
    ("DELETE", "/metrics", None, {}),
    ("POST", "/api/v1/projects", b'{"name": ', {"content-type": "application/json"}),
    ("POST", "/api/v1/projects", b"\xff\xfe{", {"content-type": "application/json"}),
    ("POST", "/api/v1/projects", b"a=b", {"content-type": "application/x-www-form-urlencoded"}),
    ("POST", "/api/v1/auth/refresh", b'{"refresh_token": 5}', {"content-type": "application/json"}),
    ("POST", "/api/v1/auth/refresh", b"[" * 5000 + b"]" * 5000, {"content-type": "application/json"}),
    ("GET", "/api/v1/auth/google/login", None, {}),
]
INTERNALS = re.compile(r"Traceback|File \"|\.py\b|asyncpg|orjson|starlette|uvicorn|SELECT |line \d+", re.I)


@pytest.mark.parametrize(
    ("method", "path", "body", "headers"),
    PRODUCTION_ERRORS,
    ids=[f"{e[0]} {e[1]} {i}" for i, e in enumerate(PRODUCTION_ERRORS)],
)
def test_a_production_server_shows_no_internals(
    production_server: Server, method: str, path: str, body: bytes | None, headers: dict[str, str]
) -> None:
    with httpx.Client(base_url=production_server.url, timeout=10) as http:
        r = http.request(method, path, content=body, headers=headers)
    assert 400 <= r.status_code < 500, r.text
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert "debug" not in problem
    assert not INTERNALS.search(r.text), r.text
    assert "server" not in r.headers


# Issue 13, finding 9: what uvicorn wrote itself for requests the application never sees had neither the
# security headers nor a request id (text/plain "Invalid HTTP request received.").
UNPARSEABLE = {
    "bad request line": b"GARBAGE / HTTP/9.9\r\n\r\n",
    "bad content-length": b"POST /api/v1/projects HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    "two content-lengths": (
        b"POST /api/v1/projects HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello"
    ),
    "content-length and chunked": (
        b"POST /api/v1/projects HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "space in a header name": b"GET /health/live HTTP/1.1\r\nHost: x\r\nBad Name: x\r\n\r\n",
    "control character in the path": b"GET /he\x01alth HTTP/1.1\r\nHost: x\r\n\r\n",
    "head over 64 KiB": b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Big: "
    + b"a" * 70_000,  # and more to come
}


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65_536):  # the server closes after answering
            answer += chunk
    return answer


@pytest.mark.parametrize("request_bytes", list(UNPARSEABLE.values()), ids=list(UNPARSEABLE))
def test_answers_written_below_the_application_are_dressed(
    production_server: Server, request_bytes: bytes
) -> None:
    answer = _raw(production_server.port, request_bytes)
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    assert status_line in ("HTTP/1.1 400 Bad Request", "HTTP/1.1 431 Request Header Fields Too Large"), answer
    assert headers.get("x-content-type-options") == "nosniff"
    assert headers.get("referrer-policy") == "no-referrer"
    assert headers.get("x-frame-options") == "DENY"
    assert headers.get("cross-origin-opener-policy") == "same-origin"
    assert headers.get("content-security-policy") == API_CSP
    assert headers.get("content-type") == "application/problem+json"
    assert headers.get("connection") == "close"
    assert "server" not in headers
    problem = orjson.loads(body)
    assert problem["status"] == int(status_line.split()[1])
    assert problem["code"] in ("malformed_request", "header_too_large")
    request_id = headers["x-request-id"]
    assert problem["request_id"] == request_id
    assert not INTERNALS.search(body.decode())
    deadline = time.monotonic() + 5  # and the log line carries the same id
    while request_id not in production_server.output():
        assert time.monotonic() < deadline, production_server.output()[-2000:]
        time.sleep(0.05)


def test_a_malformed_request_gets_no_version_banner(production_server: Server) -> None:
    with socket.create_connection(("127.0.0.1", production_server.port), timeout=10) as sock:
        sock.sendall(b"GARBAGE / HTTP/9.9\r\n\r\n")
        answer = sock.recv(65_536)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"uvicorn" not in answer.lower()
    assert b"server:" not in answer.lower()
