"""The users resource: declared with the same framework as any other, served under /admin/users."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from rampart.access.actor import Actor
from rampart.auth.sessions import announce, revoke_user_sessions
from rampart.resources.fields import Boolean, Choice, Text
from rampart.resources.manager import Context, ResourceManager, Row
from rampart.resources.spec import Binder, Field, Policy, Resource

# Written so that Python (validation) and ECMA-262 (the OpenAPI document) read it alike: their `\s` differ
# on \x1c-\x1f, \x85 (Python only) and \ufeff (ECMA only), so the class names those as well.
EMAIL_PATTERN = r"[^@\s\x00\x1c-\x1f\x85\ufeff]{1,64}@[^@\s\x00\x1c-\x1f\x85\ufeff]{1,255}"


def _self_only(actor: Actor, t: str, bind: Binder) -> str:
    # Without users:manage a user sees only themself (used by /auth/me), never anyone else.
    return f"{t}.id = {bind(actor.user_id)}"


class UserManager(ResourceManager):
    """Disabling a user ends all their sessions at once."""

    async def after_update(self, ctx: Context, conn: asyncpg.Connection, row: Row, before: Row) -> None:
        if row["disabled"] and not before["disabled"]:
            await revoke_user_sessions(conn, _uuid(row["id"]))
        elif row["role"] != before["role"] or row["disabled"] != before["disabled"]:
            await announce(conn, user_id=_uuid(row["id"]))  # a new role applies everywhere at once

    async def after_create(self, ctx: Context, conn: asyncpg.Connection, row: Row) -> None:
        return None


def _uuid(value: Any) -> Any:
    import uuid

    return uuid.UUID(str(value))


def users_resource(role_names: Sequence[str]) -> Resource:
    return Resource(
        name="users",
        path="admin/users",
        owner_field=None,
        permission="users:manage",
        fields={
            "email": Field(
                Text(min_length=3, max_length=320, pattern=EMAIL_PATTERN, strip=True, lower=True),
                required=True,
                immutable=True,
                unique=True,
                filter=("eq", "contains", "in"),
                sort=True,
            ),
            "name": Field(Text(max_length=200, strip=True), default="", filter=("eq", "contains"), sort=True),
            "role": Field(Choice(role_names), default="user", filter=True, sort=True),
            "disabled": Field(Boolean(), default=False, filter=True),
        },
        policy=Policy(
            visible=_self_only,
            writable=None,
            bypass_read="users:manage",
            bypass_write="users:manage",
            create_permission="users:manage",
            write_permission="users:manage",
            depends_on=(),  # a user sees only their own row: nothing else decides it
        ),
        operations=frozenset({"list", "get", "create", "update"}),
        manager=UserManager,
        default_sort="-created_at",
    )
