"""The connection pool of one worker process, and transactions with nested savepoints.

Every failure to reach the database becomes `ServiceUnavailable` (503), never a hang: acquiring a
connection waits at most `acquire_timeout`, and connecting at most `connect_timeout`.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast

import asyncpg

from rampart.db.citus import ShardKeys, citus_enabled
from rampart.errors import RequestTimeout, ServiceUnavailable

log = logging.getLogger("rampart.db")

# Errors that mean "the database is not reachable right now", as opposed to a bad statement.
_UNAVAILABLE = (
    OSError,
    asyncpg.CannotConnectNowError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InterfaceError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.ConnectionFailureError,
)
# Errors that mean "the database cannot take writes right now": a read-only server (a standby, or
# default_transaction_read_only) and exhausted resources (class 53: disk full, out of memory). Reads
# still work; a write is refused whole, so nothing was stored and a retry later is safe.
_CANNOT_WRITE = (asyncpg.ReadOnlySQLTransactionError, asyncpg.InsufficientResourcesError)

_current: contextvars.ContextVar[asyncpg.Connection | None] = contextvars.ContextVar(
    "rampart_db_connection", default=None
)
# Callbacks to run once the outermost transaction of this task commits (dropped on rollback).
_on_commit: contextvars.ContextVar[list[Callable[[], Awaitable[None]]] | None] = contextvars.ContextVar(
    "rampart_db_on_commit", default=None
)


async def _light_reset(conn: asyncpg.Connection) -> None:
    """Reset a connection on release without asyncpg's default round trip (`RESET ALL; UNLISTEN *; ...`).

    Pooled connections never change session state (settings are fixed at connect, listeners use their
    own connections, advisory locks are transaction-scoped): only an interrupted transaction is undone.
    """
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


async def _date_as_text(conn: asyncpg.Connection) -> None:
    """Send and read `date` values as text. asyncpg's binary codec sends `date.max` and `date.min` (the
    valid dates 9999-12-31 and 0001-01-01) as PostgreSQL's `infinity` and `-infinity`, so a task due on
    9999-12-31 came back with no date at all. One query per new connection, nothing per request."""
    await conn.set_type_codec(
        "date", schema="pg_catalog", encoder=_date_text, decoder=_date_value, format="text"
    )


def _date_text(value: dt.date) -> str:
    return value.isoformat()


def _date_value(text: str) -> dt.date | str:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        return text  # `infinity`, `-infinity`: written by other programs; shown as PostgreSQL has them


class Database:
    """An asyncpg pool created lazily, so the service starts (and reports 503) while the database is down."""

    def __init__(
        self,
        dsn: str,
        *,
        max_size: int = 10,
        acquire_timeout: float = 5.0,
        connect_timeout: float = 5.0,
        statement_timeout: float | None = None,
        application_name: str = "rampart",
        transaction_pooling: bool = False,
        session_settings: dict[str, str] | None = None,
    ) -> None:
        """`transaction_pooling`: `dsn` is a transaction-mode pooler (PgBouncer), which may run each
        transaction on another server connection. Then no statement is kept prepared (asyncpg re-parses
        each one, within its transaction) and `statement_timeout` is not sent: PgBouncer refuses startup
        parameters it does not know, so the backstop must come from the role's own settings
        (`ALTER ROLE ... SET statement_timeout`, see docs/guide/database-scaling.md).
        """
        self._dsn = dsn
        self._max_size = max_size
        self._acquire_timeout = acquire_timeout
        self._connect_timeout = connect_timeout
        self._settings = {"application_name": application_name, **(session_settings or {})}
        self._statement_cache_size = 0 if transaction_pooling else 100
        if statement_timeout is not None and not transaction_pooling:
            # A backstop: the request timeout cancels the statement first; this bounds work nobody awaits.
            self._settings["statement_timeout"] = str(int(statement_timeout * 1000))
        if not transaction_pooling:
            # JIT compiles a statement whose *estimated* cost is high, and Rampart's statements are all
            # short: the audit log's, whose skipped branches are costed too, took 150-170 ms to compile
            # and 1 ms to run (decision 0016). Behind a pooler: ALTER ROLE ... SET jit = off.
            self._settings["jit"] = "off"
        self._pool: asyncpg.Pool | None = None
        # Requests take connections in the order they asked: in asyncpg's pool (an asyncio.Queue) a
        # newcomer can take a connection released for a waiter; asyncio.Semaphore queues it behind them.
        self._turns = asyncio.Semaphore(max_size)
        self._waiting = 0
        self._lock = asyncio.Lock()
        # Whether the database is a Citus coordinator: decided once per process (`detect`), before the
        # first request when the server starts, so no request ever asks (decision 0024).
        self._citus: bool | None = None
        self.shard_keys = ShardKeys()

    @property
    def citus(self) -> bool:
        """The database is a Citus coordinator (as last detected; False until then)."""
        return bool(self._citus)

    async def on_citus(self) -> bool:
        """`citus`, detected first if it has not been (a server whose database was down at startup)."""
        if self._citus is None:
            await self.detect()
        return bool(self._citus)

    async def shard_key(self, value: uuid.UUID) -> int:
        """On a Citus cluster, the shard key of the row whose id is `value` (see `ShardKeys`)."""
        known = self.shard_keys.known(value)
        if known is not None:
            return known
        async with self.connection() as conn:
            return await self.shard_keys.lookup(conn, value)

    async def detect(self) -> None:
        """Find out once whether the database is a Citus coordinator (and which ids predate its
        distribution). A database that cannot be reached is asked again at the next `on_citus`."""
        async with self.connection() as conn:
            citus = await citus_enabled(conn)
            self.shard_keys = await ShardKeys.load(conn) if citus else ShardKeys()
        self._citus = citus

    async def _ensure_pool(self) -> asyncpg.Pool:
        if self._pool is not None:
            return self._pool
        async with self._lock:
            if self._pool is None:
                try:
                    self._pool = await asyncpg.create_pool(
                        self._dsn,
                        min_size=0,
                        max_size=self._max_size,
                        timeout=self._connect_timeout,
                        server_settings=self._settings,
                        max_inactive_connection_lifetime=300,
                        reset=_light_reset,
                        statement_cache_size=self._statement_cache_size,
                        init=_date_as_text,
                    )
                except _UNAVAILABLE as exc:
                    raise ServiceUnavailable("The database is unavailable.") from exc
            return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """The connection of the enclosing transaction, or one from the pool for this block."""
        current = _current.get()
        if current is not None:
            yield current
            return
        pool = await self._ensure_pool()
        self._waiting += 1
        try:
            # asyncio.timeout rather than acquire(timeout=): on Python 3.11 asyncpg applies that with
            # asyncio.wait_for, which runs the acquisition in a task of its own, on every request.
            async with asyncio.timeout(self._acquire_timeout):
                await self._turns.acquire()
                try:
                    proxy = await pool.acquire()
                except BaseException:
                    self._turns.release()
                    raise
        except TimeoutError as exc:
            raise ServiceUnavailable("The service is overloaded: no database connection was free.") from exc
        except _UNAVAILABLE as exc:
            raise ServiceUnavailable("The database is unavailable.") from exc
        except asyncpg.PostgresError as exc:
            # Refused while connecting: unknown database or role, wrong password, a pooler refusing a
            # startup parameter. No query has run; to the request it is a database it cannot use.
            log.warning("the database refused a new connection: %s", type(exc).__name__)
            raise ServiceUnavailable("The database is unavailable.") from exc
        finally:
            self._waiting -= 1
        try:
            yield cast(asyncpg.Connection, proxy)
        except _UNAVAILABLE as exc:
            raise ServiceUnavailable("The database is unavailable.") from exc
        except _CANNOT_WRITE as exc:
            raise ServiceUnavailable("The database cannot take writes right now.") from exc
        except asyncpg.InternalClientError as exc:
            # The server ended this connection (a PostgreSQL shutdown, pg_terminate_backend) and its last
            # message arrived before the socket closed: asyncpg's protocol waits for an answer that never
            # comes, and any use of the connection fails. It is dead; drop it rather than pool it again.
            proxy.terminate()
            raise ServiceUnavailable("The database is unavailable.") from exc
        except asyncpg.QueryCanceledError as exc:
            raise RequestTimeout("The database statement took too long and was cancelled.") from exc
        finally:
            try:
                await pool.release(proxy, timeout=self._acquire_timeout)
            except Exception:  # a broken connection is dropped by the pool; nothing to tell the caller
                log.debug("releasing a broken connection", exc_info=True)
            finally:
                self._turns.release()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """`async with db.transaction() as conn:`; nested blocks become savepoints."""
        outermost = _current.get() is None
        async with self.connection() as conn:
            token = _current.set(conn)
            callbacks: list[Callable[[], Awaitable[None]]] = []
            pending_token = _on_commit.set(callbacks) if outermost else None
            try:
                async with conn.transaction():
                    yield conn
            finally:
                _current.reset(token)
                if pending_token is not None:
                    _on_commit.reset(pending_token)
        # Only reached when the transaction committed.
        for callback in callbacks:
            await callback()

    @staticmethod
    def in_transaction() -> bool:
        """True inside `transaction()`: what is read there may not be committed (caches must not keep it)."""
        return _current.get() is not None

    async def after_commit(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Run `callback` once the enclosing outermost transaction commits (at once outside one).

        Subscribers must never hear of a change that a rollback of an outer transaction undid.
        """
        pending = _on_commit.get()
        if pending is None:
            await callback()
        else:
            pending.append(callback)

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async with self.connection() as conn:
            return await conn.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        async with self.connection() as conn:
            return await conn.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        async with self.connection() as conn:
            return await conn.fetchval(sql, *args)

    async def execute(self, sql: str, *args: Any) -> str:
        async with self.connection() as conn:
            return await conn.execute(sql, *args)

    async def executemany(self, sql: str, args: Sequence[Sequence[Any]]) -> None:
        async with self.connection() as conn:
            await conn.executemany(sql, args)

    def stats(self) -> dict[str, int]:
        """Pool size, in use, idle and callers waiting for a connection, for metrics and health."""
        size, idle = (self._pool.get_size(), self._pool.get_idle_size()) if self._pool is not None else (0, 0)
        return dict(size=size, in_use=size - idle, idle=idle, waiting=self._waiting, max=self._max_size)
