"""Impersonation: an admin opens a short session as a user, bound to the admin's own session.

The session lives at most `ttl` seconds (an hour at most, never extended by refreshing) and only while
the rules of `rampart.access.impersonation` hold: the session that opened it lives, the impersonator is
enabled and may still impersonate, and the target is no administrator. The session check applies them
(`rampart.auth.sessions._LOAD`), so their end reaches every worker and instance within its 1 s bound, at
once where the revocation is announced. Every event written through the session names the admin as
`impersonator_id`.
"""

from __future__ import annotations

import uuid
from typing import Any

from rampart.access.actor import Roles
from rampart.access.impersonation import may_be_impersonated, may_impersonate
from rampart.auth.sessions import IMPERSONATOR_JOIN, TokenPair, announce, live_session, open_session
from rampart.auth.tokens import TokenIssuer
from rampart.db.outbox import write_event
from rampart.db.pool import Database
from rampart.errors import Conflict, Forbidden, NotFound
from rampart.lib.ids import parse_uuid
from rampart.resources.manager import Context, ResourceManager


class ImpersonationRefused(Forbidden):
    code = "impersonation_refused"
    title = "Impersonation refused"


class UserDisabled(Conflict):
    code = "user_disabled"
    title = "User disabled"


# Both users locked in one order (by id), so that a concurrent disable or demotion of either waits for the
# new session to commit (and then ends it), or is seen here and refuses it.
_LOCK_USERS = "SELECT id, role, disabled FROM users WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE"
_OPENED = (
    "SELECT s.id, s.user_id, u.role, s.impersonator_id, s.impersonator_session_id,"
    " iu.role AS impersonator_role, s.user_agent, s.ip, s.created_at, s.last_used_at, s.expires_at"
    f" FROM sessions s JOIN users u ON u.id = s.user_id{IMPERSONATOR_JOIN}"
    " WHERE s.impersonator_id = $1 AND s.revoked_at IS NULL AND s.expires_at > now() AND NOT u.disabled"
    " ORDER BY s.created_at DESC, s.id DESC LIMIT 1000"
)
_REVOKE_OPENED = (
    "UPDATE sessions SET revoked_at = now() WHERE id = $1 AND impersonator_id = $2 AND revoked_at IS NULL"
    " RETURNING id"
)


async def impersonate(
    *,
    users: ResourceManager,
    tokens: TokenIssuer,
    roles: Roles,
    ctx: Context,
    target: str,
    ttl: int,
    user_agent: str | None,
    ip: str | None,
) -> TokenPair:
    """Open a session as user `target` (the path's id) for the caller, and write `users.impersonated`.

    404 when the user does not exist or is not visible; 409 `user_disabled` when disabled; 403
    `impersonation_refused` for an administrator, or when the caller is itself impersonating.
    """
    admin = ctx.actor
    if admin.impersonator_id is not None:
        raise ImpersonationRefused("An impersonation session cannot open another one.")
    target_id = parse_uuid(target)
    if target_id is None:
        raise users.not_found()
    await users.get(ctx, target_id)  # visibility: absent and invisible answer alike
    async with users.db.transaction() as conn:
        rows = {r["id"]: r for r in await conn.fetch(_LOCK_USERS, [target_id, admin.user_id])}
        me, them = rows.get(admin.user_id), rows.get(target_id)
        if me is None or me["disabled"] or not may_impersonate(roles, me["role"]):
            raise Forbidden("Your role lacks the permission for this action.")  # changed since the check
        if them is None:
            raise users.not_found()
        if them["disabled"]:
            raise UserDisabled("The user is disabled: enable them before impersonating them.")
        if not may_be_impersonated(roles, them["role"]):
            raise ImpersonationRefused("An administrator cannot be impersonated.")
        pair = await open_session(
            conn,
            tokens,
            user_id=target_id,
            role=them["role"],
            session_ttl=ttl,
            impersonator_id=admin.user_id,
            impersonator_session_id=admin.session_id,
            user_agent=user_agent,
            ip=ip,
        )
        event = await write_event(
            conn,
            resource="users",
            action="impersonated",
            resource_id=str(target_id),
            actor_id=admin.user_id,
            data={"session_id": str(pair.session_id)},
            request_id=ctx.request_id,
            citus=await users.db.on_citus(),
        )
    if users.replicas is not None:  # the admin's next audit-log read must show the impersonation
        await users.replicas.wrote(admin.user_id)
    await users.bus.emit(event, request_id=ctx.request_id)
    return pair


async def opened_sessions(*, db: Database, roles: Roles, impersonator_id: uuid.UUID) -> list[dict[str, Any]]:
    """The live impersonation sessions `impersonator_id` opened, newest first."""
    rows = await db.fetch(_OPENED, impersonator_id)
    return [
        {
            "id": str(r["id"]),
            "user_id": str(r["user_id"]),
            "opened_by": str(r["impersonator_session_id"]),
            "device": r["user_agent"],
            "ip": r["ip"],
            "created_at": r["created_at"],
            "last_used_at": r["last_used_at"],
            "expires_at": r["expires_at"],
        }
        for r in rows
        if live_session(r, roles) is not None
    ]


async def revoke_opened(*, db: Database, impersonator_id: uuid.UUID, session: str) -> uuid.UUID:
    """End an impersonation session `impersonator_id` opened; NotFound for any other session."""
    session_id = parse_uuid(session)
    if session_id is None:
        raise NotFound("No such impersonation session.")
    async with db.transaction() as conn:
        if not await conn.fetch(_REVOKE_OPENED, session_id, impersonator_id):
            raise NotFound("No such impersonation session.")
        await announce(conn, session_id=session_id)
    return session_id
