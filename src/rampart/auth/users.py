"""The users resource: declared with the same framework as any other, served under /admin/users."""

from __future__ import annotations

import uuid
from typing import Any

from rampart.access.actor import Actor, Roles
from rampart.access.impersonation import MANAGE_USERS, may_be_impersonated, may_impersonate
from rampart.auth.sessions import announce, revoke_impersonations, revoke_user_sessions
from rampart.errors import Conflict
from rampart.resources.context import HookContext
from rampart.resources.fields import Boolean, Choice, Text
from rampart.resources.placement import Placement
from rampart.resources.spec import Binder, Field, Hooks, Policy, Resource

Row = dict[str, Any]

# Written so that Python (validation) and ECMA-262 (the OpenAPI document) read it alike: their `\s` differ
# on \x1c-\x1f, \x85 (Python only) and \ufeff (ECMA only), so the class names those as well.
EMAIL_PATTERN = r"[^@\s\x00\x1c-\x1f\x85\ufeff]{1,64}@[^@\s\x00\x1c-\x1f\x85\ufeff]{1,255}"

# Serializes the changes that take a user out of the admins, so two of them at once cannot each see the
# other admin still enabled and together leave none (one transaction-scoped lock, not a lock per row:
# locking every admin row in turn could deadlock with a demotion that already holds its own row).
_ADMINS_LOCK = "SELECT pg_advisory_xact_lock(hashtext('rampart_last_admin'))"
_ANOTHER_ADMIN = (
    "SELECT EXISTS (SELECT 1 FROM users WHERE role = ANY($1::text[]) AND NOT disabled AND id <> $2)"
)


class LastAdmin(Conflict):
    code = "last_admin"
    title = "Last admin"


def _self_only(actor: Actor, t: str, bind: Binder) -> str:
    # Without users:manage a user sees only themself (used by /auth/me), never anyone else.
    return f"{t}.id = {bind(actor.user_id)}"


def user_hooks(roles: Roles) -> Hooks:
    """Disabling a user ends all their sessions at once, and those they opened as someone else; the last
    enabled admin (a user whose role grants `users:manage`) can be neither demoted nor disabled."""

    def is_admin(role: str, disabled: bool) -> bool:
        return not disabled and MANAGE_USERS in roles.permissions(role)

    async def keep_an_admin(*, ctx: HookContext, current: Row, changes: dict[str, Any]) -> None:
        after = {**current, **changes}
        if not is_admin(current["role"], current["disabled"]) or is_admin(after["role"], after["disabled"]):
            return
        # The row is locked already; the lock below orders this change after any other that removes an
        # admin, and the check then reads what those committed.
        await ctx.conn.execute(_ADMINS_LOCK)
        admin_roles = list(roles.granting(MANAGE_USERS))
        if not await ctx.conn.fetchval(_ANOTHER_ADMIN, admin_roles, _uuid(current["id"])):
            raise LastAdmin(
                "This is the last enabled admin: make another user an admin before demoting or disabling it."
            )

    async def end_sessions(*, ctx: HookContext, row: Row, before: Row) -> None:
        conn, user_id = ctx.conn, _uuid(row["id"])
        if row["disabled"] and not before["disabled"]:
            await revoke_user_sessions(conn, user_id)
        elif row["role"] != before["role"] or row["disabled"] != before["disabled"]:
            await announce(conn, user_id=user_id)  # a new role applies everywhere at once
        if row["role"] != before["role"]:
            # The session check already refuses these; revoking makes it final and the lists exact.
            if not may_impersonate(roles, row["role"]):
                await revoke_impersonations(conn, impersonator_id=user_id)
            if not may_be_impersonated(roles, row["role"]):
                await revoke_impersonations(conn, user_id=user_id)

    return Hooks(before_update=keep_an_admin, after_update=end_sessions)


def _uuid(value: Any) -> uuid.UUID:
    return uuid.UUID(str(value))


def users_resource(roles: Roles) -> Resource:
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
            "role": Field(Choice(roles.names), default="user", filter=True, sort=True),
            "disabled": Field(Boolean(), default=False, filter=True),
        },
        policy=Policy(
            visible=_self_only,
            bypass_read="users:manage",
            bypass_write="users:manage",
            create_permission="users:manage",
            write_permission="users:manage",
            depends_on=(),  # a user sees only their own row: nothing else decides it
        ),
        operations=frozenset({"list", "get", "create", "update"}),
        hooks=user_hooks(roles),
        # On a Citus cluster a copy on every node: read with every session check, referenced by every
        # resource; written rarely (decision 0019).
        placement=Placement.reference(),
    )
