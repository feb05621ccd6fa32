"""Request timeouts cancel database work; a lost database gives quick 503s and the app heals by itself.

The outage tests put a small TCP proxy of our own between the app and PostgreSQL, so "the database
went away" is a proxy we stop (refusing new connections and cutting open ones) and start again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from rampart.app import create_app
from tests.apps.slow import serve
from tests.conftest import User, make_settings

SLEEPING = (
    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'rampart'"
    " AND state = 'active' AND query LIKE '%pg_sleep%' AND datname = current_database()"
)


class Proxy:
    """Forwards 127.0.0.1:<port> to PostgreSQL; `stop()` refuses new and cuts open connections."""

    def __init__(self, upstream_port: int = 5432) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.blackhole = False  # accept but never answer: a database that hangs

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]  # the same port again after a restart

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    def dsn(self, database_url: str) -> str:
        dsn = database_url.replace("127.0.0.1:5432", f"127.0.0.1:{self.port}")
        assert dsn != database_url
        return dsn

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        self._writers.add(writer)
        self.connections += 1
        up_writer: asyncio.StreamWriter | None = None
        try:
            if self.blackhole:
                await reader.read()
                return
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            self._writers.add(up_writer)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            for w in (writer, up_writer):
                if w is not None:
                    self._writers.discard(w)
                    w.transport.abort()
            self._tasks.discard(task)  # type: ignore[arg-type]


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.transport.abort()


@pytest.fixture
async def proxy() -> AsyncIterator[Proxy]:
    p = Proxy()
    await p.start()
    yield p
    if p._server is not None:
        await p.stop()


async def _sleeping_statements(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval(SLEEPING))
    finally:
        await conn.close()


# ----- request timeout --------------------------------------------------------------------------------


async def test_slow_request_gets_504_and_its_statement_is_cancelled(database_url: str, alice: User) -> None:
    settings = make_settings(database_url, app="tests.apps.slow:declare", request_timeout=0.5)
    async with serve(settings) as (_, client):
        request = asyncio.create_task(
            client.post(
                "/api/v1/pipeline_probes", json={"mode": "sleep", "seconds": 5}, headers=alice.headers
            )
        )
        started = time.perf_counter()
        # The statement really runs (so its absence afterwards means something).
        for _ in range(40):
            if await _sleeping_statements(database_url):
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("pg_sleep never started")
        r = await request
        elapsed = time.perf_counter() - started
        assert r.status_code == 504, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["code"] == "timeout"
        assert r.json()["request_id"] == r.headers["x-request-id"]
        assert 0.4 < elapsed < 1.5
        # cancelled in the database too, long before pg_sleep(5) would end
        deadline = time.perf_counter() + 1
        while await _sleeping_statements(database_url):
            assert time.perf_counter() < deadline, "pg_sleep still runs after the 504"
            await asyncio.sleep(0.05)
        # the transaction rolled back: the row was never written, and the app keeps working
        r = await client.post("/api/v1/pipeline_probes", json={"mode": "ok"}, headers=alice.headers)
        assert r.status_code == 201, r.text


async def test_timed_out_requests_do_not_leak_pool_connections(database_url: str, alice: User) -> None:
    settings = make_settings(
        database_url, app="tests.apps.slow:declare", request_timeout=0.3, db_pool_size=2, db_pool_timeout=0.5
    )
    async with serve(settings) as (app, client):
        for _ in range(4):  # twice the pool size
            r = await client.post(
                "/api/v1/pipeline_probes", json={"mode": "sleep", "seconds": 3}, headers=alice.headers
            )
            assert r.status_code == 504
        assert app.services.db.stats()["in_use"] == 0
        r = await client.post("/api/v1/pipeline_probes", json={"mode": "ok"}, headers=alice.headers)
        assert r.status_code == 201, r.text


# ----- the database goes away and comes back ----------------------------------------------------------


async def test_database_outage_gives_quick_503s_and_heals(
    database_url: str, alice: User, proxy: Proxy
) -> None:
    settings = make_settings(
        proxy.dsn(database_url), app="tests.apps.slow:declare", db_connect_timeout=1, db_pool_timeout=1
    )
    async with serve(settings) as (_, client):
        assert (await client.get("/api/v1/pipeline_probes", headers=alice.headers)).status_code == 200
        assert (await client.get("/health/ready")).status_code == 200

        await proxy.stop()
        for _ in range(3):  # also after the session cache (1 s at most) has nothing to say
            started = time.perf_counter()
            r = await client.get("/api/v1/pipeline_probes", headers=alice.headers)
            assert time.perf_counter() - started < 1.5
            assert r.status_code == 503, r.text
            assert r.headers["content-type"] == "application/problem+json"
            body = r.json()
            assert body["code"] == "service_unavailable"
            assert str(proxy.port) not in r.text

            started = time.perf_counter()
            ready = await client.get("/health/ready")
            assert time.perf_counter() - started < 1.5
            assert ready.status_code == 503
            assert ready.headers["content-type"] == "application/problem+json"
            assert "database" in ready.json()["detail"]
            assert ready.json()["checks"]["database"] != "ok"
            assert (await client.get("/health/live")).status_code == 200
            await asyncio.sleep(0.4)

        await proxy.start()
        r = await client.get("/api/v1/pipeline_probes", headers=alice.headers)
        assert r.status_code == 200, r.text
        r = await client.post("/api/v1/pipeline_probes", json={"mode": "ok"}, headers=alice.headers)
        assert r.status_code == 201, r.text
        assert (await client.get("/health/ready")).status_code == 200


async def test_app_started_while_the_database_is_down_recovers(
    database_url: str, alice: User, proxy: Proxy
) -> None:
    dsn = proxy.dsn(database_url)
    await proxy.stop()
    app = create_app(make_settings(dsn, db_connect_timeout=1))
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as http:
            r = await http.get("/api/v1/projects", headers=alice.headers)
            assert r.status_code == 503
            assert (await http.get("/health/ready")).status_code == 503
            await proxy.start()
            r = await http.get("/api/v1/projects", headers=alice.headers)
            assert r.status_code == 200, r.text
            assert (await http.get("/health/ready")).status_code == 200
    finally:
        await app.aclose()


async def test_hanging_database_is_bounded_by_the_connect_timeout(
    database_url: str, alice: User, proxy: Proxy
) -> None:
    proxy.blackhole = True
    app = create_app(make_settings(proxy.dsn(database_url), db_connect_timeout=0.3, request_timeout=5))
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as http:
            started = time.perf_counter()
            r = await http.get("/api/v1/projects", headers=alice.headers)
            assert time.perf_counter() - started < 1.5
            assert r.status_code == 503, r.text
            started = time.perf_counter()
            ready = await http.get("/health/ready")
            assert time.perf_counter() - started < 1.5
            assert ready.status_code == 503
            assert "database" in ready.json()["detail"]
    finally:
        await app.aclose()
    assert proxy.connections >= 1  # it really tried


async def test_pool_exhaustion_is_503(database_url: str, alice: User, bob: User) -> None:
    settings = make_settings(
        database_url, app="tests.apps.slow:declare", db_pool_size=1, db_pool_timeout=0.2, request_timeout=3
    )
    async with serve(settings) as (app, client):
        slow = asyncio.create_task(
            client.post(
                "/api/v1/pipeline_probes", json={"mode": "sleep", "seconds": 1}, headers=alice.headers
            )
        )
        for _ in range(100):
            if app.services.db.stats()["in_use"] == 1:
                break
            await asyncio.sleep(0.01)
        started = time.perf_counter()
        r = await client.get("/api/v1/pipeline_probes", headers=bob.headers)
        assert time.perf_counter() - started < 1
        assert r.status_code == 503, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["code"] == "service_unavailable"
        assert (await slow).status_code == 201
        # once the connection is back, the same caller gets through
        assert (await client.get("/api/v1/pipeline_probes", headers=bob.headers)).status_code == 200
