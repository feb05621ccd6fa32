"""Shared fixtures: a fresh PostgreSQL database per test session (real server, migrated with the real
migrations), the app wired to it, an HTTP client, and a factory of users with live sessions.

Tests isolate by creating their own users and objects (ids are unique), so they never depend on order.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg
import httpx
import pytest

from rampart.access.actor import Actor
from rampart.access.system import system_actor
from rampart.app import Rampart, create_app
from rampart.auth.sessions import open_session
from rampart.clitasks import migrate_all
from rampart.config import Settings
from rampart.db.migrate import upgrade
from rampart.resources.manager import Context
from rampart.schema import migrations_dir
from tests import pgservers

if TYPE_CHECKING:
    from tests.reliability.services import PrivateRedis

ADMIN_URL = os.environ.get("RAMPART_TEST_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("RAMPART_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# Strong enough for production mode (about 170 bits by rampart.lib.secret_strength): tests may use it there.
TEST_SECRET = "test-secret-7Qm2VxK9fLp4RzT8wYc3NbH6jD1sGe5uA0oIkXvZqWn"


def _db_url(name: str) -> str:
    base, _, _ = ADMIN_URL.rpartition("/")
    return f"{base}/{name}"


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


# The demo app's own migrations (the default RAMPART_APP's): applied after Rampart's.
DEMO_MIGRATIONS = migrations_dir(Settings(_env_file=None))  # type: ignore[call-arg]


def upgrade_demo(url: str) -> None:
    """Rampart's migrations and the demo app's, without the change triggers that `migrate_all` adds."""
    upgrade(url, app_folders=[DEMO_MIGRATIONS])


@contextmanager
def fresh_database(*, migrated: bool = True) -> Iterator[str]:
    """A new database (migrated as `rampart migrate` does, unless told not to), dropped afterwards."""
    name = f"rampart_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    url = _db_url(name)
    try:
        if migrated:
            migrate_all(make_settings(url))  # migrations, then the change triggers
        yield url
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--citus",
        action="store_true",
        help="run against a private Citus cluster (a coordinator and 2 workers, tests/pgservers.py) instead"
        " of the shared PostgreSQL server: the test database is the coordinator's, migrated (and so placed)"
        " by `rampart migrate`",
    )


def on_citus(config: pytest.Config) -> bool:
    return bool(config.getoption("--citus"))


@pytest.fixture(scope="session")
def database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A new, migrated database for this test session; dropped afterwards. With `--citus`, the database of
    a new Citus cluster's coordinator (2 workers), whose tables `rampart migrate` placed."""
    if on_citus(request.config):
        if (reason := pgservers.citus_missing()) is not None:
            pytest.fail(f"--citus: {reason}")
        with pgservers.citus_cluster(workers=2) as cluster:
            migrate_all(make_settings(cluster.url))
            yield cluster.url
        return
    with fresh_database() as url:
        yield url


@pytest.fixture(scope="session")
def replication() -> Iterator[pgservers.Replication]:
    """A private primary with one streaming standby (tests/pgservers.py), migrated like the test database."""
    if pgservers.postgres_bin_dir() is None:
        pytest.skip("no PostgreSQL server binaries under /usr/lib/postgresql (Debian's postgresql package)")
    with pgservers.replication() as cluster:
        migrate_all(make_settings(cluster.primary_url))
        cluster.add_standby()
        yield cluster


@pytest.fixture(scope="session")
def citus_cluster() -> Iterator[pgservers.CitusCluster]:
    """A private Citus coordinator with 2 workers (tests/pgservers.py), database `rampart` created on each
    with the extension, nothing else in it: tests migrate and place what they need."""
    if (reason := pgservers.citus_missing()) is not None:
        pytest.skip(reason)
    with pgservers.citus_cluster(workers=2) as cluster:
        yield cluster


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A redis-server of this test's own (tests/reliability/services.py), which it may stop, restart or
    freeze (SIGSTOP); left running again, then stopped, whatever the test did."""
    from tests.reliability.services import PrivateRedis, available

    if (reason := available()) is not None:
        pytest.skip(reason)
    server = PrivateRedis()
    server.start()
    try:
        yield server
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.proc.send_signal(signal.SIGCONT)  # in case a test left it stopped
        server.stop()


@pytest.fixture(scope="session")
def bouncer(database_url: str) -> Iterator[pgservers.Bouncer]:
    """PgBouncer in transaction mode (pool of 3 server connections) in front of the test database."""
    if pgservers.PGBOUNCER is None:
        pytest.skip("pgbouncer is not installed (.ci/run installs it)")
    with pgservers.pgbouncer(database_url, pool_size=3) as running:
        yield running


async def wait_for_cache(app: Rampart, timeout: float = 5.0) -> None:
    """Wait until the row cache trusts its feed (the listener connected), so tests exercise it."""
    cache = app.services.cache
    deadline = asyncio.get_running_loop().time() + timeout
    while cache is not None and not cache.enabled:
        assert asyncio.get_running_loop().time() < deadline, "the row cache's listener did not connect"
        await asyncio.sleep(0.02)


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "env": "test",
        "database_url": database_url,
        "jwt_secret": TEST_SECRET,
        "rate_limit": "1000000/minute",
        "rate_limit_auth": "1000000/minute",
        "access_log": False,
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


@pytest.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[Rampart]:
    application = create_app(settings)
    await application.startup()  # as the server's lifespan does: the row cache's listener runs
    await wait_for_cache(application)
    yield application
    await application.aclose()


@pytest.fixture(scope="session")
async def client(app: Rampart) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@dataclass
class User:
    id: str
    email: str
    role: str
    token: str
    session_id: uuid.UUID

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


MakeUser = Callable[..., Awaitable[User]]


def context_of(app: Rampart, user: User) -> Context:
    """A manager call's context for `user`, as the pipeline would make it for their request."""
    permissions = app.services.roles.permissions(user.role)
    return Context(actor=Actor(uuid.UUID(user.id), user.role, user.session_id, permissions))


async def new_user(app: Rampart, *, role: str = "user", name: str = "") -> User:
    services = app.services
    actor = system_actor(frozenset({"users:manage"}))
    email = f"u{uuid.uuid4().hex[:16]}@example.test"
    row = await services.managers["users"].create(
        Context(actor=actor), {"email": email, "name": name or email, "role": role}
    )
    async with services.db.transaction() as conn:
        pair = await open_session(
            conn, services.tokens, user_id=uuid.UUID(row["id"]), role=role, session_ttl=3600
        )
    return User(row["id"], email, role, pair.access_token, pair.session_id)


@pytest.fixture
def make_user(app: Rampart) -> MakeUser:
    async def make(role: str = "user", name: str = "") -> User:
        return await new_user(app, role=role, name=name)

    return make


@pytest.fixture
async def admin(make_user: MakeUser) -> User:
    return await make_user("admin")


@pytest.fixture
async def alice(make_user: MakeUser) -> User:
    return await make_user()


@pytest.fixture
async def bob(make_user: MakeUser) -> User:
    return await make_user()
