"""What the CLI does against the database, using the same managers as the HTTP API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from typing import TYPE_CHECKING, Any

import asyncpg
import click

from rampart.access.system import system_actor
from rampart.app import create_app
from rampart.auth.sessions import open_session
from rampart.config import Settings
from rampart.db.pool import Database
from rampart.errors import Conflict, RampartError
from rampart.resources.manager import Context

if TYPE_CHECKING:
    from pathlib import Path

    from rampart.db.migration_writer import Generated


@asynccontextmanager
async def _database(settings: Settings) -> AsyncIterator[Database]:
    """A plain pool on the database, for what needs no application around it."""
    assert settings.database_url is not None
    pooled = settings.database_pool_mode == "transaction"
    db = Database(settings.database_url.get_secret_value(), transaction_pooling=pooled)
    try:
        yield db
    finally:
        await db.close()


async def create_user(settings: Settings, *, email: str, name: str, role: str) -> dict[str, Any]:
    actor = system_actor(frozenset({"users:manage", "resources:read_any", "resources:write_any"}))
    async with aclosing(create_app(settings)) as app:
        try:
            return await app.services.managers["users"].create(
                Context(actor=actor), {"email": email, "name": name, "role": role}
            )
        except Conflict:
            raise click.ClickException(f"a user with email {email} already exists") from None
        except RampartError as exc:
            details = "; ".join(f"{e.field}: {e.message}" for e in exc.errors) or exc.detail
            raise click.ClickException(details) from None


async def update_user(settings: Settings, *, email: str, changes: dict[str, Any]) -> dict[str, Any]:
    """Change a user found by email (`role`, `disabled`) through the users manager, as an admin's PATCH
    would: the same validation, the same last-admin rule, sessions revoked on disabling, an event."""
    from starlette.datastructures import QueryParams

    ctx = Context(actor=system_actor(frozenset({"users:manage"})))
    async with aclosing(create_app(settings)) as app:
        users = app.services.managers["users"]
        try:
            page = await users.list(ctx, QueryParams({"email": email.strip().lower(), "fields": "id"}))
            if not page.items:
                raise click.ClickException(f"no user with email {email}")
            return await users.update(ctx, page.items[0]["id"], changes)
        except RampartError as exc:
            details = "; ".join(f"{e.field}: {e.message}" for e in exc.errors) or exc.detail
            raise click.ClickException(f"{details} ({exc.code})") from None


async def issue_token(settings: Settings, *, email: str) -> str:
    async with aclosing(create_app(settings)) as app:
        services = app.services
        row = await services.db.fetchrow(
            "SELECT id, role, disabled FROM users WHERE email = $1", email.strip().lower()
        )
        if row is None or row["disabled"]:
            raise click.ClickException(f"no enabled user with email {email}")
        async with services.db.transaction() as conn:
            pair = await open_session(
                conn,
                services.tokens,
                user_id=row["id"],
                role=row["role"],
                session_ttl=settings.session_ttl,
                user_agent="rampart-cli",
            )
        return pair.access_token


async def login_link(settings: Settings, *, email: str) -> str:
    """A one-time URL under RAMPART_PUBLIC_URL that signs a browser into the console as this admin."""
    from rampart.access.actor import Roles
    from rampart.access.impersonation import MANAGE_USERS
    from rampart.auth.login_links import SIGN_IN, create_link

    if not settings.console:
        raise click.ClickException("the console is off (RAMPART_CONSOLE=off)")
    async with _database(settings) as db:
        row = await db.fetchrow(
            "SELECT id, role, disabled FROM users WHERE email = $1", email.strip().lower()
        )
        if row is None or row["disabled"]:
            raise click.ClickException(
                f"no enabled user with email {email} (make one: rampart users create --email {email}"
                " --role admin)"
            )
        if MANAGE_USERS not in Roles(settings.role_permissions).permissions(row["role"]):
            raise click.ClickException(
                f"{email} is not an administrator (role {row['role']}): the console is for administrators"
            )
        token = await create_link(db, purpose=SIGN_IN, user_id=row["id"])
    return _link_url(settings, token)


async def first_admin_link(settings: Settings) -> str | None:
    """On a database with no enabled administrator: a one-time URL that creates the first one and signs
    them into the console. None when an administrator exists (or the console is off)."""
    from rampart.access.actor import Roles
    from rampart.auth.login_links import FIRST_ADMIN, create_link, has_admin

    if not settings.console:
        return None
    async with _database(settings) as db:
        if await has_admin(db, Roles(settings.role_permissions)):
            return None
        token = await create_link(db, purpose=FIRST_ADMIN)
    return _link_url(settings, token)


def _link_url(settings: Settings, token: str) -> str:
    from rampart.console import LINK_PATH

    return f"{settings.public_url.rstrip('/')}{LINK_PATH}?token={token}"


async def rotate_signing_key(settings: Settings, *, alg: str) -> str:
    """A new signing key, announced to every running worker; returns its kid."""
    from rampart.auth.keys import rotate
    from rampart.auth.sessions import announce_keys

    async with aclosing(create_app(settings)) as app, app.services.db.transaction() as conn:
        kid = await rotate(conn, alg=alg)
        await announce_keys(conn)
    return kid


def migrate_all(settings: Settings) -> list[str]:
    """Apply migrations; on a Citus coordinator, place the tables as declared (decision 0019); then
    (re)install the change triggers the row cache relies on. Returns the placement's steps (none on one
    PostgreSQL server, and none once everything is placed)."""
    from rampart.access.actor import Roles
    from rampart.db.citus import place_tables
    from rampart.db.migrate import upgrade
    from rampart.resources.caching import install_triggers
    from rampart.schema import declared_resources, migration_folders, placements

    # The direct URL when there is one: a transaction-mode pooler keeps neither Alembic's prepared
    # statements nor a session across statements.
    assert settings.session_database_url is not None
    dsn = settings.session_database_url.get_secret_value()
    resources = declared_resources(settings, Roles(settings.role_permissions))
    upgrade(dsn, app_folders=migration_folders(settings, resources))
    tables = [r.table for r in resources]

    async def install() -> list[str]:
        conn = await asyncpg.connect(dsn)
        try:
            steps = await place_tables(conn, placements(resources))  # nothing on plain PostgreSQL
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(7272740002)")  # several instances at once
                await install_triggers(conn, tables)
            return steps
        finally:
            await conn.close()

    return asyncio.run(install())


def make_app_migration(
    settings: Settings, *, message: str, allow_destructive: bool, empty: bool
) -> Generated:
    """Bring the database up to date, then write the app's changes as a revision into its folder."""
    from rampart.access.actor import Roles
    from rampart.db.migration_writer import make_migration
    from rampart.schema import build_metadata, declared_resources, migration_folders

    assert settings.session_database_url is not None
    metadata = build_metadata(settings)
    resources = declared_resources(settings, Roles(settings.role_permissions))
    return make_migration(
        settings.session_database_url.get_secret_value(),
        message,
        app_folders=migration_folders(settings, resources),
        metadata=metadata,
        app_tables=metadata.info["app_tables"],
        allow_destructive=allow_destructive,
        empty=empty,
    )


def merge_app_migrations(settings: Settings, *, message: str) -> Path | None:
    """A merge revision of the diverged heads of the app's own migrations; None when there is one head."""
    from rampart.access.actor import Roles
    from rampart.db.migration_writer import merge_heads
    from rampart.schema import declared_resources, migration_folders

    resources = declared_resources(settings, Roles(settings.role_permissions))
    return merge_heads(message, app_folders=migration_folders(settings, resources))


async def event_dead_letters(settings: Settings, *, limit: int) -> list[dict[str, Any]]:
    """The most recent dead deliveries of the event dispatcher."""
    from rampart.events.dispatcher import dead_letters

    async with _database(settings) as db:
        return await dead_letters(db, limit=limit)


async def event_replay(settings: Settings, *, subscriber: str | None, event_id: str | None) -> int:
    """Make dead deliveries pending again; the running dispatchers are woken at once."""
    from rampart.events.dispatcher import replay
    from rampart.lib.ids import parse_uuid

    parsed = parse_uuid(event_id) if event_id is not None else None
    if event_id is not None and parsed is None:
        raise click.ClickException(f"not an event id: {event_id}")
    async with _database(settings) as db:
        return await replay(db, subscriber=subscriber, event_id=parsed)
