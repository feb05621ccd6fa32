"""What the CLI does against the database, using the same managers as the HTTP API."""

from __future__ import annotations

from typing import Any

import click

from rampart.access.system import system_actor
from rampart.app import create_app
from rampart.auth.sessions import open_session
from rampart.config import Settings
from rampart.errors import Conflict, RampartError
from rampart.resources.manager import Context


async def create_user(settings: Settings, *, email: str, name: str, role: str) -> dict[str, Any]:
    app = create_app(settings)
    services = app.services
    actor = system_actor(frozenset({"users:manage", "resources:read_any", "resources:write_any"}))
    try:
        return await services.managers["users"].create(
            Context(actor=actor), {"email": email, "name": name, "role": role}
        )
    except Conflict:
        raise click.ClickException(f"a user with email {email} already exists") from None
    except RampartError as exc:
        details = "; ".join(f"{e.field}: {e.message}" for e in exc.errors) or exc.detail
        raise click.ClickException(details) from None
    finally:
        await app.aclose()


async def issue_token(settings: Settings, *, email: str) -> str:
    app = create_app(settings)
    services = app.services
    try:
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
    finally:
        await app.aclose()
