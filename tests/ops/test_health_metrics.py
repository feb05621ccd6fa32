"""Health probes and Prometheus metrics (API.md "Operations")."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.routing import Router

from rampart.api.pipeline import Pipeline
from rampart.app import Rampart, create_app
from rampart.ops.health import health_routes
from tests.apps.slow import serve
from tests.conftest import ADMIN_URL, REDIS_URL, User, context_of, make_settings, wait_for_cache

UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@pytest.fixture
async def fresh(database_url: str) -> AsyncIterator[tuple[Rampart, httpx.AsyncClient]]:
    """An app of its own, so its metrics count only this test's requests."""
    app = create_app(make_settings(database_url, redis_url=REDIS_URL))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as http:
        yield app, http
    await app.aclose()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text page by (name, sorted labels); fails if the page does not parse."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


# ----- health -----------------------------------------------------------------------------------------


async def test_live(client: httpx.AsyncClient) -> None:
    r = await client.get("/health/live")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert r.json() == {"status": "ok"}


async def test_ready_reports_each_check(client: httpx.AsyncClient) -> None:
    r = await client.get("/health/ready")
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ok", "checks": {"database": "ok", "migrations": "ok"}}


async def test_ready_checks_redis_when_configured(fresh: tuple[Rampart, httpx.AsyncClient]) -> None:
    _, http = fresh
    r = await http.get("/health/ready")
    assert r.status_code == 200, r.text
    assert r.json()["checks"] == {"database": "ok", "migrations": "ok", "redis": "ok"}


async def test_ready_names_redis_when_it_is_down(database_url: str) -> None:
    app = create_app(make_settings(database_url, redis_url="redis://127.0.0.1:1/0"))
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as http:
            r = await http.get("/health/ready")
    finally:
        await app.aclose()
    assert r.status_code == 503
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["status"] == 503
    assert body["request_id"] == r.headers["x-request-id"]
    assert [e["field"] for e in body["errors"]] == ["redis"]
    assert "redis" in body["detail"]
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"] != "ok"
    assert "6379" not in r.text
    assert "127.0.0.1" not in r.text


async def test_ready_names_pending_migrations(alice: User) -> None:
    name = f"rampart_unmigrated_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = ADMIN_URL.rpartition("/")[0] + "/" + name
        app = create_app(make_settings(url))
        try:
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://testserver"
            ) as http:
                r = await http.get("/health/ready")
        finally:
            await app.aclose()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    assert r.status_code == 503
    body = r.json()
    assert [e["field"] for e in body["errors"]] == ["migrations"]
    assert body["checks"]["database"] == "ok"
    assert "pending" in body["checks"]["migrations"]


async def test_ready_runs_checks_concurrently_and_bounds_each() -> None:
    async def ok() -> str | None:
        await asyncio.sleep(0.4)
        return None

    async def hangs() -> str | None:
        await asyncio.sleep(3)
        return None

    async def broken() -> str | None:
        raise ConnectionError("secret internals at 10.0.0.1:5432")

    routes = health_routes({"a": ok, "b": ok, "c": hangs, "d": broken}, timeout=0.5)
    app = Pipeline(
        Router(routes=routes),
        cors_origins=(),
        body_limit=1024,
        timeout=5,
        debug=False,
        access_log_enabled=False,
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as http:
        started = time.perf_counter()
        r = await http.get("/health/ready")
        elapsed = time.perf_counter() - started
    assert elapsed < 1.0  # concurrently about 0.5; one after the other 0.4 + 0.4 + 0.5
    assert r.status_code == 503
    body = r.json()
    assert [e["field"] for e in body["errors"]] == ["c", "d"]
    assert body["checks"]["a"] == body["checks"]["b"] == "ok"
    assert "secret" not in r.text
    assert "10.0.0.1" not in r.text


async def test_health_routes_need_no_auth_and_are_not_rate_limited(database_url: str) -> None:
    app = create_app(make_settings(database_url, rate_limit="1/minute"))
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as http:
            for _ in range(3):
                for path in ("/health/live", "/health/ready", "/metrics"):
                    assert (await http.get(path)).status_code == 200
    finally:
        await app.aclose()


# ----- metrics ----------------------------------------------------------------------------------------


async def test_metrics_label_requests_by_route_template(
    fresh: tuple[Rampart, httpx.AsyncClient], alice: User
) -> None:
    _, http = fresh
    r = await http.post("/api/v1/projects", json={"name": "metrics"}, headers=alice.headers)
    assert r.status_code == 201
    project_id = r.json()["data"]["id"]
    r = await http.post("/api/v1/tasks", json={"project_id": project_id, "title": "t"}, headers=alice.headers)
    task_id = r.json()["data"]["id"]
    for _ in range(2):
        assert (await http.get(f"/api/v1/tasks/{task_id}", headers=alice.headers)).status_code == 200
    assert (await http.get(f"/api/v1/tasks/{uuid.uuid4()}", headers=alice.headers)).status_code == 404
    assert (
        await http.get(f"/api/v1/projects/{project_id}/members", headers=alice.headers)
    ).status_code == 200
    assert (await http.get(f"/no/such/{uuid.uuid4()}")).status_code == 404
    assert (await http.get("/api/v1/projects", headers=alice.headers)).status_code == 200

    r = await http.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert "version=0.0.4" in r.headers["content-type"]
    assert not UUID_RE.search(r.text), "a raw id reached a metric label"
    samples = _samples(r.text)
    total = "rampart_http_requests_total"
    assert _value(samples, total, method="GET", route="/api/v1/tasks/{id}", status="200") == 2
    assert _value(samples, total, method="GET", route="/api/v1/tasks/{id}", status="404") == 1
    assert _value(samples, total, method="POST", route="/api/v1/projects", status="201") == 1
    assert _value(samples, total, method="POST", route="/api/v1/tasks", status="201") == 1
    assert _value(samples, total, method="GET", route="/api/v1/projects", status="200") == 1
    assert (
        _value(samples, total, method="GET", route="/api/v1/projects/{parent_id}/members", status="200") == 1
    )
    assert _value(samples, total, method="GET", route="unmatched", status="404") == 1
    count = "rampart_http_request_duration_seconds_count"
    assert _value(samples, count, method="GET", route="/api/v1/tasks/{id}") == 3
    assert (
        _value(
            samples,
            "rampart_http_request_duration_seconds_bucket",
            method="GET",
            route="/api/v1/tasks/{id}",
            le="+Inf",
        )
        == 3
    )
    assert _value(samples, "rampart_events_total", type="projects.created", outcome="emitted") == 1
    assert _value(samples, "rampart_events_total", type="tasks.created", outcome="emitted") == 1


async def test_metrics_have_pool_and_process_gauges(
    fresh: tuple[Rampart, httpx.AsyncClient], alice: User
) -> None:
    _, http = fresh
    await http.get("/api/v1/projects", headers=alice.headers)
    samples = _samples((await http.get("/metrics")).text)
    for state in ("in_use", "idle", "waiting"):
        assert ("rampart_db_pool_connections", (("state", state),)) in samples
    assert _value(samples, "rampart_db_pool_connections", state="idle") >= 1
    assert _value(samples, "process_resident_memory_bytes") > 0
    assert ("process_cpu_seconds_total", ()) in samples


async def test_pool_gauges_show_connections_in_use_and_callers_waiting(
    database_url: str, alice: User, bob: User
) -> None:
    settings = make_settings(
        database_url, app="tests.apps.slow:declare", db_pool_size=1, db_pool_timeout=3, request_timeout=3
    )
    async with serve(settings) as (app, http):
        slow = asyncio.create_task(
            http.post("/api/v1/pipeline_probes", json={"mode": "sleep", "seconds": 1}, headers=alice.headers)
        )
        for _ in range(100):
            if app.services.db.stats()["in_use"] == 1:
                break
            await asyncio.sleep(0.01)
        waiter = asyncio.create_task(http.get("/api/v1/pipeline_probes", headers=bob.headers))
        await asyncio.sleep(0.1)
        samples = _samples((await http.get("/metrics")).text)
        assert _value(samples, "rampart_db_pool_connections", state="in_use") == 1
        assert _value(samples, "rampart_db_pool_connections", state="waiting") == 1
        assert (await slow).status_code == 201
        assert (await waiter).status_code == 200
        samples = _samples((await http.get("/metrics")).text)
        assert _value(samples, "rampart_db_pool_connections", state="in_use") == 0
        assert _value(samples, "rampart_db_pool_connections", state="waiting") == 0


@pytest.fixture
async def cached(fresh: tuple[Rampart, httpx.AsyncClient]) -> tuple[Rampart, httpx.AsyncClient]:
    """`fresh`, with its row cache on and listening."""
    app, _ = fresh
    await app.startup()
    await wait_for_cache(app)
    return fresh


async def test_cache_misses_read_together_are_counted_as_a_batch(
    cached: tuple[Rampart, httpx.AsyncClient], alice: User
) -> None:
    app, http = cached
    ids = []
    for name in ("a", "b", "c"):
        created = await http.post("/api/v1/projects", json={"name": name}, headers=alice.headers)
        assert created.status_code == 201, created.text
        ids.append(uuid.UUID(created.json()["data"]["id"]))
    manager = app.services.managers["projects"]
    await asyncio.gather(*(manager.get_json(context_of(app, alice), key) for key in ids))
    samples = _samples((await http.get("/metrics")).text)
    if app.services.db.citus:  # each goes alone to its shard's worker (decision 0019)
        assert _value(samples, "rampart_cache_miss_batches_total") == 0
        assert _value(samples, "rampart_cache_miss_reads_total", sent="alone") >= 3
        return
    assert _value(samples, "rampart_cache_miss_batches_total") == 1
    assert _value(samples, "rampart_cache_miss_reads_total", sent="batched") == 3


async def test_row_cache_hits_and_misses_are_counted(
    cached: tuple[Rampart, httpx.AsyncClient], alice: User
) -> None:
    _, http = cached
    created = await http.post("/api/v1/projects", json={"name": "cached"}, headers=alice.headers)
    assert created.status_code == 201, created.text
    url = f"/api/v1/projects/{created.json()['data']['id']}"
    for _ in range(3):
        assert (await http.get(url, headers=alice.headers)).status_code == 200
    samples = _samples((await http.get("/metrics")).text)
    hits = _value(samples, "rampart_cache_requests_total", cache="rows", result="hit")
    misses = _value(samples, "rampart_cache_requests_total", cache="rows", result="miss")
    assert hits >= 2
    assert hits + misses >= 3
