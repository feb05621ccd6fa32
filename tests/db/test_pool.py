"""The pool: nested transactions are savepoints, a transaction reuses its connection, an unreachable
database is a bounded 503 (never a hang), and stats() tells what the pool holds."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlparse

import asyncpg
import httpx
import pytest
from tests.conftest import TEST_SECRET, make_settings

from rampart.app import create_app
from rampart.auth.tokens import TokenIssuer
from rampart.db.pool import Database
from rampart.errors import RequestTimeout, ServiceUnavailable


class Boom(Exception):
    pass


@pytest.fixture
async def table(db: Database) -> AsyncIterator[str]:
    name = f"pool_test_{uuid.uuid4().hex[:10]}"
    await db.execute(f"CREATE TABLE {name} (v int PRIMARY KEY)")
    yield name
    await db.execute(f"DROP TABLE {name}")


async def values(db: Database, table: str) -> list[int]:
    return [r["v"] for r in await db.fetch(f"SELECT v FROM {table} ORDER BY v")]


async def insert_then_fail(
    db: Database, table: str, value: int, *, expect_connection: asyncpg.Connection | None = None
) -> None:
    async with db.transaction() as conn:
        if expect_connection is not None:
            assert conn is expect_connection  # the same connection: a savepoint, not a second transaction
        await conn.execute(f"INSERT INTO {table} VALUES ({value})")
        raise Boom


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # nothing listens here any more


# ----- transactions ------------------------------------------------------------------------------------
async def test_inner_failure_rolls_back_only_the_inner_block(db: Database, table: str) -> None:
    async with db.transaction() as outer:
        await outer.execute(f"INSERT INTO {table} VALUES (1)")
        with pytest.raises(Boom):
            await insert_then_fail(db, table, 2, expect_connection=outer)
        await outer.execute(f"INSERT INTO {table} VALUES (3)")
    assert await values(db, table) == [1, 3]


async def test_inner_database_error_leaves_the_outer_transaction_usable(db: Database, table: str) -> None:
    async with db.transaction() as conn:
        await conn.execute(f"INSERT INTO {table} VALUES (1)")
        with pytest.raises(asyncpg.UniqueViolationError):
            async with db.transaction() as inner:
                await inner.execute(f"INSERT INTO {table} VALUES (1)")
        # Without a savepoint PostgreSQL would now refuse every statement ("transaction is aborted").
        await conn.execute(f"INSERT INTO {table} VALUES (2)")
    assert await values(db, table) == [1, 2]


async def test_outer_failure_rolls_back_the_committed_inner_block_too(db: Database, table: str) -> None:
    async def inner_commits_then_outer_fails() -> None:
        async with db.transaction():
            async with db.transaction() as inner:
                await inner.execute(f"INSERT INTO {table} VALUES (1)")
            raise Boom

    with pytest.raises(Boom):
        await inner_commits_then_outer_fails()
    assert await values(db, table) == []


async def test_helpers_inside_a_transaction_use_its_connection(db: Database, table: str) -> None:
    async with db.transaction() as conn:
        pid = await conn.fetchval("SELECT pg_backend_pid()")
        assert await db.fetchval("SELECT pg_backend_pid()") == pid
        async with db.connection() as again:
            assert again is conn
        await db.execute(f"INSERT INTO {table} VALUES (7)")
        # The uncommitted row is visible to the helpers: they run inside the same transaction.
        assert [r["v"] for r in await db.fetch(f"SELECT v FROM {table}")] == [7]
    # After the block the connection is back in the pool and helpers no longer see a transaction.
    async with db.connection() as conn2:
        assert not conn2.is_in_transaction()
    assert await values(db, table) == [7]


async def test_a_rolled_back_transaction_resets_the_current_connection(db: Database, table: str) -> None:
    with pytest.raises(Boom):
        await insert_then_fail(db, table, 1)
    # A fresh transaction starts cleanly (no leftover savepoint nesting on the old connection).
    async with db.transaction() as conn:
        assert conn.is_in_transaction()
        await conn.execute(f"INSERT INTO {table} VALUES (2)")
    assert await values(db, table) == [2]


# ----- unavailability ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "statement",
    [
        "SET TRANSACTION READ ONLY; UPDATE {table} SET v = v",  # what a standby or a read-only server says
        "DO $$ BEGIN RAISE EXCEPTION 'could not extend file' USING ERRCODE = 'disk_full'; END $$",
    ],
    ids=["read_only", "disk_full"],
)
async def test_a_database_that_cannot_take_writes_is_service_unavailable(
    db: Database, table: str, statement: str
) -> None:
    # Found by tests/reliability: a read-only or full database answered 500 with a logged traceback.
    with pytest.raises(ServiceUnavailable) as caught:
        async with db.transaction() as conn:
            await conn.execute(statement.format(table=table))
    assert caught.value.status == 503
    assert isinstance(caught.value.__cause__, asyncpg.PostgresError)  # kept for the log, not the client
    assert await values(db, table) == []  # and the pool still works


async def _relay_closing_late(target_port: int, delay: float) -> asyncio.Server:
    """A loopback TCP relay to PostgreSQL that passes data at once but the server's close only after
    `delay`, as a proxy or a slow network may: the client reads a session's last message (the FATAL of a
    terminated backend) well before it sees the connection end."""

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", target_port)

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter, close_after: float) -> None:
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            finally:
                await asyncio.sleep(close_after)
                w.close()

        await asyncio.gather(
            pipe(client_r, server_w, 0), pipe(server_r, client_w, delay), return_exceptions=True
        )

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def test_a_connection_the_server_ended_is_a_503_and_is_not_reused(database_url: str) -> None:
    # Found by tests/reliability (PostgreSQL restarted under load): asyncpg's InternalClientError
    # ("cannot switch to state 11; another operation (2) is in progress") from such a connection was a 500.
    parsed = urlparse(database_url)
    relay = await _relay_closing_late(parsed.port or 5432, delay=1.5)
    port = relay.sockets[0].getsockname()[1]
    database = Database(f"postgresql://{parsed.username}@127.0.0.1:{port}{parsed.path}", max_size=1)
    try:
        pid = await database.fetchval("SELECT pg_backend_pid()")
        admin = await asyncpg.connect(database_url)
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        finally:
            await admin.close()
        await asyncio.sleep(0.3)  # the FATAL has come through the relay; the close has not
        with pytest.raises(ServiceUnavailable) as caught:
            await database.fetchval("SELECT 1")
        assert caught.value.status == 503
        assert await database.fetchval("SELECT pg_backend_pid()") != pid  # a new connection, not the dead one
    finally:
        await database.close()
        relay.close()


async def test_closed_port_is_service_unavailable_quickly() -> None:
    database = Database(f"postgresql://postgres@127.0.0.1:{closed_port()}/nope", connect_timeout=1.0)
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable) as info:
        await asyncio.wait_for(database.fetchval("SELECT 1"), timeout=10)
    assert time.monotonic() - started < 5
    assert info.value.status == 503
    # Still 503 on the next call (the pool is created lazily, the failure is not cached as a crash).
    with pytest.raises(ServiceUnavailable):
        await asyncio.wait_for(database.fetchval("SELECT 1"), timeout=10)
    await database.close()


async def test_a_server_that_refuses_the_connection_is_service_unavailable(database_url: str) -> None:
    # Regression: an error the server answers at connect (here: no such database; also a wrong password,
    # or PgBouncer refusing a startup parameter) was a 500 instead of a 503.
    database = Database(database_url.rpartition("/")[0] + f"/missing_{uuid.uuid4().hex[:8]}")
    with pytest.raises(ServiceUnavailable) as info:
        await database.fetchval("SELECT 1")
    assert isinstance(info.value.__cause__, asyncpg.InvalidCatalogNameError)
    assert info.value.status == 503
    await database.close()


async def test_a_server_that_never_answers_is_service_unavailable_within_the_connect_timeout() -> None:
    stop = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await stop.wait()  # accepts the TCP connection, never speaks the protocol
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    database = Database(f"postgresql://postgres@127.0.0.1:{port}/nope", connect_timeout=0.5)
    try:
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable):
            await asyncio.wait_for(database.fetchval("SELECT 1"), timeout=10)
        assert time.monotonic() - started < 5
    finally:
        await database.close()
        stop.set()
        server.close()
        await server.wait_closed()


async def test_an_exhausted_pool_is_service_unavailable_after_the_acquire_timeout(database_url: str) -> None:
    database = Database(database_url, max_size=1, acquire_timeout=0.3)
    try:
        async with database.connection():
            started = time.monotonic()
            with pytest.raises(ServiceUnavailable):
                await database.fetchval("SELECT 1")  # needs a second connection; none is free
            assert time.monotonic() - started < 3
    finally:
        await database.close()


async def test_a_statement_over_the_timeout_is_cancelled(database_url: str) -> None:
    database = Database(database_url, statement_timeout=0.2)
    try:
        started = time.monotonic()
        with pytest.raises(RequestTimeout) as info:
            await database.fetchval("SELECT pg_sleep(5)")
        assert time.monotonic() - started < 3
        assert info.value.status == 504
    finally:
        await database.close()


async def test_the_api_answers_503_problems_when_the_database_is_down() -> None:
    settings = make_settings(f"postgresql://postgres@127.0.0.1:{closed_port()}/nope", db_connect_timeout=1.0)
    app = create_app(settings)
    token = TokenIssuer(
        secret=TEST_SECRET, issuer=settings.jwt_issuer, audience=settings.jwt_audience, ttl=60
    )
    bearer = token.issue(user_id=uuid.uuid4(), session_id=uuid.uuid4(), role="user")
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=10) as http:
            r = await http.get("/api/v1/tasks", headers={"Authorization": f"Bearer {bearer}"})
            assert r.status_code == 503, r.text
            assert r.headers["content-type"] == "application/problem+json"
            assert "127.0.0.1" not in r.text
            assert "Connect" not in r.text
            r = await http.get("/health/ready")
            assert r.status_code == 503
            assert r.json()["checks"]["database"] != "ok"
            r = await http.get("/health/live")
            assert r.status_code == 200
    finally:
        await app.aclose()


# ----- stats -------------------------------------------------------------------------------------------
async def test_stats_report_size_in_use_idle_and_waiting(database_url: str) -> None:
    database = Database(database_url, max_size=2, acquire_timeout=5.0)
    try:
        assert database.stats() == {"size": 0, "in_use": 0, "idle": 0, "waiting": 0, "max": 2}  # lazy
        async with database.connection():
            inside = database.stats()
            assert inside["in_use"] == 1
            assert inside["size"] == 1
            assert inside["max"] == 2
            async with database.connection() as second:  # not in a transaction: a second connection
                assert not second.is_in_transaction()
                assert database.stats()["in_use"] == 2
                waiter = asyncio.create_task(database.fetchval("SELECT 1"))
                for _ in range(100):
                    await asyncio.sleep(0.01)
                    if database.stats()["waiting"] == 1:
                        break
                assert database.stats()["waiting"] == 1  # the pool is full: the third caller queues
            assert await asyncio.wait_for(waiter, timeout=5) == 1
        after = database.stats()
        assert after["in_use"] == 0
        assert after["waiting"] == 0
        assert after["idle"] == after["size"] == 2
        await database.close()
        assert database.stats()["size"] == 0
    finally:
        await database.close()


async def test_connections_go_to_requests_in_the_order_they_asked(database_url: str) -> None:
    """While requests wait for a connection, a newcomer queues behind them: it never takes a connection
    released for a waiter (which then went back to the end of the line: a long tail of waits)."""
    db = Database(database_url, max_size=2)
    asked: list[int] = []
    got: list[int] = []

    async def request(i: int) -> None:
        asked.append(i)
        async with db.connection() as conn:
            got.append(i)
            await conn.execute("SELECT 1")

    async def hold() -> None:
        async with db.connection() as conn:
            await conn.execute("SELECT pg_sleep(0.05)")

    try:
        await asyncio.gather(hold(), hold())  # both connections open: no connect in the way of the order
        tasks = []
        for i in range(60):  # newcomers keep arriving while earlier ones wait
            tasks.append(asyncio.create_task(request(i)))
            await asyncio.sleep(0)
        await asyncio.gather(*tasks)
    finally:
        await db.close()
    assert got == asked
