"""A pytest plugin for testing an app built on Rampart: load it from your `conftest.py`,

    pytest_plugins = ["rampart.testing"]

and your tests get, against a real PostgreSQL:

- `rampart_database`: a fresh database for the test session, migrated with Rampart's and your app's
  migrations (as `rampart migrate` does), dropped at the end. The server is `RAMPART_TEST_ADMIN_URL`
  (a URL of a database on it that may create databases, e.g. `postgresql://postgres@127.0.0.1/postgres`)
  or, when that is not set, Rampart's embedded PostgreSQL (in `.rampart/test-pgdata`).
- `rampart_settings`: `Settings` for that database (your `.env` and `RAMPART_*` variables apply;
  `RAMPART_APP` names your app), in the `test` environment, rate limits out of the way.
- `rampart_app`: your application, built and started once for the session.
- `client`: an `httpx.AsyncClient` talking to it in process.
- `make_user(role="user")`: a new user with a live session; `user` and `admin` are two ready ones.
  Each is a `TestUser` with `.id`, `.email`, `.role`, `.token` and `.headers` for requests.

Async tests need pytest-asyncio (`asyncio_mode = "auto"`, session-scoped loop), as in a project made by
`rampart init`.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from pydantic import SecretStr

from rampart.access.system import system_actor
from rampart.app import Rampart, create_app
from rampart.auth.sessions import open_session
from rampart.clitasks import migrate_all
from rampart.config import DEFAULT_JWT_SECRET, Settings
from rampart.resources.context import Context
from rampart.schema import app_target

_TEST_SECRET = "rampart-testing-" + "k" * 48  # signs the tokens of a throwaway test database


@dataclass(frozen=True)
class TestUser:
    """A user made for a test, with a live session."""

    __test__ = False  # not a test class, whatever pytest thinks of its name

    id: str
    email: str
    role: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def _admin_url() -> tuple[str, Any]:
    """The URL of a database that may create others, and the embedded server to stop (or None)."""
    configured = os.environ.get("RAMPART_TEST_ADMIN_URL")
    if configured:
        return configured, None
    from rampart.db.embedded import EmbeddedPostgres

    server = EmbeddedPostgres(Path(os.environ.get("RAMPART_TEST_DATA_DIR", ".rampart/test-pgdata")))
    return server.start(), server


def _with_database(url: str, name: str) -> str:
    """`url` pointing at database `name` instead (the path of a URL, or `dbname=` of a socket URL)."""
    base, _, rest = url.partition("?")
    head, _, _ = base.rpartition("/")
    return f"{head}/{name}" + (f"?{rest}" if rest else "")


async def _admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def rampart_database() -> Iterator[str]:
    """A new database for this test session, migrated like `rampart migrate`; dropped afterwards.

    Its URL (and the test settings' signing secret) are also in the environment for the session, as
    `rampart serve` puts them there for its workers: an app built when its module is imported
    (`app = create_app(...)` in the module `RAMPART_APP` names) is then built on the test database too.
    """
    admin_url, server = _admin_url()
    name = f"rampart_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(admin_url, f'CREATE DATABASE "{name}"'))
    url = _with_database(admin_url, name)
    try:
        with pytest.MonkeyPatch.context() as env:
            settings = _settings(url)
            env.setenv("RAMPART_DATABASE_URL", url)
            env.setenv("RAMPART_JWT_SECRET", settings.jwt_secret.get_secret_value())
            env.setenv("RAMPART_ENV", "test")
            migrate_all(settings)
            yield url
    finally:
        asyncio.run(_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        if server is not None:
            server.stop()


def _settings(url: str) -> Settings:
    values: dict[str, Any] = {
        "env": "test",
        "database_url": SecretStr(url),
        "rate_limit": "1000000/minute",
        "rate_limit_auth": "1000000/minute",
        "access_log": False,
        "events_dispatcher": True,
    }
    settings = Settings()
    if settings.jwt_secret.get_secret_value() == DEFAULT_JWT_SECRET:
        values["jwt_secret"] = SecretStr(_TEST_SECRET)
    return settings.model_copy(update=values)


@pytest.fixture(scope="session")
def rampart_settings(rampart_database: str) -> Settings:
    return _settings(rampart_database)


@pytest.fixture(scope="session")
async def rampart_app(rampart_settings: Settings) -> AsyncIterator[Rampart]:
    """The app `RAMPART_APP` names (an application made by create_app, or resources to build one around),
    on the test database, started as the server's lifespan starts it."""
    target = app_target(rampart_settings)
    if isinstance(target, Rampart):
        # Built at import time with its own settings: rebuild it on the test database, same parts.
        app = target.rebuild(rampart_settings)
    else:
        app = create_app(rampart_settings, resources=target)
    await app.startup()
    try:
        yield app
    finally:
        await app.aclose()


@pytest.fixture(scope="session")
async def client(rampart_app: Rampart) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=rampart_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


MakeUser = Callable[..., Awaitable[TestUser]]


@pytest.fixture
def make_user(rampart_app: Rampart) -> MakeUser:
    """`await make_user(role="user", name="")`: a new user (unique email) with a live session."""

    async def make(role: str = "user", name: str = "") -> TestUser:
        services = rampart_app.services
        email = f"u{uuid.uuid4().hex[:16]}@example.test"
        actor = system_actor(frozenset({"users:manage"}))
        row = await services.managers["users"].create(
            Context(actor=actor), {"email": email, "name": name or email, "role": role}
        )
        async with services.db.transaction() as conn:
            pair = await open_session(
                conn, services.tokens, user_id=uuid.UUID(row["id"]), role=role, session_ttl=3600
            )
        return TestUser(row["id"], email, role, pair.access_token)

    return make


@pytest.fixture
async def user(make_user: MakeUser) -> TestUser:
    return await make_user()


@pytest.fixture
async def admin(make_user: MakeUser) -> TestUser:
    return await make_user("admin")
