"""Rate limits over HTTP (API.md "Rate limits and timeouts"), on the memory and on the Redis backend.

Each test uses fresh users (their own limiter keys) or a random client IP, so budgets never carry over
between tests or concurrent runs; Redis keys of the random IPs are removed afterwards.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import redis.asyncio

from rampart.api.pipeline import Pipeline
from rampart.api.router import Limits, build_router
from rampart.app import Rampart, create_app
from rampart.errors import RateLimited
from rampart.lib.ratelimit import MemoryRateLimiter, RateLimiter, RedisRateLimiter
from rampart.lib.rates import parse_rate
from rampart.resources.endpoints import Call, RouteSpec, json_response
from tests.conftest import REDIS_URL, User, make_settings

MakeUser = Callable[..., Awaitable[User]]
BACKENDS = ["memory", "redis"]


def _settings(database_url: str, backend: str, **overrides: Any) -> Any:
    if backend == "redis":
        overrides["redis_url"] = REDIS_URL
    return make_settings(database_url, **overrides)


@asynccontextmanager
async def _clients(app: Rampart, n: int = 1, ip: str = "127.0.0.1") -> AsyncIterator[list[httpx.AsyncClient]]:
    clients = [
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(ip, 40000 + i)), base_url="http://t")
        for i in range(n)
    ]
    try:
        yield clients
    finally:
        for c in clients:
            await c.aclose()


@pytest.fixture(params=BACKENDS)
async def limited(request: pytest.FixtureRequest, database_url: str) -> AsyncIterator[Rampart]:
    """The demo app allowing 5 requests a minute per caller, on each backend."""
    app = create_app(_settings(database_url, request.param, rate_limit="5/minute"))
    yield app
    await app.aclose()


def _limit_headers(r: httpx.Response) -> tuple[int, int, int]:
    return (
        int(r.headers["ratelimit-limit"]),
        int(r.headers["ratelimit-remaining"]),
        int(r.headers["ratelimit-reset"]),
    )


async def test_limited_responses_carry_ratelimit_headers(limited: Rampart, make_user: MakeUser) -> None:
    user = await make_user()
    async with _clients(limited) as (http,):
        remaining = []
        for _ in range(5):
            r = await http.get("/api/v1/projects", headers=user.headers)
            assert r.status_code == 200, r.text
            limit, left, reset = _limit_headers(r)
            assert limit == 5
            assert 0 < reset <= 60
            remaining.append(left)
        assert remaining == [4, 3, 2, 1, 0]


async def test_over_the_limit_is_429_with_retry_after(limited: Rampart, make_user: MakeUser) -> None:
    user = await make_user()
    async with _clients(limited) as (http,):
        for _ in range(5):
            assert (await http.get("/api/v1/projects", headers=user.headers)).status_code == 200
        started = time.perf_counter()
        r = await http.get("/api/v1/projects", headers=user.headers)
    assert time.perf_counter() - started < 1  # refused at once, not queued
    assert r.status_code == 429
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["code"] == "rate_limited"
    assert body["request_id"] == r.headers["x-request-id"]
    # 5 a minute: the next one is allowed after 12 s
    assert 10 <= int(r.headers["retry-after"]) <= 12
    limit, left, reset = _limit_headers(r)
    assert (limit, left) == (5, 0)
    assert 0 < reset <= 60


async def test_error_responses_of_limited_routes_carry_ratelimit_headers(
    limited: Rampart, make_user: MakeUser
) -> None:
    # A 404 or 422 still spent one request of the budget: the client must see what is left.
    user = await make_user()
    async with _clients(limited) as (http,):
        r = await http.get(f"/api/v1/projects/{uuid.uuid4()}", headers=user.headers)
        assert r.status_code == 404
        assert _limit_headers(r)[:2] == (5, 4)
        r = await http.post("/api/v1/projects", json={"name": ""}, headers=user.headers)
        assert r.status_code == 422
        assert _limit_headers(r)[:2] == (5, 3)
        r = await http.get("/api/v1/projects", headers=user.headers)
        assert _limit_headers(r)[:2] == (5, 2)


async def test_each_user_has_their_own_budget(limited: Rampart, make_user: MakeUser) -> None:
    first, second = await make_user(), await make_user()
    async with _clients(limited) as (http,):
        for _ in range(5):
            assert (await http.get("/api/v1/projects", headers=first.headers)).status_code == 200
        assert (await http.get("/api/v1/projects", headers=first.headers)).status_code == 429
        r = await http.get("/api/v1/projects", headers=second.headers)
        assert r.status_code == 200
        assert r.headers["ratelimit-remaining"] == "4"


async def test_a_user_is_limited_across_client_addresses(limited: Rampart, make_user: MakeUser) -> None:
    user = await make_user()
    async with _clients(limited, ip="10.9.8.7") as (a,), _clients(limited, ip="10.9.8.6") as (b,):
        for i in range(5):
            assert (
                await (a if i % 2 else b).get("/api/v1/projects", headers=user.headers)
            ).status_code == 200
        assert (await a.get("/api/v1/projects", headers=user.headers)).status_code == 429
        assert (await b.get("/api/v1/projects", headers=user.headers)).status_code == 429


async def test_unlimited_routes_have_no_ratelimit_headers(limited: Rampart) -> None:
    async with _clients(limited) as (http,):
        for path in ("/health/live", "/metrics", "/openapi.json"):
            r = await http.get(path)
            assert r.status_code == 200
            assert "ratelimit-limit" not in r.headers


async def test_two_instances_sharing_redis_share_the_budget(database_url: str, make_user: MakeUser) -> None:
    user = await make_user()
    apps = [create_app(_settings(database_url, "redis", rate_limit="5/minute")) for _ in range(2)]
    try:
        async with _clients(apps[0]) as (a,), _clients(apps[1]) as (b,):
            statuses = [
                (await (a if i % 2 else b).get("/api/v1/projects", headers=user.headers)).status_code
                for i in range(5)
            ]
            assert statuses == [200] * 5
            assert (await a.get("/api/v1/projects", headers=user.headers)).status_code == 429
            assert (await b.get("/api/v1/projects", headers=user.headers)).status_code == 429
    finally:
        for app in apps:
            await app.aclose()


async def test_memory_instances_do_not_share(database_url: str, make_user: MakeUser) -> None:
    # The contrast that shows the Redis test above can fail: per-process limiters count separately.
    user = await make_user()
    apps = [create_app(_settings(database_url, "memory", rate_limit="3/minute")) for _ in range(2)]
    try:
        async with _clients(apps[0]) as (a,), _clients(apps[1]) as (b,):
            for http in (a, b):
                for _ in range(3):
                    assert (await http.get("/api/v1/projects", headers=user.headers)).status_code == 200
                assert (await http.get("/api/v1/projects", headers=user.headers)).status_code == 429
    finally:
        for app in apps:
            await app.aclose()


async def test_429s_are_counted_in_metrics(limited: Rampart, make_user: MakeUser) -> None:
    user = await make_user()
    async with _clients(limited) as (http,):
        for _ in range(7):
            await http.get("/api/v1/projects", headers=user.headers)
        text = (await http.get("/metrics")).text
    assert 'rampart_rate_limit_rejections_total{route_class="api"} 2.0' in text
    assert 'route="/api/v1/projects",status="429"} 2.0' in text


# ----- anonymous callers: per client IP ---------------------------------------------------------------


@pytest.fixture
async def redis_client() -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


@pytest.fixture
async def fresh_ip(redis_client: redis.asyncio.Redis) -> AsyncIterator[Callable[[], str]]:
    """Random client IPs no other test uses; their Redis keys are removed afterwards."""
    used: list[str] = []

    def make() -> str:
        used.append(f"10.{random.randint(0, 255)}.{random.randint(0, 255)}.{random.randint(1, 254)}")
        return used[-1]

    yield make
    keys = [f"rampart:rl:api:ip:{ip}" for ip in used]
    if keys:
        await redis_client.unlink(*keys)


@pytest.fixture(params=BACKENDS)
def make_public_app(
    request: pytest.FixtureRequest, app: Rampart, redis_client: redis.asyncio.Redis
) -> Callable[[], Pipeline]:
    """Builds apps with one public route limited to 3 a minute on each backend."""

    async def ping(call: Call) -> Any:
        return json_response({"data": {"pong": True}})

    spec = RouteSpec("GET", "/api/v1/ping", ping, "ping", public=True)

    def build() -> Pipeline:
        limiter: RateLimiter = (
            RedisRateLimiter(redis_client) if request.param == "redis" else MemoryRateLimiter()
        )
        router = build_router(
            [spec],
            auth=app.services.authenticator,
            limits=Limits(limiter, {"api": parse_rate("3/minute")}),
        )
        return Pipeline(
            router, cors_origins=(), body_limit=1024, timeout=5, debug=False, access_log_enabled=False
        )

    return build


async def test_anonymous_callers_are_limited_per_ip(
    make_public_app: Callable[[], Pipeline], fresh_ip: Callable[[], str]
) -> None:
    app = make_public_app()
    ip_a, ip_b = fresh_ip(), fresh_ip()
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(ip_a, 1)), base_url="http://t") as a,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=(ip_a, 2)), base_url="http://t"
        ) as a2,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(ip_b, 1)), base_url="http://t") as b,
    ):
        r = await a.get("/api/v1/ping")
        assert r.status_code == 200
        assert _limit_headers(r)[:2] == (3, 2)
        assert (await a2.get("/api/v1/ping")).status_code == 200  # same IP, other port: same budget
        assert (await a.get("/api/v1/ping")).status_code == 200
        r = await a2.get("/api/v1/ping")
        assert r.status_code == 429
        assert int(r.headers["retry-after"]) >= 1
        r = await b.get("/api/v1/ping")
        assert r.status_code == 200
        assert r.headers["ratelimit-remaining"] == "2"


async def test_limiter_unavailable_is_503_not_500(database_url: str, make_user: MakeUser) -> None:
    user = await make_user()
    app = create_app(make_settings(database_url, redis_url="redis://127.0.0.1:1/0", rate_limit="5/minute"))
    try:
        async with _clients(app) as (http,):
            started = time.perf_counter()
            r = await http.get("/api/v1/projects", headers=user.headers)
            elapsed = time.perf_counter() - started
    finally:
        await app.aclose()
    assert r.status_code == 503, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "service_unavailable"
    assert "6379" not in r.text
    assert "redis" not in r.text.lower()
    assert elapsed < 3


async def test_hanging_redis_gives_quick_503s(database_url: str, make_user: MakeUser) -> None:
    # A Redis that accepts connections but never answers must not hold requests to the request timeout.
    held: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await reader.read()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    user = await make_user()
    app = create_app(make_settings(database_url, redis_url=f"redis://127.0.0.1:{port}/0", request_timeout=5))
    try:
        async with _clients(app) as (http,):
            started = time.perf_counter()
            r = await http.get("/api/v1/projects", headers=user.headers)
            assert time.perf_counter() - started < 2.5
            assert r.status_code == 503, r.text
            started = time.perf_counter()
            ready = await http.get("/health/ready")
            assert time.perf_counter() - started < 2.5
            assert ready.status_code == 503
            assert [e["field"] for e in ready.json()["errors"]] == ["redis"]
    finally:
        await app.aclose()
        for writer in held:
            writer.transport.abort()
        server.close()
        await server.wait_closed()


def test_rate_limited_error_defaults_are_safe() -> None:
    # A RateLimited raised without limit details still maps to a 429 with a positive Retry-After.
    from rampart.api.problems import problem

    status, headers, _ = problem(RateLimited("slow down", retry_after=0.2), request_id="r", debug=False)
    assert status == 429
    assert dict(headers)[b"retry-after"] == b"1"


async def test_failed_authentication_is_limited_per_ip(limited: Rampart) -> None:
    """Token guessing spends the client IP's budget: after it, even a 401 becomes a 429."""
    ip = f"10.{random.randint(0, 255)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
    async with _clients(limited, ip=ip) as (http,):
        statuses = []
        for _ in range(7):
            r = await http.get("/api/v1/projects", headers={"Authorization": "Bearer guessed.token.value"})
            statuses.append(r.status_code)
        assert statuses == [401] * 5 + [429] * 2
        assert "retry-after" in r.headers
